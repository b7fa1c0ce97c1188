"""A second, differently shaped Flask app for the end-to-end tests.

An app factory inside a package (`notes:create_app()`), static files in
`notes/assets`, and a SQLite database written at run time in the directory
systemd gives the service (STATE_DIRECTORY), or Flask's instance folder locally.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, request


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder="assets", static_url_path="/static")
    state_dir = os.environ.get("STATE_DIRECTORY") or app.instance_path
    app.config["DATABASE"] = str(Path(state_dir) / "notes.db")
    app.config.update(config or {})
    Path(app.config["DATABASE"]).parent.mkdir(parents=True, exist_ok=True)

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = sqlite3.connect(app.config["DATABASE"])
            g.db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        return g.db

    @app.teardown_appcontext
    def close_db(_: BaseException | None) -> None:
        connection = g.pop("db", None)
        if connection is not None:
            connection.close()

    @app.get("/health")
    def health() -> Any:
        db().execute("SELECT 1")
        return jsonify(ok=True, version=os.environ.get("APP_VERSION", "dev"))

    @app.get("/api/notes")
    def list_notes() -> Any:
        rows = db().execute("SELECT id, text FROM notes ORDER BY id").fetchall()
        return jsonify(notes=[{"id": i, "text": t} for i, t in rows], secret_set=bool(os.environ.get("NOTES_TOKEN")))

    @app.post("/api/notes")
    def add_note() -> Any:
        text = (request.get_json(silent=True) or {}).get("text")
        if not isinstance(text, str) or not 0 < len(text) <= 500:
            app.logger.warning("note refused: text is not a string of 1 to 500 characters")
            return jsonify(error="text: expected a string of 1 to 500 characters"), 400
        connection = db()
        cursor = connection.execute("INSERT INTO notes (text) VALUES (?)", (text,))
        connection.commit()
        return jsonify(id=cursor.lastrowid, text=text), 201

    @app.get("/")
    def index() -> str:
        count = db().execute("SELECT COUNT(*) FROM notes").fetchone()[0]
        return (
            f'<!doctype html><title>Notes</title><link rel="stylesheet" href="/static/notes.css"><p>{count} notes</p>'
        )

    return app
