"""`SshHostKey` under the real engine: made once, kept across updates, secret in the state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.conftest import Workspace, engine_env
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.engine

PROGRAM = """\
import pulumi

from components.hostkey import SshHostKey, SshHostKeyArgs

key = SshHostKey("web-host-key", SshHostKeyArgs(generation=pulumi.Config().require("generation")))
pulumi.export("ed25519_public", key.ed25519_public)
pulumi.export("ed25519_private", key.ed25519_private)
pulumi.export("rsa_private", key.rsa_private)
"""

PROJECT_FILE = """\
name: hostkey
runtime:
  name: python
  options:
    virtualenv: .venv
config:
  generation:
    type: string
    default: "1"
"""


@pytest.fixture
def program(engine_bin: Path, tmp_path: Path) -> Workspace:
    """A program of the host key alone, beside this project's components, its core and its virtualenv."""
    (tmp_path / "home").mkdir()
    project = tmp_path / "hostkey"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(PROJECT_FILE)
    (project / "__main__.py").write_text(PROGRAM)
    (project / "components").symlink_to(PROJECT_DIR / "components")
    (project / "core").symlink_to(PROJECT_DIR / "core")
    (project / ".venv").symlink_to(PROJECT_DIR / ".venv")
    space = Workspace(project, engine_env(engine_bin, tmp_path))
    space.ok("stack", "init", "dev")
    return space


def test_the_key_is_made_once_and_kept(program: Workspace) -> None:
    program.ok("up", "--yes")
    first = program.ok("stack", "output", "ed25519_public").strip()

    program.ok("up", "--yes", "--expect-no-changes")

    assert first.startswith("ssh-ed25519 ")
    assert program.ok("stack", "output", "ed25519_public").strip() == first


def test_a_new_generation_makes_a_new_key(program: Workspace) -> None:
    program.ok("up", "--yes")
    first = program.ok("stack", "output", "ed25519_public").strip()
    program.ok("config", "set", "generation", "2")

    preview = program.ok("preview", "--diff")
    program.ok("up", "--yes")

    assert "+-1 to replace" in preview
    assert program.ok("stack", "output", "ed25519_public").strip() != first


def test_the_private_halves_are_secrets_in_the_state_and_the_outputs(program: Workspace) -> None:
    shown = program.ok("up", "--yes")

    state = program.ok("stack", "export")
    outputs = json.loads(program.ok("stack", "output", "--json"))
    assert "OPENSSH PRIVATE KEY" not in state + shown
    assert outputs["ed25519_private"] == "[secret]" and outputs["rsa_private"] == "[secret]"
    revealed = json.loads(program.ok("stack", "output", "--json", "--show-secrets"))
    assert revealed["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
