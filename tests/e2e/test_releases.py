"""Releases that never break the site: zero failed requests under load, bad releases never live, rollback, recovery."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearsal import nspawn, run
from rehearsal.deploy import DeployError, SshTarget
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e

RATE = 60  # requests a second, through nginx to Gunicorn, for the whole deploy


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up({})


def app_copy(rehearsal: Rehearsal, tmp_path: Path, name: str, extra: str = "", css: str = "") -> Path:
    app = tmp_path / name
    shutil.copytree(rehearsal.settings.app.directory, app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    (app / "wsgi.py").write_text((app / "wsgi.py").read_text() + extra)
    style = app / "weather/static/style.css"
    style.write_text(style.read_text() + f"\n/* {name} {css} */\n")
    return app


def live_version(rehearsal: Rehearsal) -> str:
    return str(json.loads(rehearsal.get("/healthz")[2])["version"])


def forecast_url(rehearsal: Rehearsal) -> str:
    return rehearsal.url + "api/forecast?days=3"


def test_deploy_under_load_fails_no_request(rehearsal: Rehearsal, tmp_path: Path, figures: list[str]) -> None:
    app = app_copy(rehearsal, tmp_path, "changed")

    with Load(forecast_url(rehearsal), rate=RATE, context=rehearsal.context) as load:
        time.sleep(2)
        release_id, ran = run.redeploy("dev", {"appDir": str(app)})
        time.sleep(2)

    figures.append(f"deploy of a changed app under {RATE} req/s for {load.seconds:.1f} s: {load.result.summary()}")
    assert list(ran) == ["bundle", "deploy"]
    assert load.result.sent >= RATE * 4
    assert load.result.failures == []
    assert live_version(rehearsal) == release_id


def test_release_that_fails_to_import_never_goes_live(rehearsal: Rehearsal, tmp_path: Path, figures: list[str]) -> None:
    live = live_version(rehearsal)
    app = app_copy(rehearsal, tmp_path, "broken-import", extra="\nraise ImportError('this release is broken')\n")

    with (
        Load(forecast_url(rehearsal), rate=RATE, context=rehearsal.context) as load,
        pytest.raises(DeployError) as failed,
    ):
        run.redeploy("dev", {"appDir": str(app)})

    figures.append(f"deploy of a release that fails to import: {load.result.summary()}")
    assert "gunicorn --check-config wsgi:app failed" in str(failed.value)
    assert "this release is broken" in str(failed.value)
    assert load.result.failures == []
    assert live_version(rehearsal) == live


def test_release_whose_health_fails_never_goes_live(rehearsal: Rehearsal, tmp_path: Path, figures: list[str]) -> None:
    live = live_version(rehearsal)
    broken_health = (
        "\n\n@app.before_request\n"
        "def _unhealthy():\n"
        "    from flask import abort, request\n"
        "    if request.path == '/healthz':\n"
        "        abort(500)\n"
    )
    app = app_copy(rehearsal, tmp_path, "unhealthy", extra=broken_health)

    with (
        Load(forecast_url(rehearsal), rate=RATE, context=rehearsal.context) as load,
        pytest.raises(DeployError) as failed,
    ):
        run.redeploy("dev", {"appDir": str(app)})

    figures.append(f"deploy of a release whose /healthz fails: {load.result.summary()}")
    assert "GET /healthz did not answer 2xx" in str(failed.value)
    assert f"{live} is still live" in str(failed.value)
    assert load.result.failures == []
    assert live_version(rehearsal) == live
    assert rehearsal.host().run("systemctl is-active weather-candidate.service").stdout.strip() != "active"


def test_failed_deploy_is_retried_by_the_next_one(rehearsal: Rehearsal, tmp_path: Path) -> None:
    app = app_copy(rehearsal, tmp_path, "fixed")

    release_id, ran = run.redeploy("dev", {"appDir": str(app)})

    assert list(ran) == ["bundle", "deploy"]
    assert live_version(rehearsal) == release_id


def test_rollback_serves_the_previous_release(rehearsal: Rehearsal) -> None:
    live = live_version(rehearsal)
    previous = rehearsal.host().file("/srv/weather/previous").content_string.strip().rsplit("/", 1)[-1]

    rolled_back_to = run.rollback("dev", {})

    assert rolled_back_to == previous != live
    assert live_version(rehearsal) == previous
    assert run.rollback("dev", {}, live) == live
    assert live_version(rehearsal) == live


MASTERS = {"weather.service": "the Gunicorn master", "nginx.service": "nginx's master"}


@pytest.mark.parametrize("unit", MASTERS)
def test_killed_master_is_restarted_by_systemd(rehearsal: Rehearsal, figures: list[str], unit: str) -> None:
    master = MASTERS[unit]
    host = rehearsal.host()
    pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
    killed = time.monotonic()
    host.run_test(f"kill -9 {pid}")

    seconds = None
    while time.monotonic() - killed < 60:
        try:
            new_pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
            if new_pid not in ("0", pid) and rehearsal.get("/healthz")[0] == 200:
                seconds = time.monotonic() - killed
                break
        except OSError:
            pass
        time.sleep(0.1)

    figures.append(f"kill -9 of {master}: healthy again after {seconds} s")
    assert seconds is not None


def test_app_serves_again_after_a_reboot(rehearsal: Rehearsal, figures: list[str]) -> None:
    live = live_version(rehearsal)
    start = time.monotonic()
    rehearsal.machine.reboot(run.progress)

    seconds = None
    while time.monotonic() - start < 120:
        try:
            if rehearsal.get("/healthz")[0] == 200:
                seconds = time.monotonic() - start
                break
        except OSError:
            time.sleep(0.5)

    figures.append(f"reboot: serving again after {seconds} s")
    assert seconds is not None
    assert live_version(rehearsal) == live


def test_two_deploys_at_once_take_turns(rehearsal: Rehearsal, tmp_path: Path) -> None:
    host = rehearsal.host()
    # The live release and the one before it: both healthy, so both deploys must succeed, one after the other.
    releases = [host.file(path).linked_to.rsplit("/", 1)[-1] for path in ["/srv/weather/current"]]
    releases.append(host.file("/srv/weather/previous").content_string.strip().rsplit("/", 1)[-1])
    bundles = [f"{release}.tar.gz" for release in releases]
    target = SshTarget(
        rehearsal.machine.address, "deploy", rehearsal.machine.private_key, rehearsal.machine.known_hosts
    )
    script = rehearsal.layout.deploy_script
    environment = host.file(rehearsal.layout.env_file).content_string
    results: dict[str, int] = {}

    def deploy(bundle: str) -> None:
        release = bundle.removesuffix(".tar.gz")
        command = f"sudo bash {script} {release} /home/deploy/flaskdroplet/bundles/{bundle}"
        results[release] = target.ssh(command, stdin=environment, timeout=300).returncode

    threads = [threading.Thread(target=deploy, args=(bundle,)) for bundle in bundles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert list(results.values()) == [0, 0], results
    assert live_version(rehearsal) in results
    assert host.run("ls -a /srv/weather/releases | grep -c staging").stdout.strip() == "0"
    assert host.service("weather.service").is_running


def test_nginx_and_the_app_restarted_during_the_candidate_check(rehearsal: Rehearsal, tmp_path: Path) -> None:
    """What an unattended upgrade could do on a droplet: the deploy succeeds or says why, and the site serves."""
    live = live_version(rehearsal)
    app = app_copy(rehearsal, tmp_path, "restarted-under-it")
    outcome: dict[str, object] = {}

    def deploy() -> None:
        try:
            outcome["release"] = run.redeploy("dev", {"appDir": str(app)})[0]
        except DeployError as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=deploy)
    thread.start()
    deadline = time.monotonic() + 120
    machine = rehearsal.machine
    while time.monotonic() < deadline and thread.is_alive():
        if machine.guest(["systemctl", "is-active", "weather-candidate.service"]).stdout.strip() == "active":
            machine.guest(["systemctl", "restart", "nginx.service", "weather.service"])
            outcome["restarted"] = True
            break
        time.sleep(0.1)
    thread.join(timeout=300)

    assert outcome.get("restarted"), "the candidate never ran"
    if "error" in outcome:
        assert "FAILED: release" in str(outcome["error"]), outcome["error"]
        assert live_version(rehearsal) == live
    else:
        assert live_version(rehearsal) == outcome["release"]
    assert rehearsal.get("/healthz")[0] == 200


def test_deploy_waits_for_apt_to_finish(rehearsal: Rehearsal, tmp_path: Path, figures: list[str]) -> None:
    """apt-daily-upgrade may hold dpkg's lock when a deploy starts: the deploy installs only after it."""
    hold_seconds = 8
    holder = (
        "import fcntl, time; lock = open('/var/lib/dpkg/lock-frontend', 'a'); "
        f"fcntl.lockf(lock, fcntl.LOCK_EX); time.sleep({hold_seconds})"
    )
    rehearsal.host().run_test(f"systemd-run --unit=holds-dpkg-lock --collect python3 -c {shlex.quote(holder)}")
    app = app_copy(rehearsal, tmp_path, "new-dependencies")
    requirements = app / "requirements.txt"
    requirements.write_text(requirements.read_text() + "# a new set of dependencies, so a new virtualenv\n")

    rehearsal.machine.reset_memory_peak()
    started = time.monotonic()
    release_id, _ = run.redeploy("dev", {"appDir": str(app)})
    seconds = time.monotonic() - started
    peak = rehearsal.machine.memory_peak()

    log = (nspawn.STATE_DIR / "deploy.log").read_text()
    figures.append(f"deploy while apt held its lock for {hold_seconds} s: live after {seconds:.1f} s")
    figures.append(
        f"peak memory of the whole {rehearsal.settings.server.size} machine during a deploy with a new virtualenv "
        f"(pip, the live and the candidate Gunicorn): {peak / 1024**2:.0f} MiB"
        if peak
        else "peak memory of a deploy: this host gives the machine no memory cgroup"
    )
    assert "waiting for apt/dpkg to finish" in log
    assert "apt/dpkg finished after" in log
    assert log.index("apt/dpkg finished after") < log.index("installing requirements")
    assert live_version(rehearsal) == release_id


