"""A second Flask app, shaped differently, deployed through the same path: factory, package, SQLite state."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Rehearsal, bring_up

pytestmark = pytest.mark.e2e

NOTES_TOKEN = "notes-token-5b1e0c9d"
NOTES = {
    "appName": "notes",
    "appDir": "tests/e2e/apps/notes",
    "wsgiTarget": "notes:create_app()",
    "staticDir": "notes/assets",
    "healthPath": "/health",
    "workers": 3,
    "appEnv": {"NOTES_TOKEN": NOTES_TOKEN},
}


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(NOTES)


def post_note(rehearsal: Rehearsal, text: str) -> tuple[int, dict[str, object]]:
    status, note = rehearsal.post_json("/api/notes", {"text": text})
    return status, dict(note)


def test_factory_app_answers_with_its_health_path(rehearsal: Rehearsal) -> None:
    status, _, body = rehearsal.get("/health")

    assert status == 200
    assert json.loads(body) == {"ok": True, "version": rehearsal.release_id}


def test_notes_persist_in_the_state_directory_across_restarts(rehearsal: Rehearsal) -> None:
    status, created = post_note(rehearsal, "bring an umbrella")
    assert status == 201

    host = rehearsal.host()
    host.run_test("systemctl restart notes.service")
    notes = json.loads(rehearsal.get("/api/notes")[2])["notes"]

    assert {"id": created["id"], "text": "bring an umbrella"} in notes
    database = host.file("/var/lib/notes/notes.db")
    assert database.exists
    assert database.user == "notes"


def test_secret_reaches_the_app_and_no_command_line(rehearsal: Rehearsal) -> None:
    assert json.loads(rehearsal.get("/api/notes")[2])["secret_set"] is True

    host = rehearsal.host()
    cmdlines = host.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert NOTES_TOKEN not in cmdlines
    assert NOTES_TOKEN in host.file("/etc/notes/env").content_string


def test_static_files_come_from_nginx(rehearsal: Rehearsal) -> None:
    status, headers, body = rehearsal.get("/static/notes.css")

    assert status == 200
    assert body == (rehearsal.settings.app_dir / "notes/assets/notes.css").read_bytes()
    assert headers["Cache-Control"] == "no-cache"


def test_workers_follow_the_setting(rehearsal: Rehearsal) -> None:
    workers = rehearsal.host().process.filter(comm="gunicorn", user="notes")

    assert len(workers) == 1 + 3
