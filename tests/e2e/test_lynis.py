"""lynis, before: a droplet with only an SSH key. After, with this project's hardening: test_security.py."""

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


def test_a_plain_machine_scores_what_the_project_improves_on(figures: list[str]) -> None:
    """The baseline; the project's own machine is scored in test_security.py, on the machine booted there."""
    machine = nspawn.Machine()
    try:
        machine.down(run.progress)
        key = machine.public_key()
        machine.up(nspawn.build_image(run.progress), PLAIN_USER_DATA.format(key=key), run.progress)
        assert machine.wait_for_cloud_init(600, run.progress).ok
        before, _ = lynis(machine)
    finally:
        run.down()

    figures.append(f"lynis hardening index of a plain machine: {before}")
    assert before < MINIMUM_INDEX
