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

import dataclasses
import functools
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as digitalocean
from pulumi_digitalocean.outputs import GetDropletsDropletResult, GetSshKeysSshKeyResult

from components.config import ConfigError
from components.fleet import needs_private_network
from core.droplets import Origin, members
from core.settings import Settings, ssh_key_fingerprint

#: The provider's answer when a region has no default VPC yet (`findRegionDefaultVPC`,
#: terraform-provider-digitalocean `digitalocean/vpc/datasource_vpc.go`).
NO_DEFAULT_VPC = "unable to find default VPC"
#: The provider's answer when no Volume has a name (`datasource_volume.go`).
NO_VOLUME = "no volumes found with name"
#: The provider's API endpoint when neither `digitalocean:apiEndpoint` nor DIGITALOCEAN_API_URL names another.
API_ENDPOINT = "https://api.digitalocean.com"
#: How long the account's first read may take before the program says the API cannot be reached.
API_TIMEOUT_SECONDS = 30
#: Where a user makes an API token.
TOKENS_PAGE = "https://cloud.digitalocean.com/account/api/tokens"
#: How godo words an API error in the provider's messages: `GET URL: STATUS (request "ID") MESSAGE`.
_API_ERROR = re.compile(
    r"(?P<method>GET|POST|PUT|PATCH|DELETE) (?P<url>\S+): (?P<status>\d{3}) (?:\(request \"[^\"]*\"\) )?(?P<message>.*)"
)


def is_not_found(err: Exception) -> bool:
    """Whether a data source failed on DigitalOcean's 404: what it looked for is not in the account."""
    found = _API_ERROR.search(str(err))
    return found is not None and found["status"] == "404"


@dataclass(frozen=True)
class AccountState:
    """What the program needs to know of the account: the stack's droplets and keys."""

    settings: Settings
    """The settings with what the account adds to them: the public keys named in `sshKeyFingerprints`."""
    droplets: tuple[GetDropletsDropletResult, ...]
    """The stack's droplets as DigitalOcean lists them (by the stack's tag)."""
    replaced: frozenset[int]
    """Positions of the droplets this update replaces (allowed with `allowReplace`): they are created with the
    current user-data and SSH keys, not those the first droplet was created with."""
    registered_keys: frozenset[str] = frozenset()
    """Fingerprints of the `sshPublicKeys` this stack registers and owns; the others the account holds already,
    under another name (the user's own, or another stack's), and the droplets use them as they are."""


@dataclass(frozen=True)
class Account:
    """The account the API token belongs to (`GET /v2/account`)."""

    email: str
    email_verified: bool


@dataclass(frozen=True)
class ApiAccess:
    """Where the provider reaches DigitalOcean's API, with which token, and where that token was set."""

    endpoint: str
    token: str | None
    token_source: str
    """`digitalocean:token`, or the environment variable it came from."""

    def set_token(self) -> str:
        """How to set a new token where this one came from."""
        if self.token_source.startswith("digitalocean:"):
            return "pulumi config set --secret digitalocean:token dop_v1_..."
        return f"export {self.token_source}=dop_v1_... (or pulumi config set --secret digitalocean:token dop_v1_...)"


def api_problem(status: int, message: str, access: ApiAccess) -> str:
    """One line for an API refusal the checks meet: what it means and what to do."""
    said = f"{status} {message}".strip()
    endpoint = access.endpoint
    if status == 401:
        return (
            f"{access.token_source} = ********: DigitalOcean refused it ({said}): the token is wrong, expired or "
            f"revoked. Make one at {TOKENS_PAGE} (full access, or read and write) and set it with: "
            f"{access.set_token()}"
        )
    if status == 403:
        return (
            f"{access.token_source} = ********: DigitalOcean refused a read with it ({said}): the token is "
            f"read-only or lacks a scope this stack uses. Make one with full access (or read and write) at "
            f"{TOKENS_PAGE} and set it with: {access.set_token()}"
        )
    if status == 429:
        return (
            f"DigitalOcean's API at {endpoint} answered {said}: this account's rate limit (250 requests a minute, "
            "5,000 an hour) is used up, by this or another client of the account. Wait a minute, then run again"
        )
    if status >= 500:
        return (
            f"DigitalOcean's API at {endpoint} answered {said}: a fault on DigitalOcean's side "
            "(https://status.digitalocean.com). Nothing was changed; run again in a few minutes"
        )
    return f"DigitalOcean's API at {endpoint} answered {said}"


