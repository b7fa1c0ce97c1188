"""What the DigitalOcean account holds already, read before any resource is declared.

Some changes are right or wrong only against what exists: a region DigitalOcean no
longer opens to new droplets, a region whose first VPC this stack would make (and so
its default, which cannot be deleted), a Volume still attached to the droplet that is
to let go of it, a record already in the zone under the site's name. `survey_account`
reads each with an invoke (the provider's data sources) and reports every problem
together, as `parse_settings` does, so nothing is created, changed or replaced before
the user has seen them all. It returns what the components need to know of the stack's
droplets: which of them this update replaces, when the user allowed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi_digitalocean as digitalocean
from pulumi_digitalocean.outputs import GetDropletsDropletResult

from components.fleet import needs_private_network
from core.settings import Settings, SettingsError, ssh_key_fingerprint

#: The provider's answer when a region has no default VPC yet (`findRegionDefaultVPC`,
#: terraform-provider-digitalocean `digitalocean/vpc/datasource_vpc.go`).
NO_DEFAULT_VPC = "unable to find default VPC"
#: The provider's answer when no Volume has a name (`datasource_volume.go`).
NO_VOLUME = "no volumes found with name"


@dataclass(frozen=True)
class AccountState:
    """What the program needs to know of the stack's existing droplets."""

    droplets: tuple[GetDropletsDropletResult, ...]
    """The stack's droplets as DigitalOcean lists them (by the stack's tag)."""
    replaced: frozenset[int]
    """Positions of the droplets this update replaces (allowed with `allowReplace`): they are created with the
    current user-data and SSH keys, not those the first droplet was created with."""


def account_key_name(stack_tag: str, fingerprint: str) -> str:
    """The name a stack's SSH key goes by in the account: the stack's tag, then the key's fingerprint.

    By it the next run finds the keys the stack registered, as DigitalOcean lists them.
    """
    return f"{stack_tag} {fingerprint}"


def stack_droplets(stack_tag: str) -> list[GetDropletsDropletResult]:
    """The stack's droplets as DigitalOcean has them now (by the stack's tag), before the program declares any."""
    found = digitalocean.get_droplets(filters=[digitalocean.GetDropletsFilterArgs(key="tags", values=[stack_tag])])
    return list(found.droplets)


def droplet_at(droplets: tuple[GetDropletsDropletResult, ...], logical_name: str) -> GetDropletsDropletResult | None:
    """The existing droplet Pulumi named from `logical_name` (its name plus a random suffix), if any."""
    pattern = re.compile(rf"^{re.escape(logical_name)}-[0-9a-z]+$")
    return next((d for d in droplets if d.name and pattern.match(d.name)), None)


def survey_account(
    settings: Settings,
    stack_tag: str,
    droplet_names: list[str],
    problems: list[str] | None = None,
    default_stack_tag: str | None = None,
) -> AccountState:
    """Check the update against the account; raises `SettingsError` with every problem found.

    `droplet_names` are the logical names of the droplets the program declares, the first first;
    `problems` are those already found on this machine (the SSH agent), reported with the others;
    `default_stack_tag` is the tag the stack has without `stackName` (PROJECT:STACK).
    """
    problems = list(problems or [])
    droplets = tuple(stack_droplets(stack_tag))
    region = region_problems(settings, droplets)
    if region:
        # In a region that takes no droplets, nothing else can be judged.
        raise SettingsError([*problems, *region])
    problems += volume_problems(settings, droplets)
    if not droplets and default_stack_tag not in (None, stack_tag) and settings.volume_name is not None:
        problems += renamed_stack_problems(settings, stack_tag, default_stack_tag or "")
    default_vpc = region_default_vpc(settings.region) if needs_private_network(settings) else None
    problems += default_vpc_problems(settings, stack_tag, default_vpc)
    replacing, replacement_problems = replacements(
        settings, droplets, droplet_names, default_vpc, key_changes(settings, stack_tag) if droplets else ""
    )
    problems += replacement_problems
    problems += dns_problems(settings, droplets)
    if problems:
        raise SettingsError(problems)
    return AccountState(droplets=droplets, replaced=replacing)


