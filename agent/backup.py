"""Backups of the app's state directory: a module of the server agent, run on its own by the backup unit.

    state-backup.py take STATE_DIR INCOMING        (as the app's user, in its sandbox)
    state-backup.py keep INCOMING BACKUPS DAYS [offsite]   (as root, right after)

`take` copies STATE_DIR into INCOMING/STAMP while the app runs: each SQLite
database through SQLite's online backup API, which gives a consistent copy of a
live database (a plain copy of its file may catch a write half done), checked
with `PRAGMA integrity_check`; every other file as it is. A database's -wal,
-shm and -journal files are not copied: the backup of the database holds what
they add. `keep` packs each finished copy into BACKUPS/STAMP.tar.gz (root's,
mode 0600) and deletes backups older than DAYS days, always keeping the newest; with `offsite`,
only those whose off-site copy has been checked (the mark STAMP.tar.gz.offsite that
offsite.py writes beside it).
The agent's `restore` (deploy.sh restore) puts one back.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import sqlite3
import sys
import tarfile
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\0"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
PARTIAL = ".partial"
#: Beside a backup once its off-site copy has been checked (offsite.py).
OFFSITE_MARK = ".tar.gz.offsite"


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def copy_database(source: Path, target: Path) -> None:
    """An online backup of a live database, in one step, so that it is one consistent state.

    Opened for writing, as the app opens it: reading a database in WAL mode needs its
    shared-memory file, which a read-only connection cannot make. Nothing is written.
    """
    with (
        contextlib.closing(sqlite3.connect(source, timeout=60)) as live,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        live.backup(copy)
        verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
    if verdict != "ok":
        raise RuntimeError(f"{source}: the copy fails its integrity check: {verdict}")


def take(state_dir: Path, incoming: Path) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime(STAMP_FORMAT)
    target = incoming / (stamp + PARTIAL)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(mode=0o700)
    try:
        databases, files = copy_state(state_dir, target)
    except BaseException:
        # Half a backup is none; it must not take the disk the next one needs.
        shutil.rmtree(target, ignore_errors=True)
        raise
    target.rename(incoming / stamp)
    print(f"backup {stamp}: {databases} SQLite database(s), {files} other file(s) from {state_dir}")


def copy_state(state_dir: Path, target: Path) -> tuple[int, int]:
    """Everything in STATE_DIR into TARGET; the number of databases and of other files copied."""
    databases = files = 0
    for directory, subdirectories, names in os.walk(state_dir):
        here = Path(directory)
        relative = here.relative_to(state_dir)
        if relative == Path("."):
            # The Volume's file system's own directory holds nothing of the app's.
            subdirectories[:] = [name for name in subdirectories if name != "lost+found"]
        (target / relative).mkdir(mode=0o700, exist_ok=True)
        shutil.copymode(here, target / relative)
        sqlite = {name for name in names if not (here / name).is_symlink() and is_sqlite(here / name)}
        skipped = {name + side for name in sqlite for side in SQLITE_SIDE_FILES}
        for name in names:
            source, copy = here / name, target / relative / name
            if name in skipped:
                continue
            if source.is_symlink():
                copy.symlink_to(os.readlink(source))
            elif name in sqlite:
                copy_database(source, copy)
                databases += 1
            elif source.is_file():
                shutil.copy2(source, copy)
                files += 1
        for name in subdirectories:
            if (here / name).is_symlink():
                (target / relative / name).symlink_to(os.readlink(here / name))
    return databases, files


def keep(incoming: Path, backups: Path, days: int, offsite: bool = False) -> None:
    for taken in sorted(incoming.iterdir()):
        if not taken.is_dir():
            taken.unlink()
            continue
        if taken.name.endswith(PARTIAL):
            # A take that stopped half way: nothing to keep.
            shutil.rmtree(taken, ignore_errors=True)
            continue
        archive = backups / f"{taken.name}.tar.gz"
        packing = archive.with_name(archive.name + PARTIAL)
        with tarfile.open(packing, "w:gz") as tar:
            tar.add(taken, arcname=".")
        packing.chmod(0o600)
        packing.rename(archive)
        shutil.rmtree(taken)
        print(f"kept {archive} ({archive.stat().st_size} bytes)")
    taken_at: dict[Path, datetime.datetime] = {}
    for archive in backups.glob("*.tar.gz"):
        try:
            stamp = datetime.datetime.strptime(archive.name.removesuffix(".tar.gz"), STAMP_FORMAT)
        except ValueError:
            continue  # not one of these backups
        taken_at[archive] = stamp.replace(tzinfo=datetime.UTC)
    oldest = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    for archive in sorted(taken_at, key=lambda archive: taken_at[archive])[:-1]:
        if taken_at[archive] < oldest:
            mark = archive.with_name(archive.name.removesuffix(".tar.gz") + OFFSITE_MARK)
            if offsite and not mark.exists():
                print(f"kept {archive}, older than {days} days: its off-site copy has not been checked")
                continue
            archive.unlink()
            mark.unlink(missing_ok=True)
            print(f"deleted {archive}, older than {days} days")


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "take":
        take(Path(argv[1]), Path(argv[2]))
    elif len(argv) in (4, 5) and argv[0] == "keep" and argv[3].isdigit() and argv[4:] in ([], ["offsite"]):
        keep(Path(argv[1]), Path(argv[2]), int(argv[3]), offsite=argv[4:] == ["offsite"])
    else:
        sys.exit("usage: state-backup.py take STATE_DIR INCOMING | keep INCOMING BACKUPS DAYS [offsite]")


if __name__ == "__main__":
    main(sys.argv[1:])
