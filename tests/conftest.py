from __future__ import annotations

import base64
import struct
from typing import Any

import pytest


def example_public_key(seed: str = "a") -> str:
    """A well-formed (never used) ed25519 public key line."""
    key = (seed * 32)[:32].encode()
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + key
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} test@example"


@pytest.fixture
def good_config() -> dict[str, Any]:
    """A complete, valid stack config for the example app."""
    return {
        "sshPublicKeys": [example_public_key()],
        "adminCidrs": ["203.0.113.7/32", "2001:db8::/64"],
        "appEnv": {"SECRET_KEY": "correct-horse-battery-staple-7f3a"},
    }


#: Measured figures (end-to-end tests), printed in the summary at the end of the run.
FIGURES: list[str] = []


@pytest.fixture
def figures() -> list[str]:
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("measured")
        for line in FIGURES:
            terminalreporter.write_line(line)