def region_problems(settings: Settings, droplets: tuple[GetDropletsDropletResult, ...] = ()) -> list[str]:
    """A region must take new droplets now: DigitalOcean's list, not a copy of it (which goes stale).

    A stack whose droplets are there already keeps deploying to them in a region closed since.
    """
    regions = digitalocean.get_regions().regions
    available = sorted(region.slug for region in regions if region.available)
    if settings.region in available or any(droplet.region == settings.region for droplet in droplets):
        return []
    return [
        f"flask-droplet:region = {settings.region!r}: expected a region that takes new droplets now, one of "
        f"{', '.join(available)}"
    ]


def region_default_vpc(region: str) -> digitalocean.GetVpcResult | None:
    """The region's default VPC, or None when the account has none there yet."""
    try:
        return digitalocean.get_vpc(region=region)
    except Exception as err:
        if NO_DEFAULT_VPC in str(err):
            return None
        raise


def default_vpc_problems(
    settings: Settings, stack_tag: str, default_vpc: digitalocean.GetVpcResult | None
) -> list[str]:
    """Refuse to make the region's first VPC: DigitalOcean makes it the default, and never deletes a default.

    "If you do not currently have a VPC network in a specific datacenter region, the first one
    that you create will be set as the default for that region. The default VPC for a region
    cannot be changed or deleted" (DigitalOcean's API reference, `vpcs_create`). Its delete
    answers 403, which the provider retries for its delete timeout and then fails
    (`resourceDigitalOceanVPCDelete`), so `pulumi destroy` could never finish; and every
    droplet made later in the region without a VPC would join this stack's. Another VPC of
    the region can be made the default ("update the `default` field of another VPC network in
    the same region", the `default` field's description), which frees this one.
    """
    if not needs_private_network(settings):
        return []
    if default_vpc is None:
        return [
            f"flask-droplet:region = {settings.region!r}: this account has no VPC in {settings.region} yet, and "
            "the first VPC of a region becomes its default, which DigitalOcean never deletes: this stack's VPC "
            "would be it, and pulumi destroy could not finish. Make the region's default first (doctl vpcs "
            f"create --name default-{settings.region} --region {settings.region}, or any droplet created there "
            "without a VPC), then run pulumi up again"
        ]
    if (default_vpc.description or "").startswith(f"{stack_tag}:"):
        return [
            f"flask-droplet:region = {settings.region!r}: this stack's VPC ({default_vpc.name}) is the region's "
            "default, which DigitalOcean never deletes, so pulumi destroy could not finish. Make another VPC of "
            f"{settings.region} the default (doctl vpcs create --name default-{settings.region} --region "
            f"{settings.region}, then doctl vpcs update ITS_ID --default=true), then run pulumi up again"
        ]
    return []


