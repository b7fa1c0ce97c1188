"""The app's own pins: its Gunicorn runs it, its .python-version chooses the interpreter.

`tests/e2e/apps/`: `gunicorn-21` pins Gunicorn 21.2.0 in a requirements.txt; `python-313` asks for
Python 3.13 in `.python-version` (the rehearsal's image has it as a system interpreter, which uv
finds). `gunicorn-20` (pyproject.toml) and `python-unobtainable` (.python-version 3.99) are refused
before any machine boots. A pin newer than the releases the stack was written with (`gunicorn~=26.1`)
runs as asked, beside a dependency with no wheel whose source is pure Python.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.appsource import GUNICORN
from rehearsal import nspawn, run
from tests.e2e.conftest import Rehearsal, bring_up, rehearse
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.e2e

ABOUT = {
    "appName": "about",
    "appDir": "tests/e2e/apps/gunicorn-21",
    "wsgiTarget": "about:app",
    "staticDir": "",
    "healthPath": "/health",
}


def about(rehearsal: Rehearsal) -> dict[str, Any]:
    status, _, body = rehearsal.get("/about")
    assert status == 200, body
    return dict(json.loads(body))


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (
            "gunicorn-20",
            "tests/e2e/apps/gunicorn-20/pyproject.toml pins gunicorn==20.1.0, older than gunicorn 21.0.0",
        ),
        ("python-unobtainable", "tests/e2e/apps/python-unobtainable/.python-version asks for Python 3.99"),
    ],
)
def test_a_pin_the_stack_cannot_run_is_refused_before_any_machine_boots(app: str, expected: str) -> None:
    assert not nspawn.machines_up()

    result = rehearse({**ABOUT, "appDir": f"tests/e2e/apps/{app}"}, "up")

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"flask-droplet:appDir = 'tests/e2e/apps/{app}'" in result.stderr
    assert expected in result.stderr
    assert not nspawn.machines_up()


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(ABOUT)


def test_the_apps_own_gunicorn_runs_it(rehearsal: Rehearsal) -> None:
    served = about(rehearsal)

    assert served["server"] == "gunicorn/21.2.0"
    deps = f"{rehearsal.layout.releases}/{rehearsal.release_id}/deps"
    assert rehearsal.host().file(f"{deps}/stack-requirements.txt").content_string == "gunicorn>=21.0.0\n"


def test_python_version_313_runs_the_app_on_313(rehearsal: Rehearsal) -> None:
    release_id, _ = run.redeploy("dev", {**ABOUT, "appDir": "tests/e2e/apps/python-313"})

    deps = f"{rehearsal.layout.releases}/{release_id}/deps"
    assert rehearsal.host().file(f"{deps}/python-request.txt").content_string == "3.13\n"
    served = about(rehearsal)
    assert served["python"].startswith("3.13.")
    assert served["server"] == f"gunicorn/{GUNICORN.version}"
    # uv found the image's own 3.13 (no download): the virtualenv's interpreter is the system's.
    venv_python = rehearsal.host().file(f"{rehearsal.layout.releases}/{release_id}/app/.venv/bin/python")
    assert venv_python.is_symlink
    assert rehearsal.host().check_output(f"readlink -f {venv_python.path}").startswith("/usr/bin/python3.13")


def test_a_current_gunicorn_pin_runs_the_app_and_a_pure_python_source_needs_nothing(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    app = tmp_path / "gunicorn-26"
    shutil.copytree(PROJECT_DIR / "tests/e2e/apps/gunicorn-21", app, ignore=shutil.ignore_patterns("__pycache__"))
    # langdetect 1.0.9 has no wheel at all: its source is pure Python.
    (app / "requirements.txt").write_text("flask==3.1.3\ngunicorn~=26.1\nlangdetect==1.0.9\n")

    run.redeploy("dev", {**ABOUT, "appDir": str(app)})

    assert about(rehearsal)["server"].startswith("gunicorn/26.")
    log = (nspawn.STATE_DIR / "deploy.log").read_text()
    assert "langdetect 1.0.9 has no wheel for CPython 3.1" in log
    assert "it is built from its source, which is pure Python: building it needs nothing more" in log
    assert "compiler" not in log
