"""`WebServer`: the droplet, its SSH keys and its Cloud Firewall."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as digitalocean

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
    """DigitalOcean tags for the droplet (project and stack)."""
    vpc_id: pulumi.Input[str] | None = None
    """The stack's VPC (`components/fleet.py`), for a database cluster; None for none."""


class WebServer(pulumi.ComponentResource):
    """An Ubuntu 24.04 droplet configured by cloud-init, behind a Cloud Firewall, at a Reserved IP.

    SSH is open only to the admin networks; HTTP and HTTPS to everyone. The
    Reserved IP is the site's address and the Volume holds the app's state: both
    stay when the droplet is replaced. With a `dns_zone`, the domain's A and AAAA
    records point at the server. On a production stack the droplet, the address
    and the Volume are protected from `pulumi destroy`.
    """

    droplet_id: pulumi.Output[str]
    ipv4_address: pulumi.Output[str]
    """The droplet's own address: how the deploy reaches it over SSH."""
    ipv6_address: pulumi.Output[str]
    public_ipv4: pulumi.Output[str]
    """The Reserved IP: the site's address, in its DNS records and its certificate."""
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
        droplet = digitalocean.Droplet(
            f"{name}-droplet",
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
        digitalocean.Firewall(
            f"{name}-firewall",
            droplet_ids=[droplet.id.apply(int)],
            inbound_rules=[
                digitalocean.FirewallInboundRuleArgs(
                    protocol="tcp", port_range="22", source_addresses=list(settings.admin_cidrs)
                ),
                digitalocean.FirewallInboundRuleArgs(protocol="tcp", port_range="80", source_addresses=ANYWHERE),
                digitalocean.FirewallInboundRuleArgs(protocol="tcp", port_range="443", source_addresses=ANYWHERE),
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

        reserved_ip = digitalocean.ReservedIp(f"{name}-address", region=settings.region, opts=kept)
        digitalocean.ReservedIpAssignment(
            f"{name}-address-assignment",
            ip_address=reserved_ip.ip_address,
            droplet_id=droplet.id.apply(int),
            opts=child,
        )
        if settings.dns_zone is not None:
            for host in settings.host_names:
                # The record's name inside its zone: "@" for the zone's own name.
                record = host.removesuffix(settings.dns_zone).rstrip(".") or "@"
                for kind, value in (("A", reserved_ip.ip_address), ("AAAA", droplet.ipv6_address)):
                    digitalocean.DnsRecord(
                        f"{name}-dns-{kind.lower()}-{record.replace('@', 'apex')}",
                        domain=settings.dns_zone,
                        type=kind,
                        name=record,
                        value=value,
                        ttl=300,
                        opts=child,
                    )

        self.droplet_id = droplet.id
        self.ipv4_address = droplet.ipv4_address
        self.ipv6_address = droplet.ipv6_address
        self.public_ipv4 = reserved_ip.ip_address
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
                "public_ipv4": self.public_ipv4,
                "state_volume": self.state_volume,
            }
        )


def check_volume_stays(settings: Settings, stack_tag: str) -> None:
    """Refuse a new `region` while the stack's droplet and its Volume are elsewhere, before anything changes.

    A Volume cannot move between regions: the change would replace it, empty, and
    the app's data with it. Raises `SettingsError` saying how to move instead.
    """
    if settings.volume_name is None:
        return
    found = digitalocean.get_droplets(filters=[digitalocean.GetDropletsFilterArgs(key="tags", values=[stack_tag])])
    elsewhere = sorted({droplet.region for droplet in found.droplets} - {settings.region})
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


def droplet_tags(project: str, stack: str) -> tuple[str, ...]:
    """Tags naming the project and the stack; DigitalOcean allows letters, digits, ':', '-' and '_'."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9:_-]", "-", text)[:255]

    return (clean(project), clean(f"{project}:{stack}"))