def volume_problems(settings: Settings, droplets: tuple[GetDropletsDropletResult, ...]) -> list[str]:
    """A Volume moves nowhere, is never deleted while attached, and is renamed only by replacing it, empty."""
    attached = [volume_id for droplet in droplets for volume_id in (droplet.volume_ids or [])]
    state_dir = settings.layout.state_dir
    if settings.behind_balancer and attached:
        return [
            f"flask-droplet:instances = {settings.instances}: expected 1 while this stack's droplet keeps "
            f"{state_dir} on a Volume. Droplets behind a balancer have none: this update would delete it, "
            "and the data on it. To grow: back the data up (deploy.sh backup), stand up the new stack with "
            "instances and database postgres, move the data into its database, then move the domain and "
            "destroy the old stack."
        ]
    if settings.volume_name is None:
        if attached:
            # Leaving out volume_ids changes nothing (Optional and Computed in `resource_droplet.go`), so the
            # Volume stays attached and its delete is refused (409): the update would fail half done.
            return [
                f"flask-droplet:volumeSize = {settings.volume_size}: this stack's droplet keeps {state_dir} on a "
                "Volume, and 0 would delete it with the app's data; DigitalOcean also refuses to delete a Volume "
                "still attached. To keep the data on the droplet's own disk instead: back it up (deploy.sh "
                "backup), detach the Volume (doctl compute volume-action detach VOLUME_ID DROPLET_ID), then run "
                "pulumi up again; or set volumeSize back to its size"
            ]
        return []
    elsewhere = sorted({droplet.region for droplet in droplets} - {settings.region})
    if elsewhere:
        return [
            f"flask-droplet:region = {settings.region!r}: expected {elsewhere[0]!r}, where this stack's droplet "
            f"and its Volume {settings.volume_name} are. A Volume cannot move between regions, and a new one "
            f"would start empty. To move: stand up a new stack in {settings.region}, stop the app on both "
            f"(sudo systemctl stop {settings.app_name}.socket {settings.app_name}.service), copy {state_dir} "
            f"across (sudo tar -C {state_dir} -cpf - . on the old, sudo tar -C {state_dir} -xpf - on the new), "
            "deploy the new stack again, then move the domain and destroy the old stack."
        ]
    if attached and not volume_named(settings.volume_name, settings.region):
        # The Volume's name comes from appName and the stack, and the provider renames a Volume only by
        # replacing it (`name` is ForceNew in `resource_volume.go`).
        return [
            f"flask-droplet:appName = {settings.app_name!r}: this stack's droplet holds a Volume, but none named "
            f"{settings.volume_name} is in {settings.region}: the Volume is named after appName, and a new "
            "name would replace it with an empty one, the app's data lost. Set appName back to the name the "
            "stack was created with"
        ]
    return []


def renamed_stack_problems(settings: Settings, stack_tag: str, default_stack_tag: str) -> list[str]:
    """A `stackName` given to a stack that has droplets and a Volume under its default name.

    The tag finds the stack's droplets and the Volume is named after the stack: a new name finds
    none of them, and would replace the Volume with an empty one. Droplets under the default tag
    may also be another checkout's (the reason for `stackName`), so `allowReplace` goes ahead.
    """
    if settings.allow_replace or not any(droplet.volume_ids for droplet in stack_droplets(default_stack_tag)):
        return []
    return [
        f"flask-droplet:stackName = {settings.stack_name!r}: no droplet is tagged {stack_tag}, but droplets "
        f"tagged {default_stack_tag} hold a Volume. If they are this stack's, a new stackName would replace "
        f"its Volume with an empty {settings.volume_name}, the app's data lost: leave stackName empty. If they "
        "are another checkout's, set allowReplace to true for this first run"
    ]


def volume_named(name: str, region: str) -> bool:
    try:
        digitalocean.get_volume(name=name, region=region)
    except Exception as err:
        if NO_VOLUME in str(err):
            return False
        raise
    return True


def key_changes(settings: Settings, stack_tag: str) -> str:
    """How `sshPublicKeys` differs from the keys the stack registered (by their names in the account), or "".

    A droplet's keys reach its deploy user's authorized_keys only when it is created (DigitalOcean's
    registered keys and cloud-init's `ssh_authorized_keys`), and the droplet keeps the list it was
    created with (`ignore_changes`): a key added or removed reaches a droplet only in a new one.
    A stack whose keys have no such names yet (named before by position) shows no change.
    """
    prefix = account_key_name(stack_tag, "")
    registered = {key.fingerprint for key in digitalocean.get_ssh_keys().ssh_keys if key.name.startswith(prefix)}
    if not registered:
        return ""
    wanted = {ssh_key_fingerprint(key) for key in settings.ssh_public_keys}
    changes = [f"SSH key {fingerprint} added" for fingerprint in sorted(wanted - registered)]
    changes += [f"SSH key {fingerprint} removed" for fingerprint in sorted(registered - wanted)]
    return ", ".join(changes)


