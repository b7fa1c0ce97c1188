"""A Flask app with a task queue that needs no broker: huey on SQLite, in the app's state directory.

POST /api/add enqueues a task that the `worker` process (`huey_consumer taskqueue.tasks.huey`)
runs; GET /api/result/ID shows what it answered, and which release's worker ran it. The
scheduled job `python -m taskqueue.nightly` writes a line for each run, which GET /api/nightly
shows.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, request

from taskqueue import tasks


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": os.environ.get("APP_VERSION", "")}

    @app.post("/api/add")
    def add() -> tuple[dict[str, Any], int]:
        payload = request.get_json(force=True)
        result = tasks.add(int(payload["a"]), int(payload["b"]))
        return {"id": result.id}, 202

    @app.get("/api/result/<task_id>")
    def result(task_id: str) -> dict[str, Any]:
        answer = tasks.huey.result(task_id, preserve=True)
        if answer is None:
            abort(404)
        return dict(answer)

    @app.get("/api/nightly")
    def nightly() -> dict[str, Any]:
        return {"runs": tasks.nightly_runs()}

    return app
