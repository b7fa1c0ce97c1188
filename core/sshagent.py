"""The key the deploy logs in with: `sshPrivateKey`, or the SSH agent's when it is unset.

A private key whose public key is none of the stack's would be refused on every dial
(the deploy's dial limit of them, counted by fail2ban); it is read from the key file
itself, whose public part OpenSSH keeps unencrypted.

Without `sshPrivateKey`, pulumi-command offers every key the agent holds, in the agent's order
(`ssh.PublicKeysCallback(agent.NewClient(conn).Signers)`, pulumi-command's
`provider/pkg/provider/remote/connection.go`). The droplet's sshd closes a connection
after `MaxAuthTries` refused keys (`cloud-init/sshd.conf.j2`), so a key of the stack that
the agent holds fourth is never reached: every dial fails, pulumi-command dials again up
to its limit, and fail2ban bans the address after the failures it counts. Checked here,
before any resource, against the agent's own list (the agent protocol's
REQUEST_IDENTITIES, draft-miller-ssh-agent section 4.4).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
from collections.abc import Mapping

from core.settings import Settings, ssh_key_fingerprint

#: `MaxAuthTries` in the droplet's sshd configuration (`cloud-init/sshd.conf.j2`).
SSHD_MAX_AUTH_TRIES = 3
_REQUEST_IDENTITIES = 11
_IDENTITIES_ANSWER = 12


class AgentError(OSError):
    """The agent could not be reached or answered something else than its key list."""


def agent_key_lines(socket_path: str, timeout: float = 5.0) -> list[str]:
    """The public keys an SSH agent holds, in the order it offers them, as `TYPE BASE64` lines."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_path)
            conn.sendall(struct.pack(">IB", 1, _REQUEST_IDENTITIES))
            (length,) = struct.unpack(">I", _read(conn, 4))
            answer = _read(conn, length)
    except OSError as err:
        raise AgentError(f"the SSH agent at {socket_path} did not answer ({err})") from err
    if not answer or answer[0] != _IDENTITIES_ANSWER:
        raise AgentError(f"the SSH agent at {socket_path} answered message {answer[:1]!r}, not its key list")
    (count,) = struct.unpack(">I", answer[1:5])
    lines, offset = [], 5
    for _ in range(count):
        blob, offset = _string(answer, offset)
        _comment, offset = _string(answer, offset)
        key_type, _ = _string(blob, 0)
        lines.append(f"{key_type.decode('ascii', 'replace')} {base64.b64encode(blob).decode()}")
    return lines


def private_key_public_line(private_key: str) -> str | None:
    """The public key of an OpenSSH private key file, as `TYPE BASE64`; None for another format.

    The format ("openssh-key-v1", OpenSSH's PROTOCOL.key) keeps the public keys unencrypted
    before the private part, so no passphrase is needed to read them.
    """
    body = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", private_key, re.S)
    if body is None:
        return None
    try:
        data = base64.b64decode("".join(body[1].split()), validate=True)
        magic = b"openssh-key-v1\0"
        if not data.startswith(magic):
            return None
        offset = len(magic)
        for _ in range(3):  # cipher, kdf, kdf options
            _, offset = _string(data, offset)
        (count,) = struct.unpack(">I", data[offset : offset + 4])
        blob, _ = _string(data, offset + 4)
        key_type, _ = _string(blob, 0)
    except (ValueError, struct.error):
        return None
    if count < 1 or not blob:
        return None
    return f"{key_type.decode('ascii', 'replace')} {base64.b64encode(blob).decode()}"


def agent_problems(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Why the deploy could not log in, or nothing: the key in `sshPrivateKey`, or else the agent's keys.

    A key given by its id in `sshKeyFingerprints` cannot be matched to a public key here: with
    one, only a missing agent is refused.
    """
    accepted = {ssh_key_fingerprint(key) for key in settings.server.ssh_public_keys} | set(
        settings.server.ssh_key_fingerprints
    )
    comparable = not any(fingerprint.isdigit() for fingerprint in settings.server.ssh_key_fingerprints)
    if settings.server.ssh_private_key is not None:
        public = private_key_public_line(settings.server.ssh_private_key)
        if public is None or not comparable or ssh_key_fingerprint(public) in accepted:
            return []
        return [
            f"flask-droplet:sshPrivateKey = ********: its public key ({ssh_key_fingerprint(public)}) is none of "
            "sshPublicKeys or sshKeyFingerprints, so the droplet would refuse it: every dial would fail, and "
            "fail2ban would ban this address for an hour. Set the private key of one of the stack's keys"
        ]
    environ = os.environ if environ is None else environ
    advice = (
        "set sshPrivateKey (pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519), or put the stack's "
        "key first in the agent (ssh-add -D, then ssh-add ~/.ssh/id_ed25519)"
    )
    socket_path = environ.get("SSH_AUTH_SOCK")
    if not socket_path:
        return [
            "flask-droplet:sshPrivateKey is not set and no SSH agent is running (SSH_AUTH_SOCK is empty): the "
            f"deploy would have no key to log in with; {advice}"
        ]
    try:
        offered = [ssh_key_fingerprint(line) for line in agent_key_lines(socket_path)]
    except AgentError as err:
        return [f"flask-droplet:sshPrivateKey is not set and {err}: the deploy would have no key; {advice}"]
    if accepted & set(offered[:SSHD_MAX_AUTH_TRIES]) or not comparable:
        return []
    where = (
        f"it is key {offered.index(next(f for f in offered if f in accepted)) + 1} of {len(offered)} there"
        if accepted & set(offered)
        else f"none of its {len(offered)} keys is one of sshPublicKeys or sshKeyFingerprints"
    )
    return [
        "flask-droplet:sshPrivateKey is not set, so the deploy offers the SSH agent's keys in the agent's order, "
        f"and {where}. The droplet's sshd closes the connection after {SSHD_MAX_AUTH_TRIES} refused keys "
        "(MaxAuthTries), so the deploy could never log in, and fail2ban would ban this address for an hour; "
        f"{advice}"
    ]


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("the connection closed early")
        data += chunk
    return data


def _string(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    return data[offset + 4 : offset + 4 + length], offset + 4 + length
