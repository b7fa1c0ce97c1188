"""releaseCommand: migrations run once for each new release, before it goes live, and a failed one switches nothing.

`tests/e2e/apps/inventory` uses Flask-SQLAlchemy and Flask-Migrate, with the database its
DATABASE_URL names: on one droplet (database sqlite), the server's SQLite file in the state
directory. `inventory-overlays/` holds the files of its later releases. `test_fleet.py` runs
the same app, unchanged, on two droplets with PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from rehearsal import run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.load import Load
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.e2e

APPS = PROJECT_DIR / "tests/e2e/apps"
UPGRADE = "flask --app inventory db upgrade"
INVENTORY = {
    "appName": "inventory",
    "appDir": "tests/e2e/apps/inventory",
    "wsgiTarget": "inventory:create_app()",
    "staticDir": "",
    "healthPath": "/health",
    "releaseCommand": UPGRADE,
}
#: Where DATABASE_URL points with database sqlite (the default).
DATABASE = "/var/lib/inventory/database.sqlite3"
RATE = 60


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(INVENTORY)


def release(tmp_path: Path, name: str, *overlays: str) -> Path:
    """The inventory app with `overlays` laid over it, in order."""
    app = tmp_path / name
    shutil.copytree(APPS / "inventory", app, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    for overlay in overlays:
        shutil.copytree(APPS / "inventory-overlays" / overlay, app, dirs_exist_ok=True)
    (app / "inventory" / "release.txt").write_text(name)  # every release differs from the others
    return app


def items(rehearsal: Rehearsal) -> list[dict[str, object]]:
    status, _, body = rehearsal.get("/api/items")
    assert status == 200, body
    return list(json.loads(body)["items"])


def live_version(rehearsal: Rehearsal) -> str:
    return str(json.loads(rehearsal.get("/health")[2])["version"])


def database(rehearsal: Rehearsal, query: str) -> list[tuple[object, ...]]:
    """Read a copy of the app's database on the machine (on its Volume), without the app.

    A copy: SQLite resolves the symbolic links in a path itself, and the machine's root as
    the host sees it (/proc/PID/root) is one.
    """
    with tempfile.TemporaryDirectory() as copy_dir:
        copy = Path(copy_dir) / "inventory.db"
        shutil.copyfile(rehearsal.machine.path(DATABASE), copy)
        # closing(): sqlite3's own context manager commits but leaves the file open.
        with closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as connection:
            return connection.execute(query).fetchall()


def test_first_release_runs_its_migration_before_going_live(rehearsal: Rehearsal) -> None:
    assert rehearsal.post_json("/api/items", {"name": "bolt"})[0] == 201

    assert items(rehearsal) == [{"id": 1, "name": "bolt"}]
    assert database(rehearsal, "SELECT version_num FROM alembic_version") == [("0001",)]


def test_release_two_adds_a_column_and_keeps_the_rows(rehearsal: Rehearsal, tmp_path: Path) -> None:
    release_id, ran = run.redeploy("dev", {**INVENTORY, "appDir": str(release(tmp_path, "two", "release2"))})

    assert list(ran) == ["bundle", "deploy"]
    assert live_version(rehearsal) == release_id
    assert items(rehearsal) == [{"id": 1, "name": "bolt", "quantity": 0}]
    assert database(rehearsal, "SELECT version_num FROM alembic_version") == [("0002",)]


def test_release_command_runs_once_for_a_release(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    live = live_version(rehearsal)

    again = host.run(f"bash {rehearsal.layout.deploy_script} {live} {rehearsal.layout.bundle(live)} </dev/null")

    assert again.rc == 0, again.stderr
    assert "already live" in again.stderr
    assert "release command" not in again.stderr


def test_failed_migration_is_never_switched_and_fails_no_request(
    rehearsal: Rehearsal, tmp_path: Path, figures: list[str]
) -> None:
    live = live_version(rehearsal)
    before = items(rehearsal)
    app = release(tmp_path, "broken", "release2", "broken-migration")

    items_url = rehearsal.url + "api/items"
    with Load(items_url, rate=RATE, context=rehearsal.context) as load, pytest.raises(DeployError) as failed:
        run.redeploy("dev", {**INVENTORY, "appDir": str(app)})

    figures.append(f"deploy of a release whose migration fails, under {RATE} req/s: {load.result.summary()}")
    assert f"releaseCommand '{UPGRADE}' exited 1" in str(failed.value)
    assert "Cannot add a NOT NULL column" in str(failed.value)
    assert f"{live} is still live" in str(failed.value)
    assert load.result.failures == []
    assert live_version(rehearsal) == live
    assert items(rehearsal) == before
    assert database(rehearsal, "SELECT version_num FROM alembic_version") == [("0002",)]
    assert "sku" not in {column[1] for column in database(rehearsal, "PRAGMA table_info(item)")}


def test_release_command_whose_program_does_not_exist(rehearsal: Rehearsal, tmp_path: Path) -> None:
    live = live_version(rehearsal)
    app = release(tmp_path, "misspelt", "release2")

    with pytest.raises(DeployError) as failed:
        run.redeploy("dev", {**INVENTORY, "appDir": str(app), "releaseCommand": "flsk db upgrade"})

    assert "no program 'flsk'" in str(failed.value)
    assert "releaseCommand 'flsk db upgrade' exited 127" in str(failed.value)
    assert live_version(rehearsal) == live
