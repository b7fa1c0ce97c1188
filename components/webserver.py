"""`WebServer`: the droplets, their SSH keys, their Cloud Firewall and the site's address."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_digitalocean as digitalocean

from components import fleet
from components.account import account_key_name, record_name
from components.hostkey import SshHostKey, SshHostKeyArgs
from core.balancer import BALANCER_CHECK
from core.droplets import Member, Origin, members
from core.settings import Settings, ssh_key_fingerprint
from core.ssh_host_keys import HostKeys

ANYWHERE = ["0.0.0.0/0", "::/0"]
#: Weekly backups: without a policy DigitalOcean takes daily ones, at 30% of the droplet's price
#: instead of 20%. In a fixed window (4 hours from Sunday 04:00 UTC): a backup slows the disk's
#: writes while it runs, so when it runs is worth knowing.
WEEKLY_BACKUPS = digitalocean.DropletBackupPolicyArgs(plan="weekly", weekday="SUN", hour=4)


@dataclass(frozen=True)
class WebServerArgs:
    settings: Settings
    """Validated stack settings."""
    user_data_for: Callable[[HostKeys], str]
    """Renders a droplet's cloud-init user-data around the host keys made for it (`render_user_data`)."""
    tags: tuple[str, ...]
    """DigitalOcean tags for the droplets (project and stack)."""
    vpc_id: pulumi.Input[str] | None = None
    """The stack's VPC (`components/fleet.py`), for a balancer or a database cluster; None for none."""
    replaced: frozenset[int] = frozenset()
    """Positions of the droplets this update replaces (`components/account.py`, allowed by `allowReplace`): those
    take the current user-data and SSH keys, which every other droplet keeps as it was created."""
    registered_keys: frozenset[str] | None = None
    """Fingerprints of the `sshPublicKeys` the stack registers in the account (`components/account.py`); the
    others the account holds already. None: all of them."""


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

    Its droplets are the stack's `members` (`core/droplets.py`), the first first: the first is
    `NAME-droplet` whatever the count, so growing from one droplet to several keeps it (and its
    SSH keys, firewall and records) as the same resources.
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
    host_keys: list[pulumi.Output[str]]
    """Every droplet's Ed25519 host key (`ssh-ed25519 AAAA...`), in the order of `droplet_ids`: what SSH pins."""
    public_ipv4: pulumi.Output[str]
    """The site's address, in its DNS records (and its certificate, without a domain): the Reserved IP or the
    balancer's."""
    balancer_address: pulumi.Output[str] | None
    """The Load Balancer's IPv4 address; None for one droplet."""
    state_volume: pulumi.Output[dict[str, str]] | None
    """The Volume holding the app's state: its name, id and mount point; None without one."""

    def __init__(self, name: str, args: WebServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:infra:WebServer", name, None, opts)
        self._name, self._args, self._settings = name, args, args.settings
        keys = self._account_keys()
        volume = self._state_volume(keys)
        droplets, host_keys = self._droplets(keys, volume)
        droplet_ids = [droplet.id for droplet in droplets]
        balancer = self._balancer(droplet_ids)
        self._firewall(droplet_ids, balancer)
        site_ipv4, site_ipv6 = self._site_address(droplets[0], balancer)
        self._dns_records(site_ipv4, site_ipv6)

        self.droplet_id = droplets[0].id
        self.ipv4_address = droplets[0].ipv4_address
        self.ipv6_address = droplets[0].ipv6_address
        self.droplet_ids = droplet_ids
        self.droplet_addresses = [droplet.ipv4_address for droplet in droplets]
        self.host_keys = [host_key.ed25519_public for host_key in host_keys]
        self.public_ipv4 = site_ipv4
        self.balancer_address = balancer.ip if balancer is not None else None
        state_dir = self._settings.layout.state_dir
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
                "host_keys": self.host_keys,
                "public_ipv4": self.public_ipv4,
                "balancer_address": self.balancer_address,
                "state_volume": self.state_volume,
            }
        )

    def _child(self, **options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **options)

    def _kept(self, **options: Any) -> pulumi.ResourceOptions:
        """On a production stack, what holds the app, its address and its data refuses `pulumi destroy`."""
        return self._child(protect=self._settings.server.production, **options)

    def _account_keys(self) -> list[digitalocean.SshKey]:
        """The `sshPublicKeys` this stack registers in the account: those it does not hold already.

        Each key is named by its fingerprint, not its place in the list, so removing the first key leaves
        the others as they are. A key whose comment changes keeps its fingerprint and stays the key
        registered: `public_key` is ForceNew and its diff ignores only surrounding whitespace
        (`resource_ssh_key.go`), so a new comment would otherwise replace it, and DigitalOcean refuses to
        register one key twice. The alias is the name by position that earlier versions gave the key at
        the same place. A key the account holds already (the user's own, or another stack's) is not
        registered again: DigitalOcean would refuse it.
        """
        registered = self._args.registered_keys
        fingerprints = [ssh_key_fingerprint(key) for key in self._settings.server.ssh_public_keys]
        return [
            digitalocean.SshKey(
                key_name(self._name, fingerprint),
                public_key=key,
                name=account_key_name(self._args.tags[-1], fingerprint),
                opts=self._child(
                    aliases=[pulumi.Alias(name=f"{self._name}-key-{index}")], ignore_changes=["publicKey"]
                ),
            )
            for index, (key, fingerprint) in enumerate(
                zip(self._settings.server.ssh_public_keys, fingerprints, strict=True)
            )
            if registered is None or fingerprint in registered
        ]

    def _state_volume(self, keys: list[digitalocean.SshKey]) -> digitalocean.Volume | None:
        """The Volume that holds the app's state, and outlives its droplet; None with `volumeSize` 0.

        No file system here: the droplet makes one only on an empty Volume, and never again. The
        description is ForceNew in `resource_volume.go` ("Update-ability Coming Soon"): the one written
        when the Volume was made stays, so no later change of appName replaces the Volume through it (its
        name is guarded in `components/account.py`). After the keys: a key the account refuses leaves
        nothing that is paid for.
        """
        settings = self._settings
        if settings.server.volume_name is None:
            return None
        return digitalocean.Volume(
            f"{self._name}-state",
            name=settings.server.volume_name,
            region=settings.server.region,
            size=settings.server.volume_size,
            description=f"{settings.app.name}: {settings.layout.state_dir}",
            tags=list(self._args.tags),
            opts=self._kept(ignore_changes=["description"], depends_on=keys),
        )

    def _droplets(
        self, keys: list[digitalocean.SshKey], volume: digitalocean.Volume | None
    ) -> tuple[list[digitalocean.Droplet], list[SshHostKey]]:
        """Each droplet with the host keys made for it before it, the first first."""
        droplets: list[digitalocean.Droplet] = []
        host_keys: list[SshHostKey] = []
        for member in members(self._settings):
            replaced = member.index in self._args.replaced
            host_key = self._host_key(member, replaced)
            host_keys.append(host_key)
            droplets.append(self._droplet(member, replaced, host_key, [*keys, *droplets[-1:]], volume))
        return droplets, host_keys

    def _host_key(self, member: Member, replaced: bool) -> SshHostKey:
        """Made before the droplet, for its user-data. Like the droplet's user-data, the keys stay as they were
        made unless this update replaces the droplet: a new droplet (a new `Origin`), new keys."""
        origin = Origin.wanted(self._settings, fleet.needs_private_network(self._settings))
        return SshHostKey(
            f"{member.droplet_name(self._name)}-host-key",
            SshHostKeyArgs(generation=origin.generation),
            opts=self._child(ignore_changes=[] if replaced else ["generation"]),
        )

    def _droplet(
        self,
        member: Member,
        replaced: bool,
        host_key: SshHostKey,
        after: list[pulumi.Resource],
        volume: digitalocean.Volume | None,
    ) -> digitalocean.Droplet:
        settings = self._settings
        fingerprints = [ssh_key_fingerprint(key) for key in settings.server.ssh_public_keys]
        return digitalocean.Droplet(
            member.droplet_name(self._name),
            image=settings.server.image,
            size=settings.server.size,
            # A new size is a resize in place with the droplet powered off for a few minutes, not a
            # replacement; without the disk's resize it can be undone (`resize_disk` defaults to true in
            # `resource_droplet.go`, and a disk that grew never shrinks: a smaller size then fails with 422).
            resize_disk=False,
            region=settings.server.region,
            ipv6=True,
            monitoring=True,
            # Turned on and off in place; turning them off deletes the backups taken so far.
            backups=settings.server.droplet_backups,
            # The provider refuses a policy without backups.
            backup_policy=WEEKLY_BACKUPS if settings.server.droplet_backups else None,
            # The fingerprints as computed here, not the keys' outputs: the same list whatever the keys'
            # order or names, known in preview.
            ssh_keys=fingerprints + list(settings.server.ssh_key_fingerprints),
            tags=list(self._args.tags),
            user_data=host_key.keys.apply(self._args.user_data_for),
            # Attached from the first boot, so cloud-init mounts it before anything writes there.
            volume_ids=[volume.id] if volume is not None else None,
            # A droplet moves into a VPC only by being created there.
            vpc_uuid=self._args.vpc_id,
            opts=self._kept(
                # A change to user-data or to the SSH keys would replace the droplet and everything on it
                # (both are ForceNew in `resource_droplet.go`). The server configuration it carries is
                # re-applied by every deploy instead, the deploy user's authorized keys among it. Its image
                # (ForceNew too) is new only when `components/account.py` says so: the provider would take the
                # same image under its other name (slug or id) for a new one. A droplet this update replaces
                # is created with the current ones: Pulumi carries an ignored input's old value into a
                # replacement (`processIgnoreChanges` in its engine's step generator).
                ignore_changes=[] if replaced else ["image", "userData", "sshKeys"],
                # A Volume is attached to one droplet at a time: a replacement comes after the old one is gone.
                delete_before_replace=volume is not None,
                # The keys first; and one droplet after another, so a resize (which powers the droplet off)
                # takes one droplet out of the balancer at a time, never all of them.
                depends_on=after,
            ),
        )

    def _balancer(self, droplet_ids: list[pulumi.Output[str]]) -> digitalocean.LoadBalancer | None:
        """With several droplets, the Load Balancer in front of them (and its certificate); None for one."""
        settings = self._settings
        if not settings.server.behind_balancer:
            return None
        assert self._args.vpc_id is not None, "droplets behind a balancer share its VPC"
        certificate = (
            fleet.site_certificate(f"{self._name}-certificate", settings, self._child())
            if settings.app.site.https
            else None
        )
        return fleet.load_balancer(
            f"{self._name}-balancer", settings, droplet_ids, self._args.vpc_id, certificate, self._kept()
        )

    def _firewall(self, droplet_ids: list[pulumi.Output[str]], balancer: digitalocean.LoadBalancer | None) -> None:
        """SSH from the admin networks; the web from anywhere, or behind a balancer from the balancer alone."""
        if balancer is not None:
            # Visitors' HTTP and the health check only from the balancer: a droplet's own address serves nobody.
            web_rules = [
                digitalocean.FirewallInboundRuleArgs(
                    protocol="tcp", port_range=str(port), source_load_balancer_uids=[balancer.id]
                )
                for port in (fleet.DROPLET_HTTP_PORT, BALANCER_CHECK.port)
            ]
        else:
            web_rules = [
                digitalocean.FirewallInboundRuleArgs(protocol="tcp", port_range=port, source_addresses=ANYWHERE)
                for port in ("80", "443")
            ]
        digitalocean.Firewall(
            f"{self._name}-firewall",
            droplet_ids=[droplet_id.apply(int) for droplet_id in droplet_ids],
            inbound_rules=[
                digitalocean.FirewallInboundRuleArgs(
                    protocol="tcp", port_range="22", source_addresses=list(self._settings.server.admin_cidrs)
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
            opts=self._child(),
        )

    def _site_address(
        self, first: digitalocean.Droplet, balancer: digitalocean.LoadBalancer | None
    ) -> tuple[pulumi.Output[str], pulumi.Output[str] | None]:
        """The site's IPv4 address and, for one droplet, its IPv6: the balancer's, or a Reserved IP's.

        The balancer has an IPv4 address only (its network_stack is left at IPV4; DUALSTACK exists in
        the SDK, but not checked here): no AAAA record, since a droplet's own IPv6 would bypass it.
        """
        if balancer is not None:
            return balancer.ip, None
        reserved_ip = digitalocean.ReservedIp(
            f"{self._name}-address", region=self._settings.server.region, opts=self._kept()
        )
        digitalocean.ReservedIpAssignment(
            f"{self._name}-address-assignment",
            ip_address=reserved_ip.ip_address,
            droplet_id=first.id.apply(int),
            opts=self._child(),
        )
        return reserved_ip.ip_address, first.ipv6_address

    def _dns_records(self, site_ipv4: pulumi.Output[str], site_ipv6: pulumi.Output[str] | None) -> None:
        """With `dnsZone`, the site's names at its address (`components/account.py` checks the zone first)."""
        settings = self._settings
        if settings.app.site.dns_zone is None:
            return
        records: list[tuple[str, pulumi.Output[str]]] = [("A", site_ipv4)]
        if site_ipv6 is not None:
            records.append(("AAAA", site_ipv6))
        for host in settings.app.site.host_names:
            record = record_name(host, settings.app.site.dns_zone)
            for kind, value in records:
                digitalocean.DnsRecord(
                    f"{self._name}-dns-{kind.lower()}-{record.replace('@', 'apex')}",
                    domain=settings.app.site.dns_zone,
                    type=kind,
                    name=record,
                    value=value,
                    ttl=300,
                    opts=self._child(),
                )


def key_name(name: str, fingerprint: str) -> str:
    """The logical name of a WebServer's SSH key: `NAME-key-` and its MD5 fingerprint's hex digits."""
    return f"{name}-key-{fingerprint.replace(':', '')}"


def droplet_tags(project: str, stack: str) -> tuple[str, ...]:
    """Tags naming the project and the stack; DigitalOcean allows letters, digits, ':', '-' and '_'."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9:_-]", "-", text)[:255]

    return (clean(project), clean(f"{project}:{stack}"))
