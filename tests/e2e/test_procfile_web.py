"""A Procfile whose web line migrates, then starts Gunicorn, deployed as written.

The inventory app of `test_release_command.py` with `inventory-overlays/procfile` laid over it:
`web: flask --app inventory db upgrade; gunicorn ... "inventory:create_app()"`, and no wsgiTarget
or releaseCommand in the config. The migration runs once for each release, before it goes live;
Gunicorn's target is the app's. With `inventory-overlays/waitress` the web line starts waitress:
refused, by name, before any machine boots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.appsource import GUNICORN
from rehearsal import nspawn, run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import Rehearsal, bring_up, rehearse
from tests.e2e.load import Load
from tests.e2e.test_release_command import database, items, live_version, release

pytestmark = pytest.mark.e2e

UPGRADE = "flask --app inventory db upgrade"
#: The config of an app that says nothing of how it is served: the Procfile does.
PROCFILE_APP = {"appName": "inventory", "staticDir": "", "healthPath": "/health"}
RAN = f"running the Procfile's web command before Gunicorn, once for this release before it goes live: {UPGRADE}"
RATE = 60


def deploy_log() -> str:
    return (nspawn.STATE_DIR / "deploy.log").read_text()


def test_a_web_line_that_starts_waitress_is_refused_by_name_before_any_machine_boots(tmp_path: Path) -> None:
    assert not nspawn.machines_up()
    app = release(tmp_path, "waitress", "waitress")

    result = rehearse({**PROCFILE_APP, "appDir": str(app)}, "up")

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"flask-droplet:appDir = 'Procfile web: {UPGRADE} && waitress-serve" in result.stderr
    assert "so waitress-serve would not be the one that serves" in result.stderr
    assert "set wsgiTarget to the WSGI callable waitress-serve serves" in result.stderr
    assert not nspawn.machines_up()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    app = release(tmp_path_factory.mktemp("procfile"), "one", "procfile")
    yield from bring_up({**PROCFILE_APP, "appDir": str(app)})


def test_the_web_lines_migration_ran_before_the_first_release_went_live(rehearsal: Rehearsal) -> None:
    assert rehearsal.settings.app.wsgi_target == "inventory:create_app()"
    assert rehearsal.post_json("/api/items", {"name": "bolt"})[0] == 201

    assert items(rehearsal) == [{"id": 1, "name": "bolt"}]
    assert database(rehearsal, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert deploy_log().count(RAN) == 1
    # The app names no Gunicorn: the stack's own serves it.
    gunicorn = f"{rehearsal.layout.current}/app/.venv/bin/gunicorn"
    assert rehearsal.host().check_output(f"{gunicorn} --version") == f"gunicorn (version {GUNICORN.version})"


def test_release_two_migrates_once_with_the_same_release_command(rehearsal: Rehearsal, tmp_path: Path) -> None:
    app = release(tmp_path, "two", "release2", "procfile")

    release_id, _ = run.redeploy("dev", {**PROCFILE_APP, "appDir": str(app), "releaseCommand": UPGRADE})

    log = deploy_log()
    assert live_version(rehearsal) == release_id
    assert items(rehearsal) == [{"id": 1, "name": "bolt", "quantity": 0}]
    assert database(rehearsal, "SELECT version_num FROM alembic_version") == [("0002",)]
    # releaseCommand and the web line name one migration: it ran once.
    assert log.count(UPGRADE) == 1
    assert f"running the release command: {UPGRADE}" in log
    host = rehearsal.host()
    again = host.run(
        f"bash {rehearsal.layout.deploy_script} {release_id} {rehearsal.layout.bundle(release_id)} </dev/null"
    )
    assert again.rc == 0, again.stderr
    assert UPGRADE not in again.stderr


def test_a_failing_migration_on_the_web_line_keeps_the_live_release_under_load(
    rehearsal: Rehearsal, tmp_path: Path, figures: list[str]
) -> None:
    live = live_version(rehearsal)
    before = items(rehearsal)
    app = release(tmp_path, "broken", "release2", "broken-migration", "procfile")

    items_url = rehearsal.url + "api/items"
    with Load(items_url, rate=RATE, context=rehearsal.context) as load, pytest.raises(DeployError) as failed:
        run.redeploy("dev", {**PROCFILE_APP, "appDir": str(app)})

    figures.append(
        f"deploy of a release whose Procfile web migration fails, under {RATE} req/s: {load.result.summary()}"
    )
    assert f"Procfile web: '{UPGRADE}' exited 1" in str(failed.value)
    assert "Cannot add a NOT NULL column" in str(failed.value)
    assert f"{live} is still live" in str(failed.value)
    assert load.result.failures == []
    assert live_version(rehearsal) == live
    assert items(rehearsal) == before
    assert "sku" not in {column[1] for column in database(rehearsal, "PRAGMA table_info(item)")}
