"""A first boot with the cloud's own vendor-data, as a droplet with monitoring has.

DigitalOcean adds first-boot work of its own (the metrics agent, with monitoring=True). The
machine's NoCloud seed gets a vendor-data part that is slow, one that fails, and one that
breaks fail2ban's configuration (a hardening extra that cannot start, as fail2ban 1.0.2 once
could not on Python 3.12). The deploy's first step must wait for all of it within its bound,
say what failed, and a broken hardening extra must not keep the site from coming up.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from core.plan import build_deploy_plan, wait_for_cloud_init_command
from rehearsal import nspawn, run
from rehearsal.deploy import SshTarget, run_plan
from tests.e2e.conftest import Rehearsal

pytestmark = pytest.mark.e2e

SLOW_SECONDS = 15


def vendor_data() -> str:
    """Three vendor-data scripts, run after the packages are in and before the user-data's runcmd."""
    parts = MIMEMultipart()
    breaks_fail2ban = (
        "#!/bin/sh\nsystemctl stop fail2ban\n"
        "printf '[sshd\\nenabled = maybe\\n' > /etc/fail2ban/jail.d/zz-vendor.conf\n"
    )
    for script in (
        breaks_fail2ban,
        f"#!/bin/sh\necho vendor: slow part; sleep {SLOW_SECONDS}\n",
        "#!/bin/sh\necho vendor: this part fails >&2; exit 3\n",
    ):
        parts.attach(MIMEText(script, "x-shellscript"))
    return parts.as_string()


@pytest.fixture(scope="module")
def booted() -> Iterator[tuple[nspawn.Machine, SshTarget, Rehearsal]]:
    try:
        machines, settings = run.boot_all("dev", {}, run.Timings(), vendor_data=vendor_data())
        machine = machines[0]
        target = run.ssh_target(machine)
        deadline = time.monotonic() + 120
        while target.ssh("true", timeout=15).returncode != 0:
            assert time.monotonic() < deadline, "SSH never answered"
            time.sleep(1)
        yield machine, target, Rehearsal(machine, settings, "", f"https://{machine.address}/", run.Timings())
    finally:
        run.down()


def test_wait_step_gives_up_at_its_bound(booted: tuple[nspawn.Machine, SshTarget, Rehearsal]) -> None:
    _, target, _ = booted

    started = time.monotonic()
    result = target.ssh(wait_for_cloud_init_command(timeout_seconds=3), timeout=60)

    assert result.returncode == 1
    assert "cloud-init did not finish within 3 s" in result.stderr
    assert time.monotonic() - started < 30


def test_wait_step_waits_for_slow_vendor_data_and_names_the_part_that_failed(
    booted: tuple[nspawn.Machine, SshTarget, Rehearsal], figures: list[str]
) -> None:
    _, target, _ = booted

    started = time.monotonic()
    result = target.ssh(wait_for_cloud_init_command(), timeout=900)
    seconds = time.monotonic() - started

    figures.append(
        f"first boot with a {SLOW_SECONDS} s and a failing vendor-data part: the wait step returned after "
        f"{seconds:.0f} s, exit {result.returncode}"
    )
    assert result.returncode == 1
    assert "status: error" in result.stdout
    assert "scripts_vendor" in result.stdout, result.stdout[-3000:]  # the failing part is named, not the user-data
    assert "scripts_user" not in result.stdout
    assert "cloud-init reported errors; details: sudo cloud-init status --long" in result.stderr


def test_broken_fail2ban_does_not_keep_the_site_from_coming_up(
    booted: tuple[nspawn.Machine, SshTarget, Rehearsal],
) -> None:
    machine, target, rehearsal = booted
    output = machine.cloud_init_output(lines=400)
    assert "flask-droplet: WARNING: fail2ban did not start" in output

    # The rest of the deploy, as a user does once they have read what the wait step said.
    plan = build_deploy_plan(rehearsal.settings, nspawn.STATE_DIR / "build")
    plan = dataclasses.replace(plan, steps=tuple(s for s in plan.steps if s.name != "wait-for-cloud-init"))
    ran = run_plan(
        plan, target, machine.instance_id, nspawn.STATE_DIR / "deploy-state.json", run.progress, machine.address
    )

    release_id, url, *warnings = ran["deploy"].splitlines()
    assert url == rehearsal.url
    assert warnings == ["warning: fail2ban is not running (journalctl -u fail2ban): failed SSH logins are not banned"]
    assert rehearsal.get("/healthz")[0] == 200
    assert release_id == plan.release_id