def test_the_machine_has_its_droplets_one_cpu_and_nothing_on_it_runs_on_another(rehearsal: Rehearsal) -> None:
    """s-1vcpu-1gb has 1 vCPU: what counts the online CPUs counts one (nginx's `worker_processes auto` starts one
    worker), and no thread of the machine runs on another host CPU (nginx's `worker_cpu_affinity auto` would
    otherwise bind a second worker to the next one)."""
    host = rehearsal.host()
    assert host.check_output("getconf _NPROCESSORS_ONLN") == "1"
    assert [p.args for p in host.process.filter(comm="nginx") if "worker" in p.args] == ["nginx: worker process"]
    pids = rehearsal.machine.host_pids()
    if not pids:
        pytest.skip("this host gives the machine no cgroup to find its processes by")
    allowed = rehearsal.machine.host_cpus()
    assert len(allowed) == 1
    outside = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):  # a thread that ended since
                cpus = os.sched_getaffinity(int(task.name))
                if not cpus <= allowed:
                    outside[int(task.name)] = (Path(task, "comm").read_text().strip(), cpus)
    assert not outside, f"threads of the machine allowed beyond host CPU {allowed}: {outside}"


def test_deploy_that_would_not_fit_in_memory_fails_before_any_change(rehearsal: Rehearsal, tmp_path: Path) -> None:
    """s-1vcpu-1gb has 1 GiB and no swap: 32 workers of this app do not fit, and the deploy says so."""
    live = live_version(rehearsal)
    unit = rehearsal.host().file("/etc/systemd/system/weather.service").content_string
    app = app_copy(rehearsal, tmp_path, "too-many-workers")

    with pytest.raises(DeployError) as failed:
        run.redeploy("dev", {"appDir": str(app), "workers": 32})

    assert "32 workers need about" in str(failed.value)
    assert "Set workers lower or choose a larger size; the live release keeps serving" in str(failed.value)
    assert live_version(rehearsal) == live
    assert rehearsal.host().file("/etc/systemd/system/weather.service").content_string == unit


