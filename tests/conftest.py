from __future__ import annotations

import base64
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent


class OutsideRepositoryError(PermissionError):
    """A test reached for a file beside the repository, which a user's clone does not have."""


#: Directories whose other entries are the system's or everybody's, not a neighbour project's:
#: a clone directly inside one of them is not watched.
SHARED_PARENTS = frozenset(
    Path(p)
    for p in (
        "/",
        "/tmp",
        "/var/tmp",
        "/root",
        "/home",
        "/opt",
        "/srv",
        "/usr",
        "/usr/local",
        "/usr/src",
        "/var",
        "/var/lib",
        "/mnt",
        "/media",
        "/run",
    )
)
#: Always readable: Python itself, wherever it is installed.
ALWAYS_READABLE = tuple(Path(p).resolve() for p in {sys.base_prefix, sys.base_exec_prefix})


#: Whether the repository's neighbours are watched: not when the clone sits directly in a shared directory.
WATCHING_BESIDE = not (
    PROJECT_DIR.parent in SHARED_PARENTS
    or PROJECT_DIR.parent == Path.home()
    or PROJECT_DIR.parent.parent == Path("/home")
)


def _beside_repository(target: Any) -> bool:
    """Whether `target` names something next to the repository (a sibling of its directory), not in it."""
    if not WATCHING_BESIDE or isinstance(target, int) or target is None:
        return False
    try:
        path = Path(os.path.abspath(os.fsdecode(target)))
    except TypeError:
        return False
    parent = PROJECT_DIR.parent
    return (
        path.is_relative_to(parent)
        and path != parent
        and not path.is_relative_to(PROJECT_DIR)
        and not any(path.is_relative_to(readable) for readable in ALWAYS_READABLE)
    )


def _refuse_reads_beside_repository(event: str, args: tuple[Any, ...]) -> None:
    if event in ("open", "os.listdir", "os.scandir") and args and _beside_repository(args[0]):
        raise OutsideRepositoryError(f"{args[0]}: tests may read only inside the repository ({PROJECT_DIR})")
    if event == "subprocess.Popen" and len(args) > 1 and isinstance(args[1], (list, tuple)):
        for arg in args[1]:
            if isinstance(arg, (str, bytes)) and os.sep in os.fsdecode(arg) and _beside_repository(arg):
                raise OutsideRepositoryError(f"{arg}: tests may pass only paths inside the repository ({PROJECT_DIR})")


# Audit hooks cannot be removed: from here on, the whole test run is watched.
sys.addaudithook(_refuse_reads_beside_repository)


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


#: An age identity made for the tests alone (age-keygen), and its recipient: what offsiteIdentity takes.
OFFSITE_IDENTITY = "AGE-SECRET-KEY-1E3NDYY48CX33P37AS3CT0WQMMZ0JCJ0W0FD38NRGFT7U50K7F90SDRF5A5"
OFFSITE_RECIPIENT = "age1luy76kqm0lkj7gg9z0uaaee7p4mmjzg7wvkr4y9t9fgk5kc09yuq7ke0e7"
#: The off-site copies on: a Spaces region apart from the droplet's, and the identity.
OFFSITE_CONFIG = {"offsiteRegion": "fra1", "offsiteIdentity": OFFSITE_IDENTITY}
