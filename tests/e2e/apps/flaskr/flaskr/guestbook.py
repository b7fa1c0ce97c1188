from flask import Blueprint, jsonify, render_template, request

from flaskr.db import get_db

bp = Blueprint("guestbook", __name__)


@bp.get("/")
def index():
    entries = get_db().execute("SELECT id, body FROM entry ORDER BY id").fetchall()
    return render_template("index.html", entries=entries)


@bp.get("/api/entries")
def list_entries():
    entries = get_db().execute("SELECT id, body FROM entry ORDER BY id").fetchall()
    return jsonify(entries=[dict(row) for row in entries])


@bp.post("/api/entries")
def add_entry():
    body = (request.get_json(silent=True) or {}).get("body")
    if not isinstance(body, str) or not 0 < len(body) <= 500:
        return jsonify(error="body: expected a string of 1 to 500 characters"), 400
    db = get_db()
    cursor = db.execute("INSERT INTO entry (body) VALUES (?)", (body,))
    db.commit()
    return jsonify(id=cursor.lastrowid, body=body), 201