def api_access() -> ApiAccess:
    """The API endpoint and token the provider uses: its config first, then its environment variables."""
    config = pulumi.Config("digitalocean")
    endpoint = config.get("apiEndpoint") or os.environ.get("DIGITALOCEAN_API_URL") or API_ENDPOINT
    for source, token in (
        ("digitalocean:token", config.get("token")),
        ("DIGITALOCEAN_TOKEN", os.environ.get("DIGITALOCEAN_TOKEN")),
        ("DIGITALOCEAN_ACCESS_TOKEN", os.environ.get("DIGITALOCEAN_ACCESS_TOKEN")),
    ):
        if token:
            return ApiAccess(endpoint.rstrip("/"), token, source)
    return ApiAccess(endpoint.rstrip("/"), None, "digitalocean:token")


def read_account() -> Account:
    """The token's account, read first: a token that cannot work is told in one line before anything else.

    `GET /v2/account` is the cheapest read every token scope allows; it also says which address DigitalOcean
    sends alerts to, and whether it is verified.
    """
    access = api_access()
    endpoint, token = access.endpoint, access.token
    if not token:
        raise ConfigError(
            [
                "digitalocean:token is not set: the program reads the account with it before anything else. "
                f"Make a token at {TOKENS_PAGE} (full access, or read and write) and set it with: "
                "pulumi config set --secret digitalocean:token dop_v1_... (or export DIGITALOCEAN_TOKEN)"
            ]
        )
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(
            [f"digitalocean:apiEndpoint = {endpoint!r}: expected an http(s):// address, e.g. {API_ENDPOINT}"]
        )
    request = urllib.request.Request(  # noqa: S310 (http and https only, checked above)
        f"{endpoint}/v2/account",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_SECONDS) as answer:  # noqa: S310 (as above)
            account = json.load(answer)["account"]
    except urllib.error.HTTPError as err:
        raise ConfigError([api_problem(err.code, _error_message(err), access)]) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, KeyError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            [
                f"DigitalOcean's API at {endpoint} could not be read ({reason}): check this machine's network"
                " (and digitalocean:apiEndpoint or DIGITALOCEAN_API_URL, if either is set), then run again"
            ]
        ) from None
    return Account(email=str(account.get("email") or ""), email_verified=bool(account.get("email_verified")))


def token_problems() -> list[str]:
    """The API token's problem, if it has one, as a line to tell with others."""
    try:
        read_account()
    except ConfigError as error:
        return error.problems
    return []


