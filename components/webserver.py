"""`WebServer`: the droplets, their SSH keys, their Cloud Firewall and the site's address."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as digitalocean

from components import fleet
from components.balancer import BALANCER_CHECK
from components.render import ServerLayout
from components.settings import Settings, SettingsError

ANYWHERE = ["0.0.0.0/0", "::/0"]
#: Weekly backups: without a policy DigitalOcean takes daily ones, at 30% of the droplet's price
#: instead of 20%. In a fixed window (4 hours from Sunday 04:00 UTC): a backup slows the disk's
#: writes while it runs, so when it runs is worth knowing.
WEEKLY_BACKUPS = digitalocean.DropletBackupPolicyArgs(plan="weekly", weekday="SUN", hour=4)


@dataclass(frozen=True)
class WebServerArgs:
    settings: Settings
    """Validated stack settings."""
    user_data: str
    """Rendered cloud-init user-data; holds no secret."""
    tags: tuple[str, ...]
    """DigitalOcean tags for the droplets (project and stack)."""
    vpc_id: pulumi.Input[str] | None = None
    """The stack's VPC (`components/fleet.py`), for a balancer or a database cluster; None for none."""


class WebServer(pulumi.ComponentResource):
    """Ubuntu 24.04 droplets configured by cloud-init, behind a Cloud Firewall, at the site's address.

    One droplet (`instances` 1) stands at a Reserved IP: SSH is open only to the admin
    networks, HTTP and HTTPS to everyone, and the Volume holds the app's state; the
    address and the Volume stay when the droplet is replaced. Several stand behind a
    DigitalOcean Load Balancer in the stack's VPC, which holds the site's address and its
    certificate: HTTP and the health check reach them only from the balancer, SSH only
    from the admin networks. With a `dns_zone`, the domain's records point at the site's
    address. On a production stack the droplets, the address (Reserved IP or balancer) and
    the Volume are protected from `pulumi destroy`.

    The first droplet is `NAME-droplet` whatever the count, so growing from one droplet
    to several keeps it (and its SSH keys, firewall and records) as the same resources.
    """

    droplet_id: pulumi.Output[str]
    """The first droplet's id."""
    ipv4_address: pulumi.Output[str]
    """The first droplet's own address: how the deploy reaches it over SSH."""
    ipv6_address: pulumi.Output[str]
    droplet_ids: list[pulumi.Output[str]]
    """Every droplet's id, the first first."""
    droplet_addresses: list[pulumi.Output[str]]
    """Every droplet's own IPv4 address, in the order of `droplet_ids`."""
    public_ipv4: pulumi.Output[str]
    """The site's address, in its DNS records (and its certificate, without a domain): the Reserved IP or the
    balancer's."""
    balancer_address: pulumi.Output[str] | None
    """The Load Balancer's IPv4 address; None for one droplet."""
    state_volume: pulumi.Output[dict[str, str]] | None
    """The Volume holding the app's state: its name, id and mount point; None without one."""

    def __init__(self, name: str, args: WebServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:infra:WebServer", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        # On a production stack, what holds the app, its address and its data refuses `pulumi destroy`.
        kept = pulumi.ResourceOptions(parent=self, protect=settings.production)

        volume = None
        if settings.volume_name is not None:
            state_dir = ServerLayout(settings.app_name).state_dir
            # No file system here: the droplet makes one only on an empty Volume, and never again.
            volume = digitalocean.Volume(
                f"{name}-state",
                name=settings.volume_name,
                region=settings.region,
                size=settings.volume_size,
                description=f"{settings.app_name}: {state_dir}",
                tags=list(args.tags),
                opts=kept,
            )

        keys = [
            digitalocean.SshKey(f"{name}-key-{index}", public_key=key, name=f"{name}-key-{index}", opts=child)
            for index, key in enumerate(settings.ssh_public_keys)
        ]
        droplets = [
            digitalocean.Droplet(
                droplet_name(name, index),
                image=settings.image,
                size=settings.size,
                region=settings.region,
                ipv6=True,
                monitoring=True,
                # Turned on and off in place; turning them off deletes the backups taken so far.
                backups=settings.droplet_backups,
                # The provider refuses a policy without backups.
                backup_policy=WEEKLY_BACKUPS if settings.droplet_backups else None,
                ssh_keys=[key.fingerprint for key in keys] + list(settings.ssh_key_fingerprints),
                tags=list(args.tags),
                user_data=args.user_data,
                # Attached from the first boot, so cloud-init mounts it before anything writes there.
                volume_ids=[volume.id] if volume is not None else None,
                # A droplet moves into a VPC only by being created there.
                vpc_uuid=args.vpc_id,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=settings.production,
                    # A change to user-data would replace the droplet and everything on it. The
                    # server configuration it carries is re-applied by every deploy instead.
                    ignore_changes=["userData"],
                    # A Volume is attached to one droplet at a time: a replacement comes after the old one is gone.
                    delete_before_replace=volume is not None,
                ),
            )
            for index in range(settings.instances)
        ]
        droplet_ids = [droplet.id for droplet in droplets]

        balancer = None
        if settings.behind_balancer:
            assert args.vpc_id is not None, "droplets behind a balancer share its VPC"
            certificate = fleet.site_certificate(f"{name}-certificate", settings, child) if settings.https else None
            balancer = fleet.load_balancer(f"{name}-balancer", settings, droplet_ids, args.vpc_id, certificate, kept)
            # Visitors' HTTP and the health check only from the balancer: a droplet's own address serves nobody.
            web_rules = [
                digitalocean.FirewallInboundRuleArgs(
                    protocol="tcp", port_range=str(port), source_load_balancer_uids=[balancer.id]
                )
                for port in (fleet.DROPLET_HTTP_PORT, BALANCER_CHECK.port)
            ]
        else:
            web_rules = [
                digitalocean.FirewallInboundRuleArgs(protocol="tcp", port_range="80", source_addresses=ANYWHERE),
                digitalocean.FirewallInboundRuleArgs(protocol="tcp", port_range="443", source_addresses=ANYWHERE),
            ]
        digitalocean.Firewall(
            f"{name}-firewall",
            droplet_ids=[droplet_id.apply(int) for droplet_id in droplet_ids],
            inbound_rules=[
                digitalocean.FirewallInboundRuleArgs(
                    protocol="tcp", port_range="22", source_addresses=list(settings.admin_cidrs)
                ),
                *web_rules,
                digitalocean.FirewallInboundRuleArgs(protocol="icmp", source_addresses=ANYWHERE),
            ],
            outbound_rules=[
                digitalocean.FirewallOutboundRuleArgs(
                    protocol=protocol, port_range=ports, destination_addresses=ANYWHERE
                )
                for protocol, ports in (("tcp", "1-65535"), ("udp", "1-65535"), ("icmp", None))
            ],
            opts=child,
        )

        if balancer is not None:
            site_ipv4 = balancer.ip
            # The balancer has an IPv4 address only (its network_stack is left at IPV4; DUALSTACK exists in the
            # SDK, but not checked here): no AAAA record, since a droplet's own IPv6 would bypass the balancer.
            site_ipv6 = None
        else:
            reserved_ip = digitalocean.ReservedIp(f"{name}-address", region=settings.region, opts=kept)
            digitalocean.ReservedIpAssignment(
                f"{name}-address-assignment",
                ip_address=reserved_ip.ip_address,
                droplet_id=droplets[0].id.apply(int),
                opts=child,
            )
            site_ipv4 = reserved_ip.ip_address
            site_ipv6 = droplets[0].ipv6_address
        if settings.dns_zone is not None:
            records: list[tuple[str, pulumi.Output[str]]] = [("A", site_ipv4)]
            if site_ipv6 is not None:
                records.append(("AAAA", site_ipv6))
            for host in settings.host_names:
                # The record's name inside its zone: "@" for the zone's own name.
                record = host.removesuffix(settings.dns_zone).rstrip(".") or "@"
                for kind, value in records:
                    digitalocean.DnsRecord(
                        f"{name}-dns-{kind.lower()}-{record.replace('@', 'apex')}",
                        domain=settings.dns_zone,
                        type=kind,
                        name=record,
                        value=value,
                        ttl=300,
                        opts=child,
                    )

        self.droplet_id = droplets[0].id
        self.ipv4_address = droplets[0].ipv4_address
        self.ipv6_address = droplets[0].ipv6_address
        self.droplet_ids = droplet_ids
        self.droplet_addresses = [droplet.ipv4_address for droplet in droplets]
        self.public_ipv4 = site_ipv4
        self.balancer_address = balancer.ip if balancer is not None else None
        self.state_volume = (
            pulumi.Output.all(volume.name, volume.id).apply(
                lambda values: {"name": values[0], "id": values[1], "mount_point": state_dir}
            )
            if volume is not None
            else None
        )
        self.register_outputs(
            {
                "droplet_id": self.droplet_id,
                "ipv4_address": self.ipv4_address,
                "ipv6_address": self.ipv6_address,
                "droplet_ids": self.droplet_ids,
                "droplet_addresses": self.droplet_addresses,
                "public_ipv4": self.public_ipv4,
                "balancer_address": self.balancer_address,
                "state_volume": self.state_volume,
            }
        )


