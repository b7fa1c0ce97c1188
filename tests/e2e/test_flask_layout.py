"""An app in the Flask tutorial's layout goes live with config keys only.

`tests/e2e/apps/flaskr`: a package with an application factory, pyproject.toml and no
requirements.txt, SQLite in Flask's instance folder, an `init-db` click command. Then the
same app with a uv.lock, installed exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rehearsal import run
from tests.e2e.conftest import Rehearsal, bring_up, rehearse
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.e2e

APPS = PROJECT_DIR / "tests/e2e/apps"
FLASKR = {
    "appName": "flaskr",
    "appDir": "tests/e2e/apps/flaskr",
    "wsgiTarget": "flaskr:create_app()",
    "staticDir": "flaskr/static",
    "healthPath": "/health",
}
STATE = "/var/lib/flaskr"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(FLASKR)


def rehearse_run(*command: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
    """`scripts/rehearse run --set KEY=VALUE ... -- COMMAND`, as the README says it."""
    return rehearse({**FLASKR, **overrides}, "run", command=command)


def add_entry(rehearsal: Rehearsal, body: str) -> int:
    status, entry = rehearsal.post_json("/api/entries", {"body": body})
    assert status == 201
    return int(entry["id"])


def entries(rehearsal: Rehearsal) -> list[str]:
    status, _, body = rehearsal.get("/api/entries")
    assert status == 200, body
    return [entry["body"] for entry in json.loads(body)["entries"]]


def live_version(rehearsal: Rehearsal) -> str:
    return str(json.loads(rehearsal.get("/health")[2])["version"])


def flaskr_copy(tmp_path: Path, name: str, lock: bool = False) -> Path:
    app = tmp_path / name
    shutil.copytree(APPS / "flaskr", app, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    style = app / "flaskr/static/style.css"
    style.write_text(style.read_text() + f"/* {name} */\n")
    if lock:
        shutil.copy(APPS / "flaskr-uv.lock", app / "uv.lock")
    return app


def test_goes_live_from_pyproject_with_config_keys_only(rehearsal: Rehearsal) -> None:
    assert not (rehearsal.settings.app.directory / "requirements.txt").exists()
    assert rehearsal.settings.app.source.dependency_file == "pyproject.toml"

    assert live_version(rehearsal) == rehearsal.release_id
    status, headers, body = rehearsal.get("/static/style.css")
    assert status == 200
    assert body == (APPS / "flaskr/flaskr/static/style.css").read_bytes()
    # nginx's answer ("mtime-size" in hex), not Flask's; the time is its content's, not the archive's 1970.
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', headers["ETag"])
    assert headers["Cache-Control"] == "no-cache"
    assert "1970" not in headers["Last-Modified"]


def test_instance_folder_lives_in_the_state_directory_and_the_release_stays_read_only(
    rehearsal: Rehearsal,
) -> None:
    host = rehearsal.host()
    release = f"{rehearsal.layout.releases}/{rehearsal.release_id}"

    assert host.file(f"{release}/app/instance").linked_to == f"{STATE}/instance"
    instance = host.file(f"{STATE}/instance")
    assert (instance.user, instance.group, instance.mode) == ("flaskr", "flaskr", 0o750)
    assert host.file(STATE).mode == 0o750
    # The app's user can write its instance folder, and nothing of the release.
    assert host.run(f"runuser -u flaskr -- touch {release}/app/flaskr/__init__.py").rc != 0
    assert host.run(f"runuser -u flaskr -- mkdir {release}/app/other").rc != 0
    assert host.file(f"{release}/deps/requirements.txt").content_string.splitlines()[1:] == ["flask>=3.0"]


def test_init_db_runs_through_rehearse_run(rehearsal: Rehearsal) -> None:
    result = rehearse_run("flask", "--app", "flaskr", "init-db")

    assert result.returncode == 0, result.stderr
    assert f"Initialized the database at {rehearsal.layout.releases}/{rehearsal.release_id}" in result.stdout
    database = rehearsal.host().file(f"{STATE}/instance/flaskr.sqlite")
    assert database.exists
    assert (database.user, database.mode) == ("flaskr", 0o640)
    assert entries(rehearsal) == []


def test_one_off_output_and_exit_code_pass_through(rehearsal: Rehearsal) -> None:
    script = "import os, sys; print(os.environ['APP_VERSION']); print('to stderr', file=sys.stderr); sys.exit(3)"

    result = rehearse_run("python", "-c", script)

    assert result.returncode == 3
    assert result.stdout.strip() == rehearsal.release_id
    assert "to stderr" in result.stderr


def test_one_off_runs_as_the_app_in_its_sandbox(rehearsal: Rehearsal) -> None:
    result = rehearse_run("sh", "-c", "id -un; touch /srv/flaskr/current/app/x 2>/dev/null || echo read-only")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["flaskr", "read-only"]


def test_one_off_program_that_does_not_exist(rehearsal: Rehearsal) -> None:
    result = rehearse_run("flsk", "--app", "flaskr", "init-db")

    assert result.returncode == 127
    assert "no program 'flsk'" in result.stderr


def test_data_survives_a_changed_release_and_a_rollback(rehearsal: Rehearsal, tmp_path: Path) -> None:
    add_entry(rehearsal, "before the new release")
    first = live_version(rehearsal)

    release_id, ran = run.redeploy("dev", {**FLASKR, "appDir": str(flaskr_copy(tmp_path, "changed"))})

    assert list(ran) == ["bundle", "deploy"]
    assert live_version(rehearsal) == release_id != first
    assert rehearsal.get("/static/style.css")[2].endswith(b"/* changed */\n")
    assert entries(rehearsal) == ["before the new release"]
    add_entry(rehearsal, "written by the new release")

    assert run.rollback("dev", FLASKR) == first
    assert entries(rehearsal) == ["before the new release", "written by the new release"]
    assert run.rollback("dev", FLASKR, release_id) == release_id


def test_uv_lock_installs_exactly_the_locked_versions(rehearsal: Rehearsal, tmp_path: Path) -> None:
    before = entries(rehearsal)
    app = flaskr_copy(tmp_path, "locked", lock=True)

    release_id, _ = run.redeploy("dev", {**FLASKR, "appDir": str(app)})

    assert live_version(rehearsal) == release_id
    listing = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.name.lower(): d.version for d in m.distributions()}))"
    )
    result = rehearse_run("python", "-c", listing, appDir=str(app))
    assert result.returncode == 0, result.stderr
    installed = json.loads(result.stdout)
    locked = {p["name"]: p["version"] for p in tomllib.loads((app / "uv.lock").read_text())["package"]}
    # Gunicorn (and its one dependency) come from the deploy; the project itself runs from the release;
    # colorama is locked for Windows only.
    assert {name: installed[name] for name in installed if name not in ("gunicorn", "packaging")} == {
        name: version for name, version in locked.items() if name not in ("flaskr", "colorama")
    }
    assert installed["flask"] == "3.0.3"
    assert entries(rehearsal) == before


def test_linked_dirs_live_in_the_state_directory_across_releases(rehearsal: Rehearsal, tmp_path: Path) -> None:
    """A path the user names (uploads) is a link into /var/lib/APP, shared by every release."""
    linked = {**FLASKR, "linkedDirs": ["flaskr/uploads"]}
    first = flaskr_copy(tmp_path, "with-uploads")
    (first / "flaskr/uploads").mkdir()
    (first / "flaskr/uploads/from-the-laptop.txt").write_text("never shipped\n")
    release_id, _ = run.redeploy("dev", {**linked, "appDir": str(first)})

    write = "open('flaskr/uploads/cat.txt', 'w').write('a cat')"
    assert rehearse_run("python", "-c", write, **linked).returncode == 0
    host = rehearsal.host()
    uploads = host.file(f"{rehearsal.layout.releases}/{release_id}/app/flaskr/uploads")
    assert uploads.linked_to == f"{STATE}/flaskr/uploads"
    saved = host.file(f"{STATE}/flaskr/uploads/cat.txt")
    assert (saved.content_string, saved.user) == ("a cat", "flaskr")
    assert not host.file(f"{STATE}/flaskr/uploads/from-the-laptop.txt").exists

    second = flaskr_copy(tmp_path, "with-uploads-again")
    next_release, _ = run.redeploy("dev", {**linked, "appDir": str(second)})

    assert next_release != release_id
    read = "print(open('flaskr/uploads/cat.txt').read())"
    assert rehearse_run("python", "-c", read, **linked).stdout.strip() == "a cat"
