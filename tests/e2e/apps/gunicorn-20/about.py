"""An app that says what runs it: Gunicorn's SERVER_SOFTWARE and the interpreter's version."""

import platform
import sys

from flask import Flask, request

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/about")
def about() -> dict[str, str]:
    return {
        "server": request.environ.get("SERVER_SOFTWARE", ""),
        "python": platform.python_version(),
        "executable": sys.executable,
    }
