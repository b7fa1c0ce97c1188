"""The state directory's backup script, run for real against SQLite databases that are being written."""

from __future__ import annotations

import contextlib
import datetime
import io
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from agent import backup
from core.render import render_backup_files
from tests.unit.test_render import golden_settings

#: Bounds for the writer that runs while the backup is taken.
WRITER_SECONDS = 20
WRITER_ROWS = 200_000


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "state-backup.py"
    path.write_text(render_backup_files(golden_settings("ip"))["state-backup.py"])
    return path


def run_script(script: Path, *args: str | Path) -> str:
    """The backup unit's command, run here in this process (the agent's module is the script it ships)."""
    assert script.read_text() == Path(backup.__file__).read_text()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        backup.main([str(arg) for arg in args])
    return printed.getvalue()


def ledger(path: Path, journal_mode: str) -> sqlite3.Connection:
    """Each transaction writes a debit and its credit: a consistent copy holds as many of one as of the other."""
    connection = sqlite3.connect(path, timeout=30)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("CREATE TABLE IF NOT EXISTS debit (n INTEGER)")
    connection.execute("CREATE TABLE IF NOT EXISTS credit (n INTEGER)")
    connection.commit()
    return connection


def write_until(stop: threading.Event, path: Path, journal_mode: str, written: list[int]) -> None:
    connection = ledger(path, journal_mode)
    deadline = time.monotonic() + WRITER_SECONDS
    for n in range(WRITER_ROWS):
        if stop.is_set() or time.monotonic() > deadline:
            break
        with connection:
            connection.execute("INSERT INTO debit VALUES (?)", (n,))
            connection.execute("INSERT INTO credit VALUES (?)", (n,))
        written.append(n)
    connection.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_backup_taken_while_the_app_writes_holds_one_consistent_state(
    script: Path, tmp_path: Path, journal_mode: str
) -> None:
    state, incoming, backups = (tmp_path / name for name in ("state", "incoming", "backups"))
    for directory in (state / "instance", state / "uploads", incoming, backups):
        directory.mkdir(parents=True)
    (state / "uploads" / "photo.jpg").write_bytes(b"\xff\xd8 not really a photo")
    (state / "current-upload").symlink_to("uploads/photo.jpg")
    database = state / "instance" / "app.db"
    ledger(database, journal_mode).close()

    stop, written = threading.Event(), []
    writer = threading.Thread(target=write_until, args=(stop, database, journal_mode, written))
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while len(written) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(written)
        took = run_script(script, "take", state, incoming)
        after = len(written)
    finally:
        stop.set()
        writer.join(timeout=WRITER_SECONDS + 10)
    kept = run_script(script, "keep", incoming, backups, "7")

    assert "1 SQLite database(s), 1 other file(s)" in took
    (archive,) = backups.glob("*.tar.gz")
    assert str(archive) in kept
    assert archive.stat().st_mode & 0o777 == 0o600
    assert list(incoming.iterdir()) == []
    restored = tmp_path / "restored"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(restored, filter="tar")
    assert not [name for name in names if name.endswith(("-wal", "-shm", "-journal"))]
    assert (restored / "uploads" / "photo.jpg").read_bytes() == b"\xff\xd8 not really a photo"
    assert (restored / "current-upload").readlink() == Path("uploads/photo.jpg")
    copy = sqlite3.connect(restored / "instance" / "app.db")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    debits = copy.execute("SELECT COUNT(*) FROM debit").fetchone()[0]
    credits = copy.execute("SELECT COUNT(*) FROM credit").fetchone()[0]
    copy.close()
    # Every transaction that had ended before the backup began is in it; none is in it by halves.
    assert debits == credits
    assert before <= debits <= after + 1


def test_keep_deletes_backups_older_than_the_kept_days_but_never_the_newest(script: Path, tmp_path: Path) -> None:
    incoming, backups = tmp_path / "incoming", tmp_path / "backups"
    incoming.mkdir()
    backups.mkdir()
    now = datetime.datetime.now(datetime.UTC)

    def archive(days_ago: float) -> Path:
        path = backups / f"{(now - datetime.timedelta(days=days_ago)):%Y%m%dT%H%M%SZ}.tar.gz"
        path.write_bytes(b"")
        return path

    old, recent = archive(10), archive(3)
    (backups / "someone-elses.tar.gz").write_bytes(b"")
    (incoming / "20261130T020000Z.partial").mkdir()  # a take that stopped half way

    run_script(script, "keep", incoming, backups, "7")

    assert not old.exists()
    assert recent.exists()
    assert (backups / "someone-elses.tar.gz").exists()
    assert list(incoming.iterdir()) == []

    run_script(script, "keep", incoming, backups, "1")

    assert recent.exists(), "the newest backup stays, however old"


def test_a_backup_that_fails_leaves_nothing_behind(script: Path, tmp_path: Path) -> None:
    state, incoming = tmp_path / "state", tmp_path / "incoming"
    state.mkdir()
    incoming.mkdir()
    (state / "broken.db").write_bytes(b"SQLite format 3\0" + b"\xff" * 4096)

    result = subprocess.run(
        [sys.executable, str(script), "take", str(state), str(incoming)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "sqlite3.DatabaseError" in result.stderr
    assert list(incoming.iterdir()) == []
