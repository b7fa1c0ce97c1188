"""A guestbook, laid out as the Flask tutorial lays out its `flaskr` project."""

import os

from flask import Flask


def create_app(test_config=None):
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",
        DATABASE=os.path.join(app.instance_path, "flaskr.sqlite"),
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env()
    else:
        app.config.from_mapping(test_config)

    # As the tutorial does, but strict: a read-only instance folder is an error here.
    os.makedirs(app.instance_path, exist_ok=True)

    from . import db, guestbook

    db.init_app(app)
    app.register_blueprint(guestbook.bp)

    @app.get("/health")
    def health():
        return {"ok": True, "version": os.environ.get("APP_VERSION", "dev")}

    return app
