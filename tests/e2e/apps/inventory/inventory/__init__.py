"""An app whose schema changes between releases: Flask-SQLAlchemy models, Flask-Migrate migrations.

The database is wherever DATABASE_URL says: the server's SQLite file on one droplet, a
PostgreSQL cluster behind several (SQLAlchemy 2.1 reads its `postgresql://` URL with psycopg 3), and
SQLite in Flask's instance folder on a laptop. `flask --app inventory db upgrade` brings it
to the release's schema.
"""

import os

from flask import Flask, jsonify, request
from flask_migrate import Migrate

from inventory.models import Item, db


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL", "sqlite:///inventory.db")
    db.init_app(app)
    Migrate(app, db)

    @app.get("/health")
    def health():
        return {"ok": True, "version": os.environ.get("APP_VERSION", "dev")}

    @app.get("/api/items")
    def list_items():
        return jsonify(items=[item.as_dict() for item in db.session.scalars(db.select(Item).order_by(Item.id))])

    @app.post("/api/items")
    def add_item():
        name = (request.get_json(silent=True) or {}).get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            return jsonify(error="name: expected a string of 1 to 100 characters"), 400
        item = Item(name=name)
        db.session.add(item)
        db.session.commit()
        return jsonify(item.as_dict()), 201

    return app
