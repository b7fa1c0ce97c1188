"""The rehearsal cleans up after itself: an interrupted `up` leaves nothing behind on the host."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rehearsal import fleet, nspawn
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.e2e


def leftovers() -> list[str]:
    """What any rehearsal (one machine, or several with their balancer and database) might leave on the host."""
    found = []
    if subprocess.run(["pgrep", "-f", "systemd-nspawn.*flaskdrop"], capture_output=True, check=False).stdout:
        found.append("a systemd-nspawn process")
    for helper in ("pebble", "pebble-challtestsrv"):
        if subprocess.run(["pgrep", "-x", helper], capture_output=True, check=False).stdout:
            found.append(f"a {helper} process")
    for helper in ("haproxy", "postgres"):
        pattern = f"{helper} .*{nspawn.STATE_DIR}"
        if subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False).stdout:
            found.append(f"a {helper} process")
    for veth in [nspawn.Slot(index).veth for index in range(nspawn.MAX_MACHINES)] + [fleet.DATABASE_HOST_VETH]:
        if subprocess.run(["ip", "link", "show", veth], capture_output=True, check=False).returncode == 0:
            found.append(f"interface {veth}")
    if fleet.DATABASE_NETNS in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        found.append(f"network namespace {fleet.DATABASE_NETNS}")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=True).stdout
        found += [f"iptables {table}: {rule}" for rule in rules.splitlines() if "-rehearsal" in rule]
    if nspawn.STATE_DIR.exists():
        found.append(f"{nspawn.STATE_DIR}: {sorted(p.name for p in nspawn.STATE_DIR.iterdir())}")
    mounts = Path("/proc/self/mountinfo").read_text()
    if str(nspawn.STATE_DIR) in mounts:
        found.append("a mount under the state directory")
    return found


def test_interrupted_up_removes_everything() -> None:
    # As a terminal's Ctrl-C finds it, however the suite was started: a shell's background job ignores SIGINT,
    # and Python keeps an ignored SIGINT ignored. The default comes back before `exec`, which keeps it.
    with_sigint = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", with_sigint, sys.executable, "-m", "rehearsal", "up"],
        cwd=PROJECT_DIR,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = nspawn.STATE_DIR / "machine.json"
    deadline = time.monotonic() + 120
    try:
        # Interrupt once the machine is booting: its process, veth and rules exist.
        while time.monotonic() < deadline:
            if state.exists() and json.loads(state.read_text()).get("nspawn_pid"):
                break
            time.sleep(0.2)
        time.sleep(3)
        assert leftovers(), "the machine never started"

        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        # A failure above leaves no machine behind for the tests after this one.
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
            subprocess.run([sys.executable, "-m", "rehearsal", "down"], cwd=PROJECT_DIR, timeout=300, check=False)

    assert process.returncode == 130, stderr
    assert "interrupted: removing the machine" in stderr
    assert leftovers() == []


def test_down_when_nothing_is_up_is_harmless() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rehearsal", "down"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert leftovers() == []
