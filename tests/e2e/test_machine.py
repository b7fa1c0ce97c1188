"""The rehearsal machine for real: boot, cloud-init with packages and ufw, SSH and HTTP from the host, down.

Needs root, systemd-nspawn and the Debian mirror. It uses its own machine name and
subnet, so a developer's running rehearsal (the default name) is left alone. Traffic
goes only to the guest, inside the network namespace systemd-nspawn makes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rehearsal.machine import CloudInitResult, Machine, MachineSpec

pytestmark = pytest.mark.e2e

SPEC = MachineSpec(name="fdrtest", host_cidr="10.213.9.1/30", guest_cidr="10.213.9.2/30")
SUBNET = "10.213.9.0/30"

USER_DATA = """\
#cloud-config
users:
  - name: deploy
    ssh_authorized_keys: [{public_key}]
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    shell: /bin/bash
packages: [nginx, ufw]
runcmd:
  - [ufw, default, deny, incoming]
  - [ufw, allow, 22/tcp]
  - [ufw, allow, 80/tcp]
  - [ufw, --force, enable]
"""


@dataclass
class Booted:
    machine: Machine
    key: Path
    public_key: str
    cloud_init: CloudInitResult
    timings: dict[str, float]


def report(message: str) -> None:
    print(f"[test_machine] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def booted() -> Iterator[Booted]:
    if os.geteuid() != 0:
        pytest.skip("the rehearsal machine needs root")
    machine = Machine(SPEC)
    try:
        key, public_key = machine.ssh_keypair()
        timings = machine.up(USER_DATA.format(public_key=public_key), progress=report)
        result = machine.wait_for_cloud_init(timeout=900, progress=report)
        report(result.describe())
        report("seconds: " + ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in machine.timings.items()))
        yield Booted(machine, key, public_key, result, timings)
    finally:
        machine.down(progress=report)


def ssh(booted: Booted, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(booted.key),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            f"deploy@{booted.machine.address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def leftovers() -> list[str]:
    """Anything of the test machine still on the host."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv[0].endswith("systemd-nspawn") and f"--machine={SPEC.name}" in argv:
                found.append(f"process {entry.name}: {' '.join(argv)}")
    if Path(f"/sys/class/net/{SPEC.host_veth}").exists():
        found.append(f"interface {SPEC.host_veth}")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=True).stdout
        found += [f"iptables -t {table}: {rule}" for rule in rules.splitlines() if SUBNET in rule or SPEC.name in rule]
    for path in (SPEC.machine_dir, SPEC.state_file, Machine(SPEC).root):
        if path.exists():
            found.append(f"path {path}")
    return found


def test_cloud_init_finishes_without_errors(booted: Booted) -> None:
    result = booted.cloud_init
    assert result.status == "done", result.describe()
    assert result.errors == [], result.describe()
    assert not any(result.recoverable_errors.values()), result.describe()
    assert set(booted.timings) >= {"build", "copy", "boot"}


def test_packages_and_firewall_are_set_up_inside(booted: Booted) -> None:
    machine = booted.machine
    assert machine.run(["systemctl", "is-active", "nginx"]).stdout.strip() == "active"
    ufw = machine.run(["ufw", "status"])
    assert "Status: active" in ufw.stdout, ufw.stdout + ufw.stderr
    assert machine.run(["hostname"]).stdout.strip() == SPEC.name


def test_deploy_user_logs_in_over_ssh_with_sudo(booted: Booted) -> None:
    assert booted.machine.wait_for_port(22, timeout=30)
    result = ssh(booted, "true")
    assert result.returncode == 0, result.stderr
    result = ssh(booted, "sudo -n true && id -un")
    assert (result.returncode, result.stdout.strip()) == (0, "deploy"), result.stderr


def test_nginx_answers_from_the_host(booted: Booted) -> None:
    result = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", f"http://{booted.machine.address}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200"), result.stdout[:300]
    assert "Server: nginx" in result.stdout


def test_closed_port_does_not_answer(booted: Booted) -> None:
    with pytest.raises(OSError), socket.create_connection((booted.machine.address, 8080), timeout=3):
        pass


def test_up_again_replaces_the_machine(booted: Booted) -> None:
    """`up` while a machine is up tears the old one down first (the keys stay)."""
    machine = booted.machine
    first = machine.state()
    assert first is not None
    machine.up(USER_DATA.format(public_key=booted.public_key), progress=report)
    second = machine.state()
    assert second is not None
    assert second.instance_id != first.instance_id
    assert second.nspawn_pid != first.nspawn_pid
    assert machine.is_up()
    assert booted.key.exists()
    seed = machine.root / "var/lib/cloud/seed/nocloud/meta-data"
    assert second.instance_id in seed.read_text()


def test_down_from_another_process_leaves_nothing(booted: Booted) -> None:
    assert booted.machine.is_up()
    result = subprocess.run(
        [sys.executable, "-m", "rehearsal.machine", "down", "--name", SPEC.name],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert leftovers() == []
    assert not booted.machine.is_up()
    booted.machine.down(progress=report)  # and again: nothing to do, no error
    assert leftovers() == []
