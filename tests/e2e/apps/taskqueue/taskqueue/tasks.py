"""The queue and its tasks: huey's SQLite storage in the state directory, shared by web and worker."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from huey import SqliteHuey

STATE = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/taskqueue"))
huey = SqliteHuey("taskqueue", filename=str(STATE / "huey.sqlite3"))
NIGHTLY_LOG = STATE / "nightly.log"


@huey.task()
def add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b, "worker_version": os.environ.get("APP_VERSION", ""), "host": socket.gethostname()}


def nightly_runs() -> list[str]:
    return NIGHTLY_LOG.read_text().splitlines() if NIGHTLY_LOG.exists() else []
