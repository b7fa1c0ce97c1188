"""`SshHostKey`: a server's SSH host keys as a resource of the stack, made before the server.

The keys live in the stack's state, their private halves as secrets, and stay the same from
one `pulumi up` to the next; they change only when `generation` does (a new server).

It is a Pulumi dynamic resource: the engine serves it from this program's own Python (the
`pulumi-python` plugin that Pulumi ships beside its CLI), so it needs no cloud service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

from core.ssh_host_keys import HostKeys, make_host_keys

#: The outputs that hold private keys.
PRIVATE_OUTPUTS = ("ed25519_private", "rsa_private")
#: Every output that holds a key, in `HostKeys`' order of fields.
KEY_OUTPUTS = ("ed25519_private", "ed25519_public", "rsa_private", "rsa_public")


class SshHostKeyProvider(pulumi.dynamic.ResourceProvider):
    """Makes the keys once; a changed `generation` makes new ones, nothing else changes them."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        keys = make_host_keys()
        return pulumi.dynamic.CreateResult(
            id_=keys.fingerprint, outs={**props, **keys.as_dict(), "ed25519_fingerprint": keys.fingerprint}
        )

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
        outputs = dict.fromkeys((*KEY_OUTPUTS, "ed25519_fingerprint"))
        super().__init__(
            SshHostKeyProvider(),
            name,
            {"generation": args.generation, **outputs},
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=list(PRIVATE_OUTPUTS))),
        )

    @property
    def keys(self) -> pulumi.Output[HostKeys]:
        """All four keys, for the server's user-data; secret, as its private halves are."""
        return pulumi.Output.all(*(getattr(self, name) for name in KEY_OUTPUTS)).apply(lambda keys: HostKeys(*keys))
