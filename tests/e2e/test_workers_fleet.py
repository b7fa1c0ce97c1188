"""Processes and scheduled jobs on two droplets: the worker runs on each, the scheduled job once in all.

The taskqueue app of `test_workers.py`, behind the rehearsal's balancer (see `test_fleet.py`),
with no database of its own (`database: none`): each droplet keeps its own huey queue in its
state directory, which is all this module needs of it.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from rehearsal import nspawn, run
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.test_workers import TASKQUEUE

pytestmark = pytest.mark.e2e

FLEET = {**TASKQUEUE, "instances": 2, "database": "none", "https": False}
UNITS = "/etc/systemd/system"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(FLEET)


@pytest.fixture(scope="module")
def machines(rehearsal: Rehearsal) -> list[nspawn.Machine]:
    found = [nspawn.Machine(slot) for slot in nspawn.machines_up()]
    assert len(found) == 2
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the rehearsal's own addresses
        return json.loads(response.read())


def runs(machine: nspawn.Machine) -> list[str]:
    return list(get_json(f"http://{machine.address}/api/nightly")["runs"])


def test_the_worker_runs_on_each_droplet_and_the_job_on_the_first_only(
    rehearsal: Rehearsal, machines: list[nspawn.Machine]
) -> None:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=150)
    schedules = {"nightly": {"command": "python -m taskqueue.nightly", "when": at.strftime("*-*-* %H:%M:%S")}}

    release_id, _ = run.redeploy("dev", {**FLEET, "schedules": schedules})

    first, second = machines
    for machine in machines:
        worker = machine.guest(["systemctl", "is-active", "taskqueue-process-worker.service"])
        assert worker.stdout.strip() == "active", machine.address
    assert first.guest(["test", "-e", f"{UNITS}/taskqueue-schedule-nightly.timer"]).returncode == 0
    assert second.guest(["test", "-e", f"{UNITS}/taskqueue-schedule-nightly.timer"]).returncode != 0
    deadline = time.monotonic() + 300
    while not runs(first) and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(10)  # long enough for a second run, on either droplet, to show
    assert [line.split()[2] for line in runs(first)] == [release_id]
    assert runs(second) == []
