"""Two droplets behind a balancer, one PostgreSQL: rolling deploys, a droplet lost, data shared.

The inventory app of `test_release_command.py` (Flask-SQLAlchemy, Flask-Migrate), unchanged:
there its DATABASE_URL is the one droplet's SQLite file; here it is the rehearsal's PostgreSQL,
which only the two machines reach. The balancer is HAProxy with DigitalOcean's health check
(`rehearsal.fleet`). Loads stay at 40 requests a second from one address, under the droplets'
per-address limit (100 a second): they measure failures, not the limiter.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.balancer import BALANCER_CHECK
from rehearsal import fleet, nspawn, run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.load import Load
from tests.e2e.test_lifecycle import leftovers
from tests.e2e.test_release_command import INVENTORY, UPGRADE, release

pytestmark = pytest.mark.e2e

FLEET = {
    **INVENTORY,
    "instances": 2,
    "database": "postgres",
    # The balancer would hold the certificate, and DigitalOcean issues it only for a domain in its DNS.
    "https": False,
}
RATE = 40


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(FLEET)


@pytest.fixture(scope="module")
def machines(rehearsal: Rehearsal) -> list[nspawn.Machine]:
    found = [nspawn.Machine(slot) for slot in nspawn.machines_up()]
    assert [machine.address for machine in found] == ["10.213.7.2", "10.213.7.6"]
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the rehearsal's own addresses
        return json.loads(response.read())


def post_json(url: str, payload: object) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the rehearsal's own addresses
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def direct(machine: nspawn.Machine, path: str) -> str:
    """A URL on one droplet itself, past the balancer (as from inside the VPC)."""
    return f"http://{machine.address}{path}"


def versions(machines: list[nspawn.Machine]) -> list[str]:
    return [str(get_json(direct(machine, "/health"))["version"]) for machine in machines]


def deploy_log(machine: nspawn.Machine) -> str:
    return (machine.slot.directory / "deploy.log").read_text()


class Rotation:
    """Samples the balancer's view of each machine every half second while a block runs (bounded in time)."""

    def __init__(self, max_seconds: float = 600) -> None:
        self.samples: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(max_seconds,), daemon=True)

    def _sample(self, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.samples.append(fleet.balancer_servers())
            self._stop.wait(0.5)

    def __enter__(self) -> Rotation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def seen_down(self, name: str) -> bool:
        return any(sample[name].startswith("DOWN") for sample in self.samples)

    def ever_none_up(self) -> bool:
        return any(not any(status.startswith("UP") for status in sample.values()) for sample in self.samples)


def test_a_write_through_one_droplet_is_read_through_the_other(machines: list[nspawn.Machine]) -> None:
    first, second = machines
    created = post_json(direct(first, "/api/items"), {"name": "bolt"})

    assert get_json(direct(second, "/api/items"))["items"] == [created]
    assert get_json(fleet.BALANCER_URL + "api/items")["items"] == [created]
    # One database, where DATABASE_URL pointed both droplets: the rehearsal's PostgreSQL.
    assert fleet.psql("SELECT name FROM item", "inventory").split() == ["bolt"]


def test_the_first_rollout_migrated_once(machines: list[nspawn.Machine]) -> None:
    first, second = machines

    assert fleet.psql("SELECT version_num FROM alembic_version", "inventory").split() == ["0001"]
    assert f"running the release command: {UPGRADE}" in deploy_log(first)
    assert "release command: left to the droplet that ran it" in deploy_log(second)
    assert "running the release command" not in deploy_log(second)


def test_only_the_droplets_reach_the_database_and_its_address_stays_secret(
    rehearsal: Rehearsal, machines: list[nspawn.Machine]
) -> None:
    # From the host (anyone but the droplets), the database's port does not answer at all.
    with pytest.raises(OSError), socket.create_connection((fleet.DATABASE_ADDRESS, fleet.DATABASE_PORT), timeout=3):
        pass
    for machine in machines:
        reached = machine.guest(
            ["python3", "-c", f"import socket; socket.create_connection(('{fleet.DATABASE_ADDRESS}', 5432), 3)"]
        )
        assert reached.returncode == 0, reached.stderr
    password = fleet.database_password()
    host = rehearsal.host()
    environment = host.file(rehearsal.layout.env_file)
    assert (environment.user, environment.group, environment.mode) == ("root", "inventory", 0o640)
    assert "DATABASE_URL=" in environment.content_string
    assert password not in host.file("/var/lib/cloud/instance/user-data.txt").content_string
    for machine in machines:
        # Read without SSH or sudo, so that no command line carries the password into the journal.
        assert password not in machine.guest(["journalctl", "--no-pager", "--output=cat"]).stdout
        assert password not in deploy_log(machine)


def test_a_rolling_deploy_under_load_fails_no_request(
    rehearsal: Rehearsal, machines: list[nspawn.Machine], tmp_path: Path, figures: list[str]
) -> None:
    first, second = machines
    app = release(tmp_path, "two", "release2")

    started = time.monotonic()
    with Rotation() as rotation, Load(fleet.BALANCER_URL + "api/items", rate=RATE, max_seconds=400) as load:
        release_id, _ = run.redeploy("dev", FLEET | {"appDir": str(app)})
    seconds = time.monotonic() - started

    figures.append(f"rolling deploy of 2 droplets through the balancer: {seconds:.1f} s, {load.result.summary()}")
    assert load.result.failures == []
    assert versions(machines) == [release_id, release_id]
    # Each droplet left the balancer's rotation for its switch, one at a time, and came back.
    assert rotation.seen_down(first.slot.name)
    assert rotation.seen_down(second.slot.name)
    assert not rotation.ever_none_up()
    assert rotation.samples[-1] == {first.slot.name: "UP", second.slot.name: "UP"}
    # The migration ran once, on the first droplet, and the rows are all there.
    assert fleet.psql("SELECT version_num FROM alembic_version", "inventory").split() == ["0002"]
    assert get_json(fleet.BALANCER_URL + "api/items")["items"][0] == {"id": 1, "name": "bolt", "quantity": 0}
    assert "release command: left to the droplet that ran it" in deploy_log(second)


def test_a_release_that_fails_on_the_first_droplet_leaves_every_droplet_as_it_was(
    machines: list[nspawn.Machine], tmp_path: Path, figures: list[str]
) -> None:
    live = versions(machines)
    second_log = deploy_log(machines[1])
    app = release(tmp_path, "unhealthy", "release2")
    package = app / "inventory" / "__init__.py"
    unhealthy = 'return {"ok": False}, 503\n        {"ok": True,'
    package.write_text(package.read_text().replace('return {"ok": True,', unhealthy))

    load = Load(fleet.BALANCER_URL + "api/items", rate=RATE, max_seconds=400)
    with load, pytest.raises(DeployError) as failed:
        run.redeploy("dev", FLEET | {"appDir": str(app)})

    figures.append(f"a release failing its health check on the first droplet: {load.result.summary()}")
    assert "GET /health did not answer 2xx" in str(failed.value)
    assert load.result.failures == []
    assert versions(machines) == live
    # The rollout stopped at the first droplet: the second was never asked.
    assert deploy_log(machines[1]) == second_log


def test_a_stopped_droplet_is_routed_around(machines: list[nspawn.Machine], figures: list[str]) -> None:
    second = machines[1]
    name = second.slot.name

    with Rotation() as rotation, Load(fleet.BALANCER_URL + "api/items", rate=RATE, max_seconds=180) as load:
        time.sleep(3)
        stopped_at = time.monotonic()
        second.power_off(run.progress)
        # Off until the balancer has taken it out (an outage shorter than its checks is not routed
        # around: the requests sent to it meanwhile fail), then a while longer, served by the other alone.
        deadline = time.monotonic() + 60
        while not rotation.seen_down(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)
        second.power_on(run.progress)
        second.wait_for_boot()
        # Back in rotation: the balancer's checks pass again within its healthy threshold.
        while fleet.balancer_servers()[name] != "UP" and time.monotonic() < deadline + 60:
            time.sleep(0.5)
        time.sleep(2)

    failed_at = [float(failure.split("s ", 1)[0]) + load.started for failure in load.result.failures]
    recovered = max(failed_at) - stopped_at if failed_at else 0.0
    figures.append(
        f"one of 2 droplets powered off under {RATE} req/s: {len(load.result.failures)} of {load.result.sent} "
        f"requests failed, the last {recovered:.1f} s after the power-off"
    )
    assert rotation.seen_down(name)
    assert rotation.samples[-1][name] == "UP"
    # Failures end once the balancer has taken the droplet out: within its unhealthy threshold, and a margin.
    assert recovered <= BALANCER_CHECK.out_of_rotation_seconds + 10
    assert all(at >= stopped_at for at in failed_at)


def test_down_leaves_nothing_of_the_machines_the_balancer_or_the_database(rehearsal: Rehearsal) -> None:
    run.down()

    assert leftovers() == []
