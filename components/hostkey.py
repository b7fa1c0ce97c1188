"""`SshHostKey`: a server's SSH host keys, made by the program before the server exists.

The droplet is given these keys in its user-data, and every connection to it checks the
Ed25519 one, so the first `pulumi up` already knows whom it talks to: no trust on first use.
The keys live in the stack's state, their private halves as secrets, and stay the same from
one `pulumi up` to the next; they change only when `generation` does (a new server).

It is a Pulumi dynamic resource: the engine serves it from this program's own Python (the
`pulumi-python` plugin that Pulumi ships beside its CLI), so it needs no cloud service.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

#: The size of the RSA host key, as the hardened sshd drop-in expects (cloud-init/sshd-crypto.conf.j2).
RSA_BITS = 4096

#: The outputs that hold private keys.
PRIVATE_OUTPUTS = ("ed25519_private", "rsa_private")


def make_host_keys() -> dict[str, str]:
    """A new Ed25519 and RSA host key pair, in OpenSSH's formats (private key files, public key lines)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    def openssh(private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> tuple[str, str]:
        private_text = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        public_text = (
            private.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        return private_text, public_text

    ed25519_private, ed25519_public = openssh(ed25519.Ed25519PrivateKey.generate())
    rsa_private, rsa_public = openssh(rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
    return {
        "ed25519_private": ed25519_private,
        "ed25519_public": ed25519_public,
        "rsa_private": rsa_private,
        "rsa_public": rsa_public,
        "ed25519_fingerprint": fingerprint(ed25519_public),
    }


def fingerprint(public_line: str) -> str:
    """`SHA256:...`, as `ssh-keygen -lf` and ssh's own prompts show a key."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_line(host: str, public_line: str) -> str:
    """The line of a `known_hosts` file that pins `public_line` for `host`."""
    key_type, key = public_line.split()[:2]
    return f"{host} {key_type} {key}"


class SshHostKeyProvider(pulumi.dynamic.ResourceProvider):
    """Makes the keys once; a changed `generation` makes new ones, nothing else changes them."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        keys = make_host_keys()
        return pulumi.dynamic.CreateResult(id_=keys["ed25519_fingerprint"], outs={**props, **keys})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        replaces = ["generation"] if olds.get("generation") != news.get("generation") else []
        return pulumi.dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)


@dataclass(frozen=True)
class SshHostKeyArgs:
    generation: pulumi.Input[str]
    """Changes exactly when the server the keys are for is replaced; new keys come with it."""


class SshHostKey(pulumi.dynamic.Resource):
    """A server's Ed25519 and RSA host keys; the private halves are secrets."""

    ed25519_private: pulumi.Output[str]
    ed25519_public: pulumi.Output[str]
    """`ssh-ed25519 AAAA...`: what pulumi-command's `hostKey` and a `known_hosts` line pin."""
    ed25519_fingerprint: pulumi.Output[str]
    rsa_private: pulumi.Output[str]
    rsa_public: pulumi.Output[str]

    def __init__(self, name: str, args: SshHostKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = dict.fromkeys((*PRIVATE_OUTPUTS, "ed25519_public", "rsa_public", "ed25519_fingerprint"))
        super().__init__(
            SshHostKeyProvider(),
            name,
            {"generation": args.generation, **outputs},
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=list(PRIVATE_OUTPUTS))),
        )
