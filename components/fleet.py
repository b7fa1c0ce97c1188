"""The stack's private network: a VPC for droplets that talk to a database cluster.

One droplet with SQLite needs none and gets none, so its stack stays as it was.
"""

from __future__ import annotations

import pulumi_digitalocean as digitalocean

from components.settings import Settings


def needs_private_network(settings: Settings) -> bool:
    """A VPC whenever droplets stand behind a balancer or talk to a database cluster; one droplet alone needs none."""
    return settings.behind_balancer or settings.database == "postgres"


def private_network(settings: Settings, stack_tag: str) -> digitalocean.Vpc | None:
    """The stack's own VPC in the droplets' region, or None when nothing needs one.

    Its name is left to Pulumi (a VPC's name is unique in the account) and DigitalOcean
    picks a free private range: nothing here depends on the addresses, only on the
    network being the same for the droplets, the balancer and the cluster.
    """
    if not needs_private_network(settings):
        return None
    return digitalocean.Vpc(
        "network",
        region=settings.region,
        description=f"{stack_tag}: the app's droplets, their balancer and database",
    )
