"""The host keys the program makes, read by OpenSSH's own tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from core.ssh_host_keys import RSA_BITS, HostKeys, known_hosts_line, make_host_keys


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return make_host_keys().as_dict()


def ssh_keygen(*args: str) -> str:
    tool = shutil.which("ssh-keygen")
    assert tool is not None
    return subprocess.run([tool, *args], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_each_private_key_is_an_openssh_key_file_of_its_public_line(
    keys: dict[str, str], kind: str, tmp_path: Path
) -> None:
    private = tmp_path / "key"
    private.write_text(keys[f"{kind}_private"])
    private.chmod(0o600)

    assert ssh_keygen("-y", "-f", str(private)).strip() == keys[f"{kind}_public"]


def test_the_rsa_key_has_the_hardened_size(keys: dict[str, str], tmp_path: Path) -> None:
    public = tmp_path / "key.pub"
    public.write_text(keys["rsa_public"] + "\n")

    assert ssh_keygen("-l", "-f", str(public)).split()[0] == str(RSA_BITS)


def test_the_fingerprint_is_the_one_ssh_shows(keys: dict[str, str], tmp_path: Path) -> None:
    public = tmp_path / "key.pub"
    public.write_text(keys["ed25519_public"] + "\n")

    assert ssh_keygen("-l", "-E", "sha256", "-f", str(public)).split()[1] == HostKeys(**keys).fingerprint


def test_the_known_hosts_line_pins_the_key_for_the_address(keys: dict[str, str], tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line("203.0.113.50", keys["ed25519_public"]) + "\n")

    found = ssh_keygen("-F", "203.0.113.50", "-f", str(known_hosts))

    assert keys["ed25519_public"].split()[1] in found


def test_two_keys_are_never_the_same() -> None:
    assert make_host_keys().ed25519_public != make_host_keys().ed25519_public
