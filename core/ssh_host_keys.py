"""A server's SSH host keys, made before the server exists, in OpenSSH's formats.

cloud-init installs them as the server's only host keys (`render_user_data`), and every
connection to the server checks the Ed25519 one: no trust on first use. Nothing here
imports Pulumi: the rehearsal makes its machines' keys with the same function.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass

#: The size of the RSA host key, as the hardened sshd drop-in expects (cloud-init/sshd-crypto.conf.j2).
RSA_BITS = 4096


@dataclass(frozen=True)
class HostKeys:
    """A server's Ed25519 and RSA host key pairs: private key files and public key lines."""

    ed25519_private: str
    ed25519_public: str
    """`ssh-ed25519 AAAA...`: what pulumi-command's `hostKey` and a `known_hosts` line pin."""
    rsa_private: str
    rsa_public: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def fingerprint(self) -> str:
        """The Ed25519 key's `SHA256:...`, as `ssh-keygen -l` and ssh's prompts show it."""
        return fingerprint(self.ed25519_public)


def make_host_keys() -> HostKeys:
    """A new Ed25519 and RSA host key pair."""
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
    return HostKeys(ed25519_private, ed25519_public, rsa_private, rsa_public)


def fingerprint(public_line: str) -> str:
    """`SHA256:...` of a public key line."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_line(host: str, public_line: str) -> str:
    """The line of a `known_hosts` file that pins `public_line` for `host`."""
    key_type, key = public_line.split()[:2]
    return f"{host} {key_type} {key}"
