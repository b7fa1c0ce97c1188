"""A second Flask app, shaped differently, deployed through the same path: factory, package, SQLite state.

Then living with it, as docs/operating.md says: its logs, its backups and their
restore, and a deploy onto a disk that is nearly full.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearsal import run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import Rehearsal, bring_up, rehearse

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
    assert body == (rehearsal.settings.app.directory / "notes/assets/notes.css").read_bytes()
    assert headers["Cache-Control"] == "no-cache"


def test_workers_follow_the_setting(rehearsal: Rehearsal) -> None:
    workers = rehearsal.host().process.filter(comm="gunicorn", user="notes")

    assert len(workers) == 1 + 3


def rehearse_notes(*words: str) -> subprocess.CompletedProcess[str]:
    return rehearse(NOTES, *words)


def test_logs_show_a_request_by_one_id_in_nginx_and_in_the_app(rehearsal: Rehearsal) -> None:
    request_id = f"trace-{time.monotonic_ns()}"
    request = urllib.request.Request(  # noqa: S310 - the site's URL
        rehearsal.url + "api/notes",
        data=b"{}",
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        rehearsal.open(request)
    refused.value.close()
    assert refused.value.code == 400

    deadline, lines = time.monotonic() + 15, []
    while time.monotonic() < deadline:  # nginx writes its buffered log every 2 s
        shown = rehearse_notes("logs", "-n", "100")
        assert shown.returncode == 0, shown.stderr
        lines = [line for line in shown.stdout.splitlines() if f"id={request_id}" in line]
        if len(lines) == 2:
            break
        time.sleep(1)

    nginx, app = sorted(lines, key=lambda line: "gunicorn" in line)
    assert '"POST /api/notes HTTP/1.1" 400' in nginx
    assert "gunicorn" in app
    assert app.endswith(
        f"[WARNING] id={request_id} __init__: note refused: text is not a string of 1 to 500 characters"
    )


def test_the_journal_is_kept_on_disk_and_bounded_and_nginx_logs_rotate(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    journald = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in journald
    assert "SystemMaxUse=512M" in journald
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert host.file(f"/var/log/journal/{machine_id}/system.journal").exists

    log = rehearsal.layout.access_log
    assert host.run("logrotate --force /etc/logrotate.d/nginx").rc == 0
    assert host.file(f"{log}.1").exists
    request_id = f"after-rotation-{time.monotonic_ns()}"
    request = urllib.request.Request(rehearsal.url + "health", headers={"X-Request-ID": request_id})  # noqa: S310
    rehearsal.open(request).close()
    lines = rehearsal.access_log(wait_for=request_id)
    assert any(request_id in line for line in lines), "nginx writes to the new file after the rotation"


def test_backups_are_on_a_timer_and_its_service_runs(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    timer = host.service("notes-backup.timer")
    assert timer.is_enabled
    assert timer.is_running
    next_run = host.check_output("systemctl show notes-backup.timer -p NextElapseUSecRealtime --value")
    assert next_run not in ("", "n/a")

    taken = rehearse_notes("backup")

    assert taken.returncode == 0, taken.stderr
    name = taken.stdout.strip().splitlines()[-1]
    assert host.check_output("systemctl show notes-backup.service -p Result --value") == "success"
    archive = host.file(f"/var/backups/notes/{name}.tar.gz")
    assert archive.exists
    assert (archive.user, archive.mode) == ("root", 0o600)


def test_a_backup_taken_while_notes_are_written_restores_them_after_the_data_is_lost(
    rehearsal: Rehearsal, figures: list[str]
) -> None:
    saved: list[str] = []
    stop = threading.Event()

    def write() -> None:  # bounded in count and in time
        deadline = time.monotonic() + 60
        for n in range(3000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            text = f"written-{n}"
            if post_note(rehearsal, text)[0] == 201:
                saved.append(text)
            time.sleep(0.02)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while len(saved) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = list(saved)
        started = time.monotonic()
        taken = rehearse_notes("backup")
        backup_seconds = time.monotonic() - started
        during = len(saved) - len(before)
    finally:
        stop.set()
        writer.join(timeout=70)
    assert taken.returncode == 0, taken.stderr
    name = taken.stdout.strip().splitlines()[-1]

    # The data is lost: the database and its journal files are deleted under the running app.
    rehearsal.machine.guest(["sh", "-c", "rm -f /var/lib/notes/notes.db /var/lib/notes/notes.db-*"])
    lost = json.loads(rehearsal.get("/api/notes")[2])["notes"]
    assert not {note["text"] for note in lost} & set(before)

    started = time.monotonic()
    restored = rehearse_notes("restore", name)
    restore_seconds = time.monotonic() - started

    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip().splitlines()[-1] == name
    check = (
        "import sqlite3; "
        "print(sqlite3.connect('/var/lib/notes/notes.db').execute('PRAGMA integrity_check').fetchone()[0])"
    )
    integrity = rehearse(NOTES, "run", command=("python", "-c", check))
    assert integrity.stdout.strip() == "ok", integrity.stderr
    texts = {note["text"] for note in json.loads(rehearsal.get("/api/notes")[2])["notes"]}
    back = [text for text in saved if text in texts]
    assert set(before) <= texts, "every note saved before the backup began is back"
    assert back == saved[: len(back)], "the notes that are back are the first ones saved, with no gap: one state"
    figures.append(
        f"backup of notes while they were written: {backup_seconds:.1f} s, {during} notes saved meanwhile; "
        f"restore of {len(back)} notes (app stopped, state put back, app started): {restore_seconds:.1f} s"
    )


def test_a_deploy_onto_a_nearly_full_disk_fails_before_unpacking_and_the_site_keeps_serving(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    app = tmp_path / "notes-changed"
    shutil.copytree(rehearsal.settings.app.directory, app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    (app / "notes/__init__.py").write_text((app / "notes/__init__.py").read_text() + "\n# changed\n")
    root = rehearsal.layout.root
    live = json.loads(rehearsal.get("/health")[2])["version"]
    # /srv/notes on a small file system of its own, holding what it held, then filled to 16 MiB from full.
    used_mib = int(rehearsal.host().check_output(f"du -sm {root}").split()[0])
    fill = (
        f"mkdir -p /mnt/small && mount -t tmpfs -o size={used_mib + 48}m small /mnt/small && "
        f"cp -a {root}/. /mnt/small/ && mount --bind /mnt/small {root} && "
        f"fallocate -l $(( $(df -m --output=avail {root} | tail -1) - 16 ))m /mnt/small/filler"
    )
    filled = rehearsal.machine.guest(["sh", "-c", fill])
    try:
        assert filled.returncode == 0, filled.stderr
        with pytest.raises(DeployError) as failed:
            run.redeploy("dev", {**NOTES, "appDir": str(app)})
        releases = rehearsal.host().check_output(f"ls {root}/releases")
        status, _, body = rehearsal.get("/health")
    finally:
        rehearsal.machine.guest(["sh", "-c", f"umount {root}; umount /mnt/small; rmdir /mnt/small"])

    message = str(failed.value)
    assert f"the disk holding {root} has 16 MiB free" in message
    assert "nothing was unpacked and the live release keeps serving" in message
    assert ".staging" not in releases
    assert (status, json.loads(body)["version"]) == (200, live)
