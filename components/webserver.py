"""`WebServer`: the droplet, its SSH keys and its Cloud Firewall."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as digitalocean

from components.settings import Settings

ANYWHERE = ["0.0.0.0/0", "::/0"]


@dataclass(frozen=True)
class WebServerArgs:
    settings: Settings
    """Validated stack settings."""
    user_data: str
    """Rendered cloud-init user-data; holds no secret."""
    tags: tuple[str, ...]
    """DigitalOcean tags for the droplet (project and stack)."""


class WebServer(pulumi.ComponentResource):
    """An Ubuntu 24.04 droplet configured by cloud-init, behind a Cloud Firewall, at a Reserved IP.

    SSH is open only to the admin networks; HTTP and HTTPS to everyone. The
    Reserved IP is the site's address: it stays when the droplet is replaced. With
    a `dns_zone`, the domain's A and AAAA records point at the server.
    """

    droplet_id: pulumi.Output[str]
    ipv4_address: pulumi.Output[str]
    """The droplet's own address: how the deploy reaches it over SSH."""
    ipv6_address: pulumi.Output[str]
    public_ipv4: pulumi.Output[str]
    """The Reserved IP: the site's address, in its DNS records and its certificate."""

    def __init__(self, name: str, args: WebServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:infra:WebServer", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

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
            ssh_keys=[key.fingerprint for key in keys] + list(settings.ssh_key_fingerprints),
            tags=list(args.tags),
            user_data=args.user_data,
            opts=pulumi.ResourceOptions(
                parent=self,
                # A change to user-data would replace the droplet and everything on it. The
                # server configuration it carries is re-applied by every deploy instead.
                ignore_changes=["userData"],
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

        reserved_ip = digitalocean.ReservedIp(f"{name}-address", region=settings.region, opts=child)
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
        self.register_outputs(
            {
                "droplet_id": self.droplet_id,
                "ipv4_address": self.ipv4_address,
                "ipv6_address": self.ipv6_address,
                "public_ipv4": self.public_ipv4,
            }
        )


def droplet_tags(project: str, stack: str) -> tuple[str, ...]:
    """Tags naming the project and the stack; DigitalOcean allows letters, digits, ':', '-' and '_'."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9:_-]", "-", text)[:255]

    return (clean(project), clean(f"{project}:{stack}"))