def droplet_name(name: str, index: int) -> str:
    """The logical name of a WebServer's droplet: `NAME-droplet` for the first, `NAME-2-droplet` and on after it."""
    return f"{name}-droplet" if index == 0 else f"{name}-{index + 1}-droplet"


def stack_droplets(stack_tag: str) -> list[digitalocean.outputs.GetDropletsDropletResult]:
    """The stack's droplets as DigitalOcean has them now (by the stack's tag), before the program declares any."""
    found = digitalocean.get_droplets(filters=[digitalocean.GetDropletsFilterArgs(key="tags", values=[stack_tag])])
    return list(found.droplets)


def check_volume_stays(settings: Settings, stack_tag: str) -> None:
    """Refuse a new `region` while the stack's droplet and its Volume are elsewhere, before anything changes.

    A Volume cannot move between regions: the change would replace it, empty, and
    the app's data with it. Raises `SettingsError` saying how to move instead.
    """
    if settings.behind_balancer:
        check_no_volume_left_behind(settings, stack_tag)
    if settings.volume_name is None:
        return
    elsewhere = sorted({droplet.region for droplet in stack_droplets(stack_tag)} - {settings.region})
    if elsewhere:
        state_dir = ServerLayout(settings.app_name).state_dir
        raise SettingsError(
            [
                f"flask-droplet:region = {settings.region!r}: expected {elsewhere[0]!r}, where this stack's droplet "
                f"and its Volume {settings.volume_name} are. A Volume cannot move between regions, and a new one "
                f"would start empty. To move: stand up a new stack in {settings.region}, stop the app on both "
                f"(sudo systemctl stop {settings.app_name}.socket {settings.app_name}.service), copy {state_dir} "
                f"across (sudo tar -C {state_dir} -cpf - . on the old, sudo tar -C {state_dir} -xpf - on the new), "
                "deploy the new stack again, then move the domain and destroy the old stack."
            ]
        )


def check_no_volume_left_behind(settings: Settings, stack_tag: str) -> None:
    """Refuse `instances` > 1 while the stack's one droplet keeps the app's state on a Volume.

    Droplets behind a balancer have no Volume: the update would delete it, and the SQLite
    file or uploads on it with it. Raises `SettingsError` saying how to grow instead.
    """
    if any(droplet.volume_ids for droplet in stack_droplets(stack_tag)):
        state_dir = ServerLayout(settings.app_name).state_dir
        raise SettingsError(
            [
                f"flask-droplet:instances = {settings.instances}: expected 1 while this stack's droplet keeps "
                f"{state_dir} on a Volume. Droplets behind a balancer have none: this update would delete it, "
                "and the data on it. To grow: back the data up (deploy.sh backup), stand up the new stack with "
                "instances and database postgres, move the data into its database, then move the domain and "
                "destroy the old stack."
            ]
        )


def droplet_tags(project: str, stack: str) -> tuple[str, ...]:
    """Tags naming the project and the stack; DigitalOcean allows letters, digits, ':', '-' and '_'."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9:_-]", "-", text)[:255]

    return (clean(project), clean(f"{project}:{stack}"))