def test_a_key_added_logs_in_after_a_redeploy_and_a_removed_one_no_longer_does(
    rehearsal: Rehearsal, tmp_path: Path, figures: list[str]
) -> None:
    admin = tmp_path / "admin"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@laptop", "-f", str(admin)], check=True, timeout=30
    )
    machine_key = run.ssh_target(rehearsal.machine)
    as_admin = dataclasses.replace(machine_key, private_key=admin)

    def logs_in(target: SshTarget) -> bool:
        return target.ssh("true", timeout=60).returncode == 0

    def boot_id() -> str:
        return machine_key.ssh("cat /proc/sys/kernel/random/boot_id", timeout=60).stdout.strip()

    booted = boot_id()
    assert not logs_in(as_admin)
    with Load(forecast_url(rehearsal), rate=RATE, context=rehearsal.context) as added:
        run.redeploy("dev", {"sshPublicKeys": [(tmp_path / "admin.pub").read_text().strip()]})
    assert logs_in(as_admin)
    with Load(forecast_url(rehearsal), rate=RATE, context=rehearsal.context) as removed:
        run.redeploy("dev", {})
    assert not logs_in(as_admin)

    figures.append(f"a key added, then removed, by two deploys: {added.result.summary()}; {removed.result.summary()}")
    assert added.result.failures == [] and removed.result.failures == []
    # The same machine, never rebooted: a key is a deploy, not a new droplet.
    assert boot_id() == booted
