"""The audits a security reviewer runs first, against the booted rehearsal: ssh-audit, testssl, fail2ban."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.layout import DEPLOY_USER
from core.ssh_host_keys import make_host_keys
from rehearsal import acme, nspawn
from rehearsal.deploy import SshTarget
from tests.e2e.conftest import Rehearsal, bring_up, pinned_host_key
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.e2e

SSH_AUDIT = str(PROJECT_DIR / ".venv/bin/ssh-audit")
#: The policy for the rehearsal's Debian 13; the droplet's OpenSSH 9.6 gets the Ubuntu 24.04 one.
DEBIAN_13_POLICY = "Hardened Debian 13 (version 1)"
#: A second address on the host's side of the machine's network, for an attacker that fail2ban may ban.
ATTACKER = "10.213.8.1"


#: The site under a domain: its certificate has Let's Encrypt's 90 days. The address's 6-day certificate is
#: what Let's Encrypt issues for an address, and testssl would flag its "expires < 30 days".
DOMAIN = "audit.test"
#: testssl's findings that come from Pebble, not from the stack: Pebble's certificates carry no CRL or
#: OCSP address; Let's Encrypt's carry a CRL address.
PEBBLE_FINDINGS = {"cert_revocation"}


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up({"domain": DOMAIN})


def audit(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSH_AUDIT, *arguments], capture_output=True, text=True, timeout=120, check=False)


def test_ssh_passes_the_hardened_debian_13_policy(rehearsal: Rehearsal, figures: list[str]) -> None:
    result = audit("-P", DEBIAN_13_POLICY, rehearsal.machine.address)

    figures.append(f"ssh-audit policy '{DEBIAN_13_POLICY}': {'passed' if result.returncode == 0 else 'FAILED'}")
    assert result.returncode == 0, result.stdout
    assert "Passed" in result.stdout


def test_ssh_audit_finds_no_failure_and_warns_only_of_post_quantum(rehearsal: Rehearsal, figures: list[str]) -> None:
    result = audit("--json", rehearsal.machine.address)
    report = json.loads(result.stdout)

    findings = [
        (level, item["name"], " ".join(item.get("notes", {}).get(level, [])))
        for section in ("kex", "key", "enc", "mac")
        for item in report.get(section, [])
        for level in ("fail", "warn")
        if item.get("notes", {}).get(level)
    ]
    figures.append(f"ssh-audit: {len(findings)} failures or warnings")
    assert findings == []
    assert {key["algorithm"] for key in report["key"]} == {"ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"}
    sizes = rehearsal.machine.guest(["sh", "-c", "for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -l -f $k; done"])
    assert sorted(line.split()[0] + " " + line.split()[-1] for line in sizes.stdout.splitlines()) == [
        "256 (ED25519)",
        "4096 (RSA)",
    ]


def test_deploy_key_still_logs_in_and_fail2ban_bans_an_attacker(rehearsal: Rehearsal) -> None:
    machine = rehearsal.machine
    subprocess.run(["ip", "address", "add", f"{ATTACKER}/32", "dev", nspawn.HOST_VETH], check=True)
    try:
        banned = False
        deadline = time.monotonic() + 120
        attempts = 0
        while not banned and attempts < 40 and time.monotonic() < deadline:
            attempts += 1
            subprocess.run(
                ["ssh", "-b", ATTACKER, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                 *pinned_host_key(machine), f"intruder@{machine.address}", "true"],
                capture_output=True, timeout=30, check=False,
            )  # fmt: skip
            status = machine.guest(["fail2ban-client", "status", "sshd"]).stdout
            banned = ATTACKER in status
            time.sleep(1)

        assert banned, f"not banned after {attempts} failed logins"
        assert run_ssh(rehearsal).returncode == 0  # the deploy key, from the host's own address
    finally:
        machine.guest(["fail2ban-client", "unban", ATTACKER])
        subprocess.run(["ip", "address", "del", f"{ATTACKER}/32", "dev", nspawn.HOST_VETH], check=False)


def run_ssh(rehearsal: Rehearsal) -> subprocess.CompletedProcess[str]:
    target = rehearsal.machine
    return subprocess.run(
        ["ssh", "-i", str(target.private_key), "-o", "BatchMode=yes", *pinned_host_key(target),
         f"deploy@{target.address}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_testssl_finds_nothing_wrong(rehearsal: Rehearsal, tmp_path: Path, figures: list[str]) -> None:
    report = tmp_path / "testssl.json"
    result = subprocess.run(
        ["testssl", "--quiet", "--warnings", "off", "--color", "0", "--jsonfile", str(report),
         "--add-ca", str(acme.PEBBLE_DIR / "roots.pem"), "--ip", rehearsal.machine.address, f"https://{DOMAIN}/"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    findings = json.loads(report.read_text())

    bad = [
        f"{f['id']}: {f['finding']}"
        for f in findings
        if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL") and f["id"] not in PEBBLE_FINDINGS
    ]
    figures.append(f"testssl: {len(findings)} checks, {len(bad)} at MEDIUM or worse")
    assert bad == [], result.stdout[-300:]


def test_the_server_shows_the_host_keys_made_for_it_and_no_other(rehearsal: Rehearsal) -> None:
    """Made before the boot and pinned by every SSH of the rehearsal, as the program pins a droplet's."""
    machine = rehearsal.machine
    made = machine.host_keys()

    scanned = subprocess.run(
        ["ssh-keyscan", "-T", "10", "-t", "ed25519,rsa,ecdsa", machine.address],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    shown = sorted(line.split(maxsplit=1)[1] for line in scanned.stdout.splitlines() if not line.startswith("#"))
    assert shown == sorted([made.ed25519_public, made.rsa_public])


def test_a_server_with_another_host_key_is_refused_before_anything_is_sent(
    rehearsal: Rehearsal, tmp_path: Path
) -> None:
    """What the deploy does when something else answers at the droplet's address: it stops at the key."""
    machine = rehearsal.machine
    impostor = tmp_path / "known_hosts"
    impostor.write_text(f"{machine.address} {make_host_keys().ed25519_public}\n")
    target = SshTarget(machine.address, DEPLOY_USER, machine.private_key, impostor)
    marker = "/tmp/flaskdroplet-host-key-test"

    done = target.ssh(f"touch {marker}")

    assert done.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in done.stderr or "Host key verification failed" in done.stderr
    assert machine.guest(["test", "-e", marker]).returncode == 1