def _error_message(err: urllib.error.HTTPError) -> str:
    """DigitalOcean's `message` from an error's JSON body, or the HTTP reason."""
    try:
        return str(json.loads(err.read().decode())["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(err.reason)


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
    server: str,
    problems: list[str] | None = None,
    default_stack_tag: str | None = None,
) -> AccountState:
    """Check the update against the account; raises `ConfigError` with every problem found.

    `server` is the name of the `WebServer` that declares the droplets (`core/droplets.py` names them);
    `problems` are those already found on this machine (the SSH agent), reported with the others;
    `default_stack_tag` is the tag the stack has without `stackName` (PROJECT:STACK). An API error
    met on the way (a token without a scope, the rate limit, a fault at DigitalOcean) is one line.
    """
    problems = list(problems or [])
    account = read_account()
    try:
        return _survey(settings, account, stack_tag, server, problems, default_stack_tag)
    except ConfigError:
        raise
    except Exception as err:
        found = _API_ERROR.search(str(err))
        if found is None:
            raise
        raise ConfigError([*problems, api_problem(int(found["status"]), found["message"], api_access())]) from None


def _survey(
    settings: Settings,
    account: Account,
    stack_tag: str,
    server: str,
    problems: list[str],
    default_stack_tag: str | None,
) -> AccountState:
    droplets = tuple(stack_droplets(stack_tag))
    region = region_problems(settings, droplets)
    if region:
        # In a region that takes no droplets, nothing else can be judged.
        raise ConfigError([*problems, *region])
    account_keys = digitalocean.get_ssh_keys().ssh_keys
    registered, public_keys, key_problems = survey_keys(settings, stack_tag, account_keys)
    problems += key_problems
    problems += alert_problems(settings, account)
    problems += volume_problems(settings, droplets)
    if not droplets and default_stack_tag not in (None, stack_tag) and settings.server.volume_name is not None:
        problems += renamed_stack_problems(settings, stack_tag, default_stack_tag or "")
    default_vpc = region_default_vpc(settings.server.region) if needs_private_network(settings) else None
    problems += default_vpc_problems(settings, stack_tag, default_vpc)
    replacing, replacement_problems = replacements(settings, droplets, server, default_vpc)
    problems += replacement_problems
    problems += dns_problems(settings, droplets)
    if problems:
        raise ConfigError(problems)
    return AccountState(
        settings=dataclasses.replace(
            settings, server=dataclasses.replace(settings.server, account_public_keys=public_keys)
        ),
        droplets=droplets,
        replaced=replacing,
        registered_keys=registered,
    )


def survey_keys(
    settings: Settings, stack_tag: str, account_keys: Iterable[GetSshKeysSshKeyResult]
) -> tuple[frozenset[str], tuple[str, ...], list[str]]:
    """Which of `sshPublicKeys` the stack registers, the public keys `sshKeyFingerprints` name, and the problems.

    DigitalOcean holds a key once per account (a second registration is refused with 422, "SSH Key is
    already in use on your account"). A key the account holds under another name (the user's own, from
    their first droplet, or another stack's) is used as it is and never registered again; a key it does
    not hold, or holds under this stack's name, is the stack's: the same choice on every run.
    """
    held = list(account_keys)
    by_fingerprint = {key.fingerprint: key for key in held}
    by_id = {str(key.id): key for key in held}
    registered = set()
    for public_key in settings.server.ssh_public_keys:
        fingerprint = ssh_key_fingerprint(public_key)
        found = by_fingerprint.get(fingerprint)
        if found is None or found.name == account_key_name(stack_tag, fingerprint):
            registered.add(fingerprint)
    public_keys: list[str] = []
    problems = []
    for wanted in settings.server.ssh_key_fingerprints:
        found = by_id.get(wanted) if wanted.isdigit() else by_fingerprint.get(wanted)
        if found is None:
            listed = ", ".join(f"{key.fingerprint} ({key.name})" for key in held) or "none"
            problems.append(
                f"flask-droplet:sshKeyFingerprints = {wanted!r}: expected a key this DigitalOcean account holds, by "
                f"its fingerprint or id; it holds {listed}. Register the key (doctl compute ssh-key import NAME "
                "--public-key-file KEY.pub), or give its public key in sshPublicKeys instead"
            )
        elif found.public_key.strip() not in public_keys:
            public_keys.append(found.public_key.strip())
    return frozenset(registered), tuple(public_keys), problems


def alert_problems(settings: Settings, account: Account) -> list[str]:
    """Alert addresses DigitalOcean would refuse, found before the uptime check that it bills is made.

    "The Email has to be one that is verified on that DigitalOcean account" (the uptime alert's
    notification model in DigitalOcean's API description): the uptime alerts are refused with 422
    after the check and the droplet alerts exist. The API tells the account's own address and whether
    it is verified; a team member's verified address it does not tell, so only the account's is known
    to work.
    """
    verified = account.email.lower() if account.email_verified else None
    problems = []
    for address in settings.alerts.emails:
        if address.lower() == verified:
            continue
        if address.lower() == account.email.lower():
            reason = (
                f"DigitalOcean sends alerts only to verified addresses, and this account's ({account.email}) is not "
                "verified yet: follow the link in DigitalOcean's email to verify it, then run again"
            )
        else:
            reason = (
                "expected an address verified on the DigitalOcean account, which is the only kind DigitalOcean "
                f"sends alerts to; this token's account is {account.email}"
                f"{'' if account.email_verified else ' (not verified yet)'}, and its API tells no other verified "
                "address. Set alertEmails to it, and forward its alerts where they should go"
            )
        problems.append(f"flask-droplet:alertEmails = {address!r}: {reason}")
    return problems


def region_problems(settings: Settings, droplets: tuple[GetDropletsDropletResult, ...] = ()) -> list[str]:
    """A region must take new droplets now: DigitalOcean's list, not a copy of it (which goes stale).

    A stack whose droplets are there already keeps deploying to them in a region closed since.
    """
    regions = digitalocean.get_regions().regions
    available = sorted(region.slug for region in regions if region.available)
    if settings.server.region in available or any(droplet.region == settings.server.region for droplet in droplets):
        return []
    return [
        f"flask-droplet:region = {settings.server.region!r}: expected a region that takes new droplets now, one of "
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
            f"flask-droplet:region = {settings.server.region!r}: this account has no VPC in {settings.server.region} "
            "yet, and "
            "the first VPC of a region becomes its default, which DigitalOcean never deletes: this stack's VPC "
            "would be it, and pulumi destroy could not finish. Make the region's default first (doctl vpcs "
            f"create --name default-{settings.server.region} --region {settings.server.region}, or any droplet "
            "created there "
            "without a VPC), then run pulumi up again"
        ]
    if (default_vpc.description or "").startswith(f"{stack_tag}:"):
        return [
            f"flask-droplet:region = {settings.server.region!r}: this stack's VPC ({default_vpc.name}) is the region's "
            "default, which DigitalOcean never deletes, so pulumi destroy could not finish. Make another VPC of "
            f"{settings.server.region} the default (doctl vpcs create --name default-{settings.server.region} --region "
            f"{settings.server.region}, then doctl vpcs update ITS_ID --default=true), then run pulumi up again"
        ]
    return []


def volume_problems(settings: Settings, droplets: tuple[GetDropletsDropletResult, ...]) -> list[str]:
    """A Volume moves nowhere, is never deleted while attached, and is renamed only by replacing it, empty."""
    attached = [volume_id for droplet in droplets for volume_id in (droplet.volume_ids or [])]
    state_dir = settings.layout.state_dir
    if settings.server.behind_balancer and attached:
        return [
            f"flask-droplet:instances = {settings.server.instances}: expected 1 while this stack's droplet keeps "
            f"{state_dir} on a Volume. Droplets behind a balancer have none: this update would delete it, "
            "and the data on it. To grow: back the data up (deploy.sh backup), stand up the new stack with "
            "instances and database postgres, move the data into its database, then move the domain and "
            "destroy the old stack."
        ]
    if settings.server.volume_name is None:
        if attached:
            # Leaving out volume_ids changes nothing (Optional and Computed in `resource_droplet.go`), so the
            # Volume stays attached and its delete is refused (409): the update would fail half done.
            return [
                f"flask-droplet:volumeSize = {settings.server.volume_size}: this stack's droplet keeps {state_dir} "
                "on a "
                "Volume, and 0 would delete it with the app's data; DigitalOcean also refuses to delete a Volume "
                "still attached. To keep the data on the droplet's own disk instead: back it up (deploy.sh "
                "backup), detach the Volume (doctl compute volume-action detach VOLUME_ID DROPLET_ID), then run "
                "pulumi up again; or set volumeSize back to its size"
            ]
        return []
    elsewhere = sorted({droplet.region for droplet in droplets} - {settings.server.region})
    if elsewhere:
        return [
            f"flask-droplet:region = {settings.server.region!r}: expected {elsewhere[0]!r}, where this stack's droplet "
            f"and its Volume {settings.server.volume_name} are. A Volume cannot move between regions, and a new one "
            f"would start empty. To move: stand up a new stack in {settings.server.region}, stop the app on both "
            f"(sudo systemctl stop {settings.app.name}.socket {settings.app.name}.service), copy {state_dir} "
            f"across (sudo tar -C {state_dir} -cpf - . on the old, sudo tar -C {state_dir} -xpf - on the new), "
            "deploy the new stack again, then move the domain and destroy the old stack."
        ]
    if attached and not volume_named(settings.server.volume_name, settings.server.region):
        # The Volume's name comes from appName and the stack, and the provider renames a Volume only by
        # replacing it (`name` is ForceNew in `resource_volume.go`).
        return [
            f"flask-droplet:appName = {settings.app.name!r}: this stack's droplet holds a Volume, but none named "
            f"{settings.server.volume_name} is in {settings.server.region}: the Volume is named after appName, and a "
            "new "
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
    if settings.server.allow_replace or not any(droplet.volume_ids for droplet in stack_droplets(default_stack_tag)):
        return []
    return [
        f"flask-droplet:stackName = {settings.server.stack_name!r}: no droplet is tagged {stack_tag}, but droplets "
        f"tagged {default_stack_tag} hold a Volume. If they are this stack's, a new stackName would replace "
        f"its Volume with an empty {settings.server.volume_name}, the app's data lost: leave stackName empty. If they "
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


def replacements(
    settings: Settings,
    droplets: tuple[GetDropletsDropletResult, ...],
    server: str,
    default_vpc: digitalocean.GetVpcResult | None,
) -> tuple[frozenset[int], list[str]]:
    """The droplets this update replaces, and a problem for each unless `allowReplace` says to go ahead.

    What replaces a droplet is its `Origin` (`core/droplets.py`): a new image, region or VPC. The
    SSH keys and user-data are left as the droplet was created with: the deploy user's keys follow
    `sshPublicKeys` with every deploy instead, so a key change replaces nothing.
    """
    replaced: set[int] = set()
    reasons: list[str] = []
    wanted = Origin.wanted(settings, needs_private_network(settings))
    # Droplets of one stack mostly share their image: each name is looked up once.
    is_wanted_image = functools.cache(lambda listed: same_image(listed, wanted.image))
    for member in members(settings):
        logical_name = member.droplet_name(server)
        existing = droplet_at(droplets, logical_name)
        if existing is None:
            continue
        # The same image under its other name is no change: the droplet keeps the name it was created with
        # (`ignore_changes` in `components/webserver.py`).
        image = wanted.image if is_wanted_image(existing.image or "") else existing.image or ""
        # A Volume's stack moves region only by a new stack: `volume_problems` refuses it whatever allowReplace
        # says, so its region is not told again here.
        region = existing.region if settings.server.volume_name is None else settings.server.region
        in_default_vpc = default_vpc is not None and existing.vpc_uuid == default_vpc.id
        changes = wanted.changes_from(Origin(image, region or "", private_network=not in_default_vpc))
        if changes:
            replaced.add(member.index)
            reasons.append(f"{logical_name} ({', '.join(changes)})")
    if not replaced or settings.server.allow_replace:
        return frozenset(replaced), []
    lost = "what is on their own disks is lost"
    if settings.server.volume_name is not None:
        lost += f" (the Volume {settings.server.volume_name} stays)"
    if settings.server.database == "postgres" and any("region" in reason for reason in reasons):
        lost += "; the stack's VPC and its database cluster are replaced with them, and the database is lost"
    return frozenset(replaced), [
        "flask-droplet:allowReplace = false: DigitalOcean cannot change these droplets in place, only replace "
        f"them: {'; '.join(reasons)}. Each new droplet boots from the current user-data, and {lost}. Set "
        "allowReplace to true for this one run to go ahead (pulumi preview shows the replacements), or undo the change"
    ]


def same_image(listed: str, wanted: str) -> bool:
    """Whether `listed`, a droplet's image as DigitalOcean lists it, is the image `wanted` names.

    An image has an id, and a slug if it is one of DigitalOcean's: a droplet's image is listed
    by its slug when it has one (`flattenDigitalOceanDroplet` in `droplet/droplets.go`), while
    `image` may name it by its id. Only a slug against an id is looked up.
    """
    if listed == wanted or listed.isdigit() == wanted.isdigit():
        return listed == wanted
    slug, image_id = (wanted, listed) if listed.isdigit() else (listed, wanted)
    try:
        return str(digitalocean.get_image(slug=slug).id) == image_id
    except Exception as err:
        if not is_not_found(err):
            raise
        # A slug DigitalOcean no longer serves: the id, which it does, is another image.
        return False


def record_name(host: str, zone: str) -> str:
    """A host's record name inside its zone: "@" for the zone's own name."""
    return host.removesuffix(zone).rstrip(".") or "@"


def dns_problems(settings: Settings, droplets: tuple[GetDropletsDropletResult, ...]) -> list[str]:
    """Records the zone holds already under the site's names, which the program's records would sit beside.

    DigitalOcean adds a record beside any others of the name: a second A record is round-robin
    DNS (half the visitors sent to the old address), and a CNAME of the name makes it refuse
    the A record (422). The program owns one A (and, for one droplet, one AAAA at the droplet's
    address) per name; anything else there is refused until removed. A stack whose droplet was
    lost (deleted by hand, say) still owns its records: its A record points at its Reserved IP,
    which DigitalOcean keeps, unassigned, when the droplet goes; the next `pulumi up` points the
    AAAA record at the new droplet.
    """
    if settings.app.site.dns_zone is None:
        return []
    zone = settings.app.site.dns_zone
    names = [record_name(host, zone) for host in settings.app.site.host_names]
    try:
        found = digitalocean.get_records(
            domain=zone, filters=[digitalocean.GetRecordsFilterArgs(key="name", values=names)]
        ).records
    except Exception as err:
        if not is_not_found(err):
            raise
        return [
            f"flask-droplet:dnsZone = {zone!r}: expected a domain this DigitalOcean account holds, and it holds none "
            f"of that name. Add it (doctl compute domain create {zone}, or Networking > Domains in the control "
            "panel) and point the domain's NS records at ns1.digitalocean.com, ns2.digitalocean.com and "
            "ns3.digitalocean.com; or leave dnsZone empty and point the A record yourself"
        ]
    own_ipv6 = {droplet.ipv6_address for droplet in droplets if droplet.ipv6_address}
    problems = []
    for name in names:
        here = [record for record in found if record.type in ("A", "AAAA", "CNAME") and record.name == name]
        a_records = [record for record in here if record.type == "A"]
        aaaa_records = [record for record in here if record.type == "AAAA"]
        if droplets:
            # A stack that has droplets made its own A record, and its AAAA at its droplet's address.
            own = a_records[:1] + [record for record in aaaa_records if record.value in own_ipv6]
        else:
            # One with none made nothing, unless its droplet was lost and its Reserved IP kept.
            lost = [record for record in a_records if is_unassigned_reserved_ip(record.value, settings.server.region)][
                :1
            ]
            own = lost + (aaaa_records[:1] if lost and not settings.server.behind_balancer else [])
        foreign = [record for record in here if record not in own]
        if foreign:
            shown = ", ".join(f"{record.type} {record.value}" for record in foreign)
            problems.append(
                f"flask-droplet:dnsZone = {zone!r}: the zone already has {shown} at {name!r}, "
                "which "
                "the site's records would sit beside (a second address is round-robin DNS, and a CNAME makes "
                "DigitalOcean refuse the record). Delete them (doctl compute domain records delete "
                f"{zone} RECORD_ID), then run pulumi up again"
            )
    return problems


def is_unassigned_reserved_ip(address: str, region: str) -> bool:
    """Whether `address` is a Reserved IP of this account in `region` that no droplet holds."""
    try:
        found = digitalocean.get_reserved_ip(ip_address=address)
    except Exception as err:
        if is_not_found(err):
            return False
        raise
    return found.region == region and not found.droplet_id
