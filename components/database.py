"""`Database`: a DigitalOcean Managed PostgreSQL cluster that only the app's droplets reach."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_digitalocean as digitalocean

from core.settings import Settings

#: PostgreSQL's major version, pinned: DigitalOcean's default moves, and a change here is a major
#: upgrade of the cluster (the provider calls DigitalOcean's upgrade for it), which deserves a commit.
POSTGRES_VERSION = "17"


def connection_url(user: str, password: str, host: str, port: int, database: str) -> str:
    """The app's DATABASE_URL: TLS required (DigitalOcean's clusters accept nothing else), every part quoted."""
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(database, safe='')}"
        "?sslmode=require"
    )


@dataclass(frozen=True)
class DatabaseArgs:
    settings: Settings
    """Validated stack settings: the size, nodes and region of the cluster, the app's name."""
    vpc_id: pulumi.Input[str]
    """The stack's VPC: the cluster's private address is in it, beside the droplets."""
    droplet_ids: Sequence[pulumi.Input[str]]
    """The app's droplets: the only sources the cluster's firewall lets in."""
    tags: tuple[str, ...]
    """DigitalOcean tags for the cluster (project and stack)."""


class Database(pulumi.ComponentResource):
    """A Managed PostgreSQL cluster in the stack's VPC, with a database named after the app.

    The cluster's firewall trusts the app's droplets by id and nothing else, so neither
    the internet nor another droplet of the account reaches it. The app connects over the
    VPC (the cluster's private host) as the cluster's `doadmin`, the owner of every database
    DigitalOcean's API creates: a user created through the API gets no privileges at all
    ("New users receive minimal permissions by default", DigitalOcean's docs), and since
    PostgreSQL 15 not even the right to create a table in `public`, so the app's first
    migration would fail, and granting them takes SQL run as `doadmin` before it. `url` is
    its DATABASE_URL, a secret that travels only on the deploy's stdin. On a production
    stack the cluster and the database refuse `pulumi destroy`.
    """

    url: pulumi.Output[str]
    """The app's DATABASE_URL (secret): the app's database, over the private network, TLS required."""
    private_host: pulumi.Output[str]
    """The cluster's hostname inside the VPC (no secret)."""

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:data:Database", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # What holds the app's data refuses `pulumi destroy` on a production stack.
        kept = pulumi.ResourceOptions(parent=self, protect=settings.server.production)

        cluster = digitalocean.DatabaseCluster(
            f"{name}-cluster",
            engine="pg",
            version=POSTGRES_VERSION,
            size=settings.server.database_size,
            node_count=settings.server.database_nodes,
            region=settings.server.region,
            private_network_uuid=args.vpc_id,
            tags=list(args.tags),
            opts=kept,
        )
        # Named after the app when made; a later appName keeps it (`name` is ForceNew in `resource_database_db.go`:
        # a new name would be a new, empty database and the old one deleted). DATABASE_URL names the one there is.
        database = digitalocean.DatabaseDb(
            f"{name}-db",
            cluster_id=cluster.id,
            name=settings.app.name,
            opts=pulumi.ResourceOptions(parent=self, protect=settings.server.production, ignore_changes=["name"]),
        )
        digitalocean.DatabaseFirewall(
            f"{name}-firewall",
            cluster_id=cluster.id,
            rules=[
                digitalocean.DatabaseFirewallRuleArgs(type="droplet", value=droplet_id)
                for droplet_id in args.droplet_ids
            ],
            opts=child,
        )

        def url(values: list[Any]) -> str:
            user_name, password, host, port, database_name = values
            return connection_url(user_name, password, host, int(port), database_name)

        self.url = pulumi.Output.secret(
            pulumi.Output.all(cluster.user, cluster.password, cluster.private_host, cluster.port, database.name).apply(
                url
            )
        )
        self.private_host = cluster.private_host
        self.register_outputs({"private_host": self.private_host})
