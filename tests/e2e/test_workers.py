"""Processes and scheduled jobs, released with the app: a real task queue (huey on SQLite, no broker).

`tests/e2e/apps/taskqueue` enqueues a task for each POST /api/add; its Procfile's `worker`
(huey's consumer) runs it and the answer says which release's worker did. Its scheduled
job writes a line for each run into the state directory, shown at /api/nightly.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rehearsal import run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.load import Load
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.e2e

APP = PROJECT_DIR / "tests/e2e/apps/taskqueue"
#: huey's consumer finishes its running tasks on SIGINT.
WORKER = {"worker": {"stopSignal": "SIGINT", "stopTimeoutSeconds": 60}}
TASKQUEUE: dict[str, Any] = {
    "appName": "taskqueue",
    "appDir": "tests/e2e/apps/taskqueue",
    "wsgiTarget": "taskqueue:create_app()",
    "staticDir": "",
    "healthPath": "/health",
    "processes": WORKER,
}
UNITS = "/etc/systemd/system"
RATE = 40


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(TASKQUEUE)


def release(tmp_path: Path, name: str, procfile: str | None = None) -> Path:
    """The taskqueue app as release `name` (each differs from the others), with another Procfile if given."""
    app = tmp_path / name
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "taskqueue" / "release.txt").write_text(name)
    if procfile is not None:
        (app / "Procfile").write_text(procfile)
    return app


def live_version(rehearsal: Rehearsal) -> str:
    return str(json.loads(rehearsal.get("/health")[2])["version"])


def run_task(rehearsal: Rehearsal, a: int, b: int, within: float = 60) -> dict[str, Any]:
    """Enqueue a task over HTTP; what the worker answered, once it has (bounded in time)."""
    status, queued = rehearsal.post_json("/api/add", {"a": a, "b": b})
    assert status == 202, queued
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status, _, body = rehearsal.get(f"/api/result/{queued['id']}")
        except OSError:  # 404 until the worker has run it
            status = 404
        if status == 200:
            return dict(json.loads(body))
        time.sleep(1)
    raise AssertionError(f"no worker ran task {queued['id']} within {within} s")


def unit_state(rehearsal: Rehearsal, unit: str) -> str:
    return str(rehearsal.host().run(f"systemctl is-active {unit}").stdout.strip())


def test_a_request_enqueues_a_task_and_the_worker_process_runs_it(rehearsal: Rehearsal) -> None:
    answer = run_task(rehearsal, 2, 3)

    assert answer["sum"] == 5
    assert answer["worker_version"] == live_version(rehearsal) == rehearsal.release_id
    host = rehearsal.host()
    unit = host.file(f"{UNITS}/taskqueue-process-worker.service").content_string
    assert 'ExecStart=/bin/sh -c "exec huey_consumer taskqueue.tasks.huey --workers 2"' in unit
    assert "KillSignal=SIGINT" in unit and "TimeoutStopSec=60" in unit
    # As the app's user, in the web service's sandbox: it may write its state directory and nothing else.
    shown = host.run("systemctl show -p User -p ProtectSystem -p PrivateUsers taskqueue-process-worker.service")
    assert sorted(shown.stdout.split()) == ["PrivateUsers=yes", "ProtectSystem=strict", "User=taskqueue"]
    assert host.file("/var/lib/taskqueue/huey.sqlite3").user == "taskqueue"


def test_a_scheduled_job_runs_at_its_calendar_time_and_writes_what_it_did(rehearsal: Rehearsal, tmp_path: Path) -> None:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=100)
    schedules = {"nightly": {"command": "python -m taskqueue.nightly", "when": at.strftime("*-*-* %H:%M:%S")}}

    release_id, ran = run.redeploy(
        "dev", {**TASKQUEUE, "appDir": str(release(tmp_path, "two")), "schedules": schedules}
    )

    assert "deploy" in ran
    assert "schedule: nightly next " in ran["deploy"]
    timer = rehearsal.host().file(f"{UNITS}/taskqueue-schedule-nightly.timer").content_string
    assert "Persistent=true" in timer
    runs: list[str] = []
    deadline = time.monotonic() + 240
    while not runs and time.monotonic() < deadline:
        runs = json.loads(rehearsal.get("/api/nightly")[2])["runs"]
        time.sleep(2)
    assert len(runs) == 1, runs
    when, _, version = runs[0].split()
    assert version == release_id
    assert abs(datetime.datetime.fromisoformat(when) - at) < datetime.timedelta(seconds=5)
    assert run_task(rehearsal, 1, 1)["worker_version"] == release_id


def test_a_release_whose_worker_crashes_at_its_start_is_not_switched(rehearsal: Rehearsal, tmp_path: Path) -> None:
    live = live_version(rehearsal)
    crashing = {"worker": {"command": "huey_consumer taskqueue.nowhere.huey"}}
    procfile = 'web: gunicorn "taskqueue:create_app()"\n'
    config = {**TASKQUEUE, "appDir": str(release(tmp_path, "crash", procfile)), "processes": crashing}

    with (
        Load(rehearsal.url + "health", rate=RATE, context=rehearsal.context) as load,
        pytest.raises(DeployError) as failed,
    ):
        run.redeploy("dev", config)

    assert "the process worker (huey_consumer taskqueue.nowhere.huey) exited within 5 s of its start" in str(
        failed.value
    )
    assert "journalctl -u taskqueue-candidate-worker.service" in str(failed.value)
    assert f"{live} is still live, its processes too" in str(failed.value)
    assert load.result.failures == []
    assert live_version(rehearsal) == live
    assert run_task(rehearsal, 4, 5) == {**run_task(rehearsal, 4, 5), "sum": 9, "worker_version": live}


def test_a_rollback_returns_the_web_release_and_its_processes(rehearsal: Rehearsal) -> None:
    live = live_version(rehearsal)

    back = run.rollback("dev", TASKQUEUE)

    assert back == rehearsal.release_id != live
    assert live_version(rehearsal) == back
    assert run_task(rehearsal, 6, 7)["worker_version"] == back
    # The first release had no scheduled job: its timer went with the rollback.
    assert not rehearsal.host().file(f"{UNITS}/taskqueue-schedule-nightly.timer").exists


def test_a_process_left_out_of_the_config_is_stopped_and_its_unit_removed(rehearsal: Rehearsal, tmp_path: Path) -> None:
    procfile = 'web: gunicorn "taskqueue:create_app()"\n'

    run.redeploy("dev", {**TASKQUEUE, "appDir": str(release(tmp_path, "alone", procfile)), "processes": {}})

    host = rehearsal.host()
    assert not host.file(f"{UNITS}/taskqueue-process-worker.service").exists
    assert unit_state(rehearsal, "taskqueue-process-worker.service") in ("inactive", "unknown")
    assert not host.run("pgrep -u taskqueue -f huey_consumer").stdout.strip()