def replacements(
    settings: Settings,
    droplets: tuple[GetDropletsDropletResult, ...],
    droplet_names: list[str],
    default_vpc: digitalocean.GetVpcResult | None,
    keys_changed: str = "",
) -> tuple[frozenset[int], list[str]]:
    """The droplets this update replaces, and a problem for each unless `allowReplace` says to go ahead.

    The provider replaces a droplet for a new `image`, `region` or `vpc_uuid` (ForceNew in
    `resource_droplet.go`); `size` is a resize in place. The SSH keys and user-data are left as
    the droplet was created with (`ignore_changes` in `components/webserver.py`), so new keys
    (`keys_changed`, from `key_changes`) reach the droplets only by replacing them.
    """
    replaced: set[int] = set()
    reasons: list[str] = []
    for index, logical_name in enumerate(droplet_names):
        existing = droplet_at(droplets, logical_name)
        if existing is None:
            continue
        changes = []
        # A Volume's stack moves region only by a new stack: `volume_problems` refuses it whatever allowReplace says.
        if existing.region and existing.region != settings.region and settings.volume_name is None:
            changes.append(f"region {existing.region} -> {settings.region}")
        # The data source names the image by its slug, or by its id when the image has none
        # (`flattenDigitalOceanDroplet` in `droplet/droplets.go`): an id against the program's slug
        # cannot be compared, so it counts as no change.
        if (
            existing.image
            and existing.image != settings.image
            and not (existing.image.isdigit() and not settings.image.isdigit())
        ):
            changes.append(f"image {existing.image} -> {settings.image}")
        if (
            needs_private_network(settings)
            and default_vpc is not None
            and existing.vpc_uuid
            and existing.vpc_uuid == default_vpc.id
        ):
            changes.append("into the stack's VPC")
        if keys_changed:
            changes.append(keys_changed)
        if changes:
            replaced.add(index)
            reasons.append(f"{logical_name} ({', '.join(changes)})")
    if not replaced or settings.allow_replace:
        return frozenset(replaced), []
    lost = "what is on their own disks is lost"
    if settings.volume_name is not None:
        lost += f" (the Volume {settings.volume_name} stays)"
    if settings.database == "postgres" and any("region" in reason for reason in reasons):
        lost += "; the stack's VPC and its database cluster are replaced with them, and the database is lost"
    return frozenset(replaced), [
        "flask-droplet:allowReplace = false: DigitalOcean cannot change these droplets in place, only replace "
        f"them: {'; '.join(reasons)}. Each new droplet boots from the current user-data, and {lost}. Set "
        "allowReplace to true for this one run to go ahead (pulumi preview shows the replacements), or undo the change"
    ]


def dns_problems(settings: Settings, droplets: tuple[GetDropletsDropletResult, ...]) -> list[str]:
    """Records the zone holds already under the site's names, which the program's records would sit beside.

    DigitalOcean adds a record beside any others of the name: a second A record is round-robin
    DNS (half the visitors sent to the old address), and a CNAME of the name makes it refuse
    the A record (422). The program owns one A (and, for one droplet, one AAAA at the droplet's
    address) per name; anything else there is refused until removed.
    """
    if settings.dns_zone is None:
        return []
    names = [host.removesuffix(settings.dns_zone).rstrip(".") or "@" for host in settings.host_names]
    found = digitalocean.get_records(
        domain=settings.dns_zone, filters=[digitalocean.GetRecordsFilterArgs(key="name", values=names)]
    ).records
    own_ipv6 = {droplet.ipv6_address for droplet in droplets if droplet.ipv6_address}
    problems = []
    for name in names:
        here = [record for record in found if record.name == name]
        cname = [record for record in here if record.type == "CNAME"]
        a_records = [record for record in here if record.type == "A"]
        # A stack that has droplets made its own A record; one with none yet has made nothing.
        foreign = cname + (a_records[1:] if droplets else a_records)
        foreign += [
            record for record in here if record.type == "AAAA" and (not droplets or record.value not in own_ipv6)
        ]
        if foreign:
            shown = ", ".join(f"{record.type} {record.value}" for record in foreign)
            problems.append(
                f"flask-droplet:dnsZone = {settings.dns_zone!r}: the zone already has {shown} at {name!r}, which "
                "the site's records would sit beside (a second address is round-robin DNS, and a CNAME makes "
                "DigitalOcean refuse the record). Delete them (doctl compute domain records delete "
                f"{settings.dns_zone} RECORD_ID), then run pulumi up again"
            )
    return problems
