"""The stack's droplets: how many there are, what each one does, and what replaces one.

The fleet's shape is read here by every side that walks it: the program's
droplets and their deploys (`components/`), the deploy plans (`core/plan.py`)
and the rehearsal's machines (`rehearsal/run.py`). What DigitalOcean cannot
change in a droplet is written here too, once, for the check against the
account (`components/account.py`) and for the host keys made anew with a new
droplet (`components/webserver.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.render import sha256_text
from core.settings import Settings

#: What the first droplet's deploy leaves to it alone, told to every other droplet's deploy: the release
#: command (migrations, once per release), the scheduled jobs and the processes marked for one droplet.
SECONDARY_DEPLOY_OPTIONS = ("--skip-release-command", "--secondary")


@dataclass(frozen=True)
class Member:
    """One droplet of the stack, by its place in the rollout."""

    index: int
    """0 for the first droplet; the rollout goes in this order."""

    @property
    def first(self) -> bool:
        """The droplet that runs the release command and the scheduled jobs, and whose address the outputs
        `ssh`, `logs` and `restore_offsite` name."""
        return self.index == 0

    def droplet_name(self, server: str) -> str:
        """Its logical name in the `WebServer` named `server`: `NAME-droplet` for the first whatever the count,
        so growing from one droplet to several keeps it as the same resource; `NAME-2-droplet` and on after it."""
        return f"{server}-droplet" if self.first else f"{server}-{self.index + 1}-droplet"

    @property
    def deployment_name(self) -> str:
        """Its deploy's logical name: `app` for the first, `app-2` and on after it."""
        return "app" if self.first else f"app-{self.index + 1}"

    @property
    def deploy_options(self) -> tuple[str, ...]:
        """What its deploy command is told before the release: nothing for the first, `SECONDARY_DEPLOY_OPTIONS`
        for the others."""
        return () if self.first else SECONDARY_DEPLOY_OPTIONS


def members(settings: Settings) -> tuple[Member, ...]:
    """Every droplet of the stack (`instances`), in rollout order."""
    return tuple(Member(index) for index in range(settings.server.instances))


@dataclass(frozen=True)
class Origin:
    """What a droplet is created from and DigitalOcean cannot change in place: a new one replaces it.

    These are the droplet's ForceNew inputs in `resource_droplet.go` that the program sets
    from the settings: `image`, `region` and `vpc_uuid`. `size` is a resize in place; the
    SSH keys and the user-data are ForceNew too, but a droplet keeps those it was created
    with (`ignore_changes` in `components/webserver.py`) and every deploy re-applies what
    they carry.
    """

    image: str
    """An image's slug or its numeric id: one image has two names, and the caller compares origins under the same
    one (`components/account.py` `same_image`)."""
    region: str
    private_network: bool
    """In the stack's own VPC; False: in the region's default VPC."""

    @classmethod
    def wanted(cls, settings: Settings, private_network: bool) -> Origin:
        return cls(settings.server.image, settings.server.region, private_network)

    @property
    def generation(self) -> str:
        """A short digest that differs between two origins exactly when one replaces the other's droplet."""
        return sha256_text(json.dumps([self.image, self.region, self.private_network]))[:16]

    def changes_from(self, existing: Origin) -> list[str]:
        """What replaces a droplet created from `existing` with one from this origin, each as `what old -> new`;
        none: the droplet is changed in place, or not at all."""
        changes = []
        if existing.region and existing.region != self.region:
            changes.append(f"region {existing.region} -> {self.region}")
        if existing.image and existing.image != self.image:
            changes.append(f"image {existing.image} -> {self.image}")
        # `vpc_uuid` is Optional and Computed: set to the stack's VPC it replaces a droplet of the default one;
        # left unset (the VPC no longer needed) it is no change.
        if self.private_network and not existing.private_network:
            changes.append("into the stack's VPC")
        return changes
