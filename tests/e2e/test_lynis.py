"""lynis, before and after: a droplet with only an SSH key, and the same machine with this project's hardening."""

from __future__ import annotations

import re

import pytest

from rehearsal import nspawn, run

pytestmark = pytest.mark.e2e

#: What a droplet is before this project: the distribution, an SSH key for a user, nothing else.
PLAIN_USER_DATA = """#cloud-config
users:
  - name: deploy
    ssh_authorized_keys: [{key}]
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    shell: /bin/bash
"""


#: lynis's index wanted with this project's defaults.
MINIMUM_INDEX = 75


def lynis(machine: nspawn.Machine) -> tuple[int, list[str]]:
    """lynis's hardening index of the machine, and the ids of the suggestions it leaves."""
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]
    assert machine.guest([*apt, "update"], timeout=300).returncode == 0
    installed = machine.guest([*apt, "install", "-y", "lynis"], timeout=300)
    assert installed.returncode == 0, installed.stderr
    audit = machine.guest(["lynis", "audit", "system", "--quick", "--no-colors"], timeout=600)
    found = re.search(r"Hardening index : (\d+)", audit.stdout)
    assert found, audit.stdout[-2000:]
    report = machine.guest(["cat", "/var/log/lynis-report.dat"]).stdout
    suggestions = sorted(
        {line.split("=", 1)[1].split("|")[0] for line in report.splitlines() if line.startswith("suggestion[]=")}
    )
    return int(found[1]), suggestions


def test_hardening_raises_the_lynis_index(figures: list[str]) -> None:
    machine = nspawn.Machine()
    try:
        machine.down(run.progress)
        key = machine.public_key()
        machine.up(nspawn.build_image(run.progress), PLAIN_USER_DATA.format(key=key), run.progress)
        assert machine.wait_for_cloud_init(600, run.progress).ok
        before, _ = lynis(machine)
    finally:
        run.down()
    try:
        run.up("dev", {})
        after, suggestions = lynis(nspawn.Machine())
    finally:
        run.down()

    figures.append(f"lynis hardening index: {before} on a plain machine, {after} with this project's hardening")
    figures.append(f"lynis suggestions left: {', '.join(suggestions)}")
    assert after >= MINIMUM_INDEX
