"""Stack settings: one frozen object of typed parts, validated before any resource exists.

`parse_settings` takes the plain config values (as Pulumi hands them over,
keyed by the names `Pulumi.yaml` declares, `core/keys.py`) and either returns a
`Settings` or raises `SettingsError` listing every problem at once. `Settings` is made of
parts: the server's (`ServerSettings`: droplets, keys, networks, Volume, fleet and database),
the app's (`AppSettings`, with its site, `SiteSettings`), the backups', the alerts' and the
notifications'. Each part is returned by the check of its topic (`check_server`,
`check_https_and_dns` with `check_balancer_certificate`, `check_app`, `check_backups`,
`check_alerts`, `check_notifications`), which reads each key once through `Check` and
reports against the same name.
Nothing here imports Pulumi, so the rehearsal and the tests use the same validation.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import ipaddress
import re
import shlex
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyrage

from agent.inputs import Webhook
from core.appsource import DEPENDENCY_FILES, SRC_LAYOUT_DIR, AppSource, AppSourceError, inspect_app, module_root
from core.certificates import CertificateChain, CertificateError, check_brought_certificate
from core.keys import DEFAULTS, KEYS, SECRET_KEYS
from core.layout import ServerLayout, server_layout
from core.processes import (
    DROPLETS,
    NAME,
    PROCFILE_RELEASE,
    PROCFILE_WEB,
    RANDOM_DELAY_MAX,
    STOP_SIGNALS,
    STOP_TIMEOUT_DEFAULT,
    STOP_TIMEOUT_MAX,
    STOP_TIMEOUT_MIN,
    CalendarError,
    Process,
    ProcfileError,
    Schedule,
    WebLine,
    parse_procfile,
    parse_web_line,
    to_calendar,
)
from core.slugs import DATABASE_SIZES, DROPLET_SIZES

#: Images this project is written for: the Ubuntu 24.04 slug, or the numeric
#: id of a snapshot built from it.
UBUNTU_2404_IMAGE = "ubuntu-24-04-x64"

#: What Gunicorn serves when neither wsgiTarget nor a Procfile's web line names it.
DEFAULT_WSGI_TARGET = "wsgi:app"

#: ACME servers by name; `acmeServer` takes one of these names or a directory URL.
ACME_SERVERS = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}

WORKERS_MAX = 32
#: `workers` 0 (the default) means as many as the droplet size suits, see `default_workers`.
WORKERS_FROM_SIZE = 0
#: DigitalOcean Volumes hold up to 16 TiB.
VOLUME_GIB_MAX = 16384
RELEASES_TO_KEEP_MIN, RELEASES_TO_KEEP_MAX = 1, 50
#: Days the server keeps its backups of the state directory; 0 takes none.
BACKUP_DAYS_MAX = 365
#: How often the state directory is backed up: `backupInterval` names one of these systemd calendar events.
BACKUP_INTERVALS = ("hourly", "daily", "weekly")
#: The regions where DigitalOcean Spaces holds buckets (its list in docs.digitalocean.com/products/spaces/details/
#: availability): the off-site copies' `offsiteRegion`.
SPACES_REGIONS = ("nyc3", "sfo2", "sfo3", "ams3", "fra1", "lon1", "tor1", "sgp1", "syd1", "blr1", "atl1")
OFFSITE_DAYS_MAX = 3650

#: How long a droplet metric stays past its threshold before DigitalOcean alerts (`MonitorAlert.window`).
ALERT_WINDOWS = ("5m", "10m", "30m", "1h")
ALERT_PERCENT_MIN, ALERT_PERCENT_MAX = 1, 100
#: Under 100 ms, a probe from the next region over would find every answer slow: its TCP and TLS
#: handshakes alone take that long. Over 10 s, visitors have long given up.
ALERT_LATENCY_MS_MIN, ALERT_LATENCY_MS_MAX = 100, 10_000
#: A 90-day certificate renews with 30 days left: a threshold of 30 or more would alert on every renewal.
ALERT_CERTIFICATE_DAYS_MIN, ALERT_CERTIFICATE_DAYS_MAX = 1, 29
#: The most days before expiry the certificate alert may fire at for the address's certificate,
#: and the default. That certificate lives 160 hours and renews with half of it left (80 hours), at
#: the timer's first run after that (twice a day, up to an hour late): a healthy one always has
#: more than 67 hours (2.8 days) to go. So 2 never fires on a healthy renewal, and fires after
#: about 32 hours of failed ones, with 2 days left to fix them; 3 would fire on about one healthy
#: renewal in three (whenever the timer's run falls after 72 hours are left). A domain's 90-day
#: certificate renews with 30 days left, far above either.
ADDRESS_CERTIFICATE_DAYS_MAX = 2

#: Droplets behind one Load Balancer, at most; 1 is a single droplet at its Reserved IP.
INSTANCES_MAX = 10
#: Where the app's data lives: `sqlite` in the state directory of the one droplet, `postgres` in a
#: DigitalOcean Managed PostgreSQL cluster, `none` for an app that keeps none.
DATABASES = ("sqlite", "postgres", "none")
#: Nodes of the Managed PostgreSQL cluster: a primary and up to two standbys.
DATABASE_NODES_MAX = 3
#: The one plan without standby nodes ("Standby nodes can be added to an existing cluster at any time, with
#: the exception of the smallest plan of single node clusters", docs.digitalocean.com/products/databases).
SMALLEST_DATABASE_SIZE = "db-s-1vcpu-1gb"

#: Names the server already uses; the app's system user must not collide.
RESERVED_APP_NAMES = frozenset(
    {"root", "deploy", "nginx", "www-data", "ubuntu", "admin", "daemon", "nobody", "sshd", "syslog"}
)

#: Variables the server sets itself; the app's environment must not override them.
RESERVED_ENV_NAMES = frozenset(
    {"APP_VERSION", "PATH", "PYTHONPATH", "GUNICORN_CMD_ARGS", "HOME", "USER", "LISTEN_FDS", "LISTEN_PID"}
)

#: Flask's instance folder, relative to the directory the app's packages import from.
INSTANCE_DIR = "instance"
#: Never linked to the state directory: the release's virtualenv and dependency files.
UNLINKABLE = frozenset({".venv", *DEPENDENCY_FILES})

_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_MD5_FINGERPRINT = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){15}$")
_STACK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Gunicorn's `module:name`, or `module:factory()` for an app factory called without arguments.
_WSGI_TARGET = re.compile(r"^(?P<module>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*):(?P<callable>[A-Za-z_]\w*)(\(\))?$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RELATIVE_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

#: A region slug's shape; which regions take new droplets is DigitalOcean's answer (`components/account.py`):
#: the SDK's `Region` enum lacks atl1 and ric1 and keeps regions closed to new resources.
_REGION_SLUG = re.compile(r"^[a-z]{3}[0-9]$")
#: The variable that tells the app where its database is.
DATABASE_URL = "DATABASE_URL"


class SecretStr(str):
    """A string whose repr never shows its value (tracebacks, logs, test output)."""

    def __repr__(self) -> str:
        return "SecretStr('********')"


#: The bodies a webhook takes: Slack's incoming webhooks (`{"text"}`), Discord's (`{"content"}`), and
#: a plain JSON object of the event's fields for anything else.
WEBHOOK_FORMS = ("slack", "discord", "json")
#: Webhooks told of one event, at most: each is tried once, for up to 5 s, by what it reports on.
WEBHOOKS_MAX = 5
_WEBHOOK_URL = re.compile(r"^https?://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\s]*)?$")


def webhook_form(url: str) -> str:
    """The body an address takes, by its host: Slack's and Discord's own hosts, else plain JSON."""
    parts = urllib.parse.urlsplit(url)
    host, path = (parts.hostname or "").lower(), parts.path
    if host == "hooks.slack.com":
        return "slack"
    if host in ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com") and "/api/webhooks/" in path:
        return "discord"
    return "json"


@dataclass(frozen=True)
class ServerSettings:
    """The server's part: the droplets (region, size, image), the keys and networks that reach them, the Volume
    that holds the state, the fleet and its database, and what the stack may do to them."""

    region: str
    """DigitalOcean region slug, e.g. `nyc3`."""
    size: str
    """DigitalOcean droplet size slug, e.g. `s-1vcpu-1gb`."""
    image: str
    """Ubuntu 24.04 image slug or the numeric id of a snapshot of it."""
    ssh_public_keys: tuple[str, ...]
    """OpenSSH public keys: given to the deploy user, and registered with DigitalOcean unless it holds them."""
    ssh_key_fingerprints: tuple[str, ...]
    """MD5 fingerprints of keys already registered with DigitalOcean."""
    account_public_keys: tuple[str, ...]
    """The public keys `ssh_key_fingerprints` name, as the DigitalOcean account holds them (read by the
    program before any resource; none in the rehearsal, which has no account)."""
    admin_cidrs: tuple[str, ...]
    """Networks allowed to reach SSH through the Cloud Firewall."""
    ssh_private_key: SecretStr | None
    """Private key Pulumi uses to reach the droplet; None means the SSH agent."""
    production: bool
    """A production stack: `pulumi destroy` refuses to delete the droplet, its address and its Volume."""
    allow_replace: bool
    """Let this update replace what DigitalOcean can only replace (droplets on a new image or region, say);
    without it such an update is refused before any resource changes."""
    stack_name: str
    """The stack's name in the DigitalOcean account: in its droplets' tag (PROJECT:NAME) and its Volume's name."""
    droplet_backups: bool
    """DigitalOcean's weekly backups of the droplet's disk (its Volume is not in them)."""
    volume_size: int
    """GiB of the DigitalOcean Volume that holds the app's state directory; 0 for none (the droplet's disk)."""
    volume_name: str | None
    """The Volume's name, unique to the app and stack; the droplet sees it as `/dev/disk/by-id/scsi-0DO_Volume_NAME`."""
    instances: int
    """Droplets serving the app: more than one stand behind a DigitalOcean Load Balancer."""
    database: str
    """Where the app's data lives, one of `DATABASES`; the app finds it in DATABASE_URL."""
    database_size: str
    """Size slug of each node of the Managed PostgreSQL cluster."""
    database_nodes: int
    """Nodes of the Managed PostgreSQL cluster (1 to 3)."""

    @property
    def authorized_keys(self) -> tuple[str, ...]:
        """The keys the deploy user accepts, put in place by every deploy: `sshPublicKeys`, then those named by
        `sshKeyFingerprints`, each once."""
        return tuple(dict.fromkeys(key.strip() for key in (*self.ssh_public_keys, *self.account_public_keys)))

    @property
    def behind_balancer(self) -> bool:
        """More than one droplet, behind a Load Balancer that holds the site's address and its TLS."""
        return self.instances > 1


@dataclass(frozen=True)
class SiteSettings:
    """The app's site: the names it answers to, its certificate (HTTPS, the ACME server, HSTS), its DNS zone."""

    domain: str | None
    """Public hostname of the app, or None to answer on the droplet's address."""
    https: bool
    """Serve HTTPS with a certificate from `acme_server`, HTTP only redirecting to it."""
    acme_server: str
    """ACME directory URL the certificate comes from."""
    acme_email: str | None
    """Contact address given to the ACME server, or None for none."""
    hsts_preload: bool
    """Ask browsers to preload HSTS for the domain (and its subdomains)."""
    www_alias: bool
    """Also answer, and hold a certificate for, www.DOMAIN."""
    dns_zone: str | None
    """The domain's zone, when DigitalOcean manages it: the program creates the records."""
    balancer_certificate: CertificateChain | None
    """The certificate brought for the Load Balancer's HTTPS, split as DigitalOcean's certificate store takes it;
    None for the Let's Encrypt certificate DigitalOcean issues (with `dns_zone`), or without a balancer's HTTPS."""
    balancer_certificate_key: SecretStr | None
    """The brought certificate's private key (PEM); None without `balancer_certificate`."""

    @property
    def host_names(self) -> tuple[str, ...]:
        """The names the site answers to (and its certificate covers); empty when it answers on its address."""
        if self.domain is None:
            return ()
        return (self.domain, f"www.{self.domain}") if self.www_alias else (self.domain,)


@dataclass(frozen=True)
class AppSettings:
    """The app's part: its code and how it runs (target, workers, environment, processes, schedules), its
    releases, and its site. Nothing server-wide: several apps could share one server."""

    name: str
    """Name of the app: its system user, systemd units and directories."""
    directory: Path
    """Directory of the Flask app, absolute."""
    wsgi_target: str
    """Gunicorn's `module:callable`, importable from `directory`."""
    source: AppSource
    """Where the app's dependencies are declared and where its code imports from."""
    static_dir: str | None
    """Static files directory relative to `directory`, served by nginx at /static."""
    health_path: str
    """Path that answers 2xx when the app is healthy; checked through nginx on every deploy."""
    workers: int
    """Number of Gunicorn worker processes."""
    build_packages: tuple[str, ...]
    """apt packages the deploy installs before a new virtualenv, for dependencies built from source."""
    env: Mapping[str, SecretStr]
    """The app's environment variables; every value is treated as secret."""
    processes: tuple[Process, ...]
    """Long-running commands beside Gunicorn (workers), from `processes` and the app's Procfile."""
    schedules: tuple[Schedule, ...]
    """Commands run at calendar times, on one droplet (the first)."""
    releases_to_keep: int
    """How many releases stay on the server for rollback."""
    release_command: tuple[str, ...]
    """Run once for each new release before it goes live (e.g. migrations); empty for none."""
    web_commands: tuple[tuple[str, ...], ...]
    """What the Procfile's `web:` line runs before Gunicorn: run once for each new release, after
    `release_command` and before it goes live; a command equal to one run before it is left out."""
    linked_dirs: tuple[str, ...]
    """Paths inside the app kept in the state directory and shared by every release."""
    site: SiteSettings
    """The names the app answers to and its certificate."""

    @property
    def wsgi_module(self) -> str:
        return self.wsgi_target.split(":", 1)[0]

    @property
    def state_links(self) -> tuple[tuple[str, str], ...]:
        """(path inside the app, path inside the state directory) for every path a release links there.

        Flask's instance folder first (beside the app's top-level packages, wherever they
        import from), then `linked_dirs` under their own names.
        """
        root = self.source.import_root
        instance = f"{root}/{INSTANCE_DIR}" if root else INSTANCE_DIR
        links = [(instance, INSTANCE_DIR)]
        links += [(path, path) for path in self.linked_dirs if path != instance]
        return tuple(links)


@dataclass(frozen=True)
class BackupSettings:
    """The server's backups of the state directory, and their encrypted off-site copies."""

    days: int
    """Days the server keeps its backups of the state directory; 0 for no backups."""
    interval: str
    """How often the state directory is backed up: one of `BACKUP_INTERVALS`."""
    offsite_region: str | None
    """The Spaces region of the bucket that takes an encrypted copy of each backup; None for no off-site copies."""
    offsite_days: int
    """Days the off-site copies are kept, the newest always."""
    offsite_recipient: str | None
    """The age recipient (age1...) each off-site copy is encrypted to, derived from `offsite_identity`."""
    offsite_identity: SecretStr | None
    """The age identity that reads the off-site copies: sent to the droplet only by a restore from off-site."""


@dataclass(frozen=True)
class AlertSettings:
    """What DigitalOcean watches and whom it tells."""

    emails: tuple[str, ...]
    """Where DigitalOcean sends alerts; empty for no alerts and no uptime check."""
    cpu_percent: int
    """CPU use, in percent, above which the droplet alerts once it lasts `window`."""
    memory_percent: int
    """Memory use, in percent, above which the droplet alerts once it lasts `window`."""
    disk_percent: int
    """Use of the droplet's own disk, in percent, above which it alerts once it lasts `window`."""
    window: str
    """How long a droplet metric stays past its threshold, or the site slow, before it alerts (`ALERT_WINDOWS`)."""
    latency_ms: int
    """Milliseconds the site may take to answer the uptime check before it alerts as slow."""
    certificate_days: int
    """Days before the site's certificate expires at which the uptime check alerts."""


@dataclass(frozen=True)
class NotifySettings:
    """Whom the droplet tells when something goes wrong."""

    webhooks: tuple[Webhook, ...]
    """Where the droplet tells what went wrong (and, with `on_live`, each release that went live)."""
    on_live: bool
    """Also tell the webhooks of each release that went live."""


@dataclass(frozen=True)
class Settings:
    """Everything a stack needs, checked and typed: the server's part, the app's, and what watches them."""

    server: ServerSettings
    """The droplets, who reaches them, the state Volume, the fleet and its database."""
    app: AppSettings
    """The app the server serves: its code, how it runs, its releases and its site."""
    backups: BackupSettings
    """The server's backups of the state directory and their off-site copies."""
    alerts: AlertSettings
    """What DigitalOcean watches and whom it tells."""
    notifications: NotifySettings
    """Whom the droplet tells when something goes wrong."""

    @functools.cached_property
    def layout(self) -> ServerLayout:
        """Where things live on the server for this app: built once, read by the renderers, plan and executors."""
        return server_layout(self.app.name)

    @property
    def server_tls(self) -> bool:
        """The droplet's own nginx holds the site's certificate; behind a balancer, the balancer does."""
        return self.app.site.https and not self.server.behind_balancer


class SettingsError(ValueError):
    """Every problem found in the stack's config, each one a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the stack config:\n{lines}")


class ConfigValues(Mapping[str, Any]):
    """The stack's values over the declared defaults (`core.keys`), remembering which keys were read.

    Only declared keys can be read: reading another is a mistake in this module, not in the stack.
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        given = {k: KEYS[k].decode(v) for k, v in raw.items() if k in KEYS and v is not None}
        self._values = {**DEFAULTS, **given}
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key not in KEYS:
            raise LookupError(f"{key} is not declared in Pulumi.yaml")
        self.read.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:  # a declared key without a default (an undeclared one raises LookupError)
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


#: Reports one problem: the key, the value given, what is accepted.
Problem = Callable[[str, Any, str], None]


class Check:
    """The stack's values, and every problem found in them: each names the key, the value and what is accepted.

    The typed readers below read a key and report against the same name, so each key is written once."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.values = ConfigValues(raw)
        self.problems: list[str] = []

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def problem(self, key: str, value: Any, accepted: str) -> None:
        self.problems.append(f"flask-droplet:{key} = {_show(key, value)}: {accepted}")

    def optional(self, key: str) -> Any:
        """The key's value, None when it is empty."""
        return self[key] or None

    def boolean(self, key: str) -> bool:
        return _boolean(self[key], key, self.problem)

    def whole_number(self, key: str, low: int, high: int) -> int:
        return _bounded_int(self[key], key, low, high, self.problem)

    def strings(self, key: str) -> list[str]:
        return _string_list(self[key], key, self.problem)

    def choice(self, key: str, choices: Collection[str], accepted: str) -> str:
        """The key's value when it is one of `choices`; otherwise a problem (and the value as it is)."""
        value = self[key]
        if value not in choices:
            self.problem(key, value, accepted)
        return str(value)


def parse_settings(raw: Mapping[str, Any], project_dir: Path, stack: str = "dev") -> Settings:
    """Validate config values and build `Settings`, or raise `SettingsError` listing all problems.

    `raw` maps config keys (without the project namespace) to the values Pulumi
    read from the stack (a list or map may be its JSON text); missing keys take the
    defaults `Pulumi.yaml` declares. `stack` names the stack, which names its Volume.
    Each topic below checks its own keys and returns its part, and every problem is collected before any is
    reported.
    """
    check = Check(raw)
    server = check_server(check, stack)
    site = check_balancer_certificate(check, server.instances, check_https_and_dns(check))
    app = check_app(check, project_dir, server, site)
    backups = check_backups(check)
    alerts = check_alerts(check, site)
    notifications = check_notifications(check)
    if check.problems or app is None:
        raise SettingsError(check.problems)
    # The Volume is named for the app and the stack.
    server = replace(server, volume_name=volume_name(app.name, server.stack_name) if server.volume_size else None)
    return Settings(server=server, app=app, backups=backups, alerts=alerts, notifications=notifications)


def check_server(check: Check, stack: str) -> ServerSettings:
    """The server's part: the droplets and who reaches them, the state Volume, the fleet and its database."""
    public_keys, fingerprints = check_ssh_keys(check)
    instances = check.whole_number("instances", 1, INSTANCES_MAX)
    # 0 keeps the state on the droplet's disk; a Volume holds at least 1 GiB.
    volume_size = check.whole_number("volumeSize", 0, VOLUME_GIB_MAX)
    server = ServerSettings(
        region=check_droplet_region(check),
        size=check.choice(
            "size", DROPLET_SIZES, "expected a DigitalOcean droplet size slug such as s-1vcpu-1gb, s-2vcpu-2gb"
        ),
        image=check_droplet_image(check),
        ssh_public_keys=public_keys,
        ssh_key_fingerprints=fingerprints,
        # What the account holds is read later, by the program (`components/account.py`).
        account_public_keys=(),
        admin_cidrs=check_admin_cidrs(check),
        ssh_private_key=check_ssh_private_key(check),
        production=check.boolean("production"),
        allow_replace=check.boolean("allowReplace"),
        stack_name=check_stack_name(check, stack),
        droplet_backups=check.boolean("dropletBackups"),
        # Droplets behind a balancer keep no state of their own; a Volume serves one droplet only.
        volume_size=0 if instances > 1 else volume_size,
        # Named for the app as well, once the app's part is checked.
        volume_name=None,
        instances=instances,
        database=check.choice("database", DATABASES, f"expected one of {', '.join(DATABASES)}"),
        database_size=check.choice(
            "databaseSize", DATABASE_SIZES, f"expected a Managed PostgreSQL size: {', '.join(DATABASE_SIZES)}"
        ),
        database_nodes=check.whole_number("databaseNodes", 1, DATABASE_NODES_MAX),
    )
    check_fleet_and_database(check, server)
    return server


def check_droplet_region(check: Check) -> str:
    region = check["region"]
    if not (isinstance(region, str) and _REGION_SLUG.match(region)):
        check.problem("region", region, "expected a DigitalOcean region slug such as nyc3, ams3, fra1")
    return str(region)


def check_droplet_image(check: Check) -> str:
    image = check["image"]
    if not (image == UBUNTU_2404_IMAGE or (isinstance(image, str) and image.isdigit())):
        check.problem("image", image, f"expected {UBUNTU_2404_IMAGE} or the numeric id of a snapshot of it")
    return str(image)


def check_stack_name(check: Check, stack: str) -> str:
    stack_name = check["stackName"] or stack
    if check["stackName"] and not (isinstance(stack_name, str) and _STACK_NAME.match(stack_name)):
        check.problem(
            "stackName", stack_name, "expected 1-40 letters, digits, '-' and '_', or empty for the stack's name"
        )
        return stack
    return str(stack_name)


def check_ssh_keys(check: Check) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The SSH keys that reach the droplets: OpenSSH public keys, and those the account holds by fingerprint."""
    public_keys = check.strings("sshPublicKeys")
    for key in public_keys:
        reason = _ssh_public_key_problem(key)
        if reason:
            check.problem("sshPublicKeys", key, reason)
    fingerprints = check.strings("sshKeyFingerprints")
    for fingerprint in fingerprints:
        if not (_MD5_FINGERPRINT.match(fingerprint) or fingerprint.isdigit()):
            check.problem(
                "sshKeyFingerprints",
                fingerprint,
                "expected an MD5 fingerprint as DigitalOcean shows it (16 hex pairs joined by ':') or a numeric key id",
            )
    if not public_keys and not fingerprints:
        check.problems.append(
            "flask-droplet:sshPublicKeys and flask-droplet:sshKeyFingerprints are both empty: "
            "give at least one OpenSSH public key or the fingerprint of a key registered with DigitalOcean"
        )
    return tuple(public_keys), tuple(fingerprints)


def check_ssh_private_key(check: Check) -> SecretStr | None:
    """The private key Pulumi reaches the droplets with, or None for the SSH agent; never shown in a problem."""
    private_key = check.optional("sshPrivateKey")
    if private_key is not None and "PRIVATE KEY-----" not in str(private_key):
        check.problems.append(
            "flask-droplet:sshPrivateKey = ********: expected the contents of an OpenSSH private key file "
            "(-----BEGIN OPENSSH PRIVATE KEY-----...), or leave it unset to use the SSH agent"
        )
    return SecretStr(private_key) if private_key else None


def check_admin_cidrs(check: Check) -> tuple[str, ...]:
    admin_cidrs: list[str] = []
    raw_cidrs = check.values.get("adminCidrs")
    if raw_cidrs is None:
        check.problems.append(
            "flask-droplet:adminCidrs is not set: list the networks allowed to reach SSH, "
            'e.g. ["203.0.113.7/32"]; there is no default, so SSH is never open to the world by accident'
        )
        return ()
    for cidr in _string_list(raw_cidrs, "adminCidrs", check.problem):
        try:
            admin_cidrs.append(str(ipaddress.ip_network(cidr, strict=True)))
        except ValueError as err:
            check.problem("adminCidrs", cidr, f"expected an IPv4 or IPv6 network such as 203.0.113.7/32 ({err})")
    if isinstance(raw_cidrs, list) and not raw_cidrs:
        check.problem("adminCidrs", raw_cidrs, "expected at least one network allowed to reach SSH")
    return tuple(admin_cidrs)


@dataclass(frozen=True)
class AppProcfile:
    """The app's Procfile, read once: its processes by name, and its `web:` line as commands and a server."""

    processes: Mapping[str, str]
    web: WebLine | None

    @property
    def release(self) -> str:
        return self.processes.get(PROCFILE_RELEASE, "")


def check_procfile(check: Check, project_dir: Path) -> AppProcfile:
    """The app's Procfile, when it has one; its web line must start Gunicorn, or wsgiTarget say what to serve."""
    app_dir = project_dir / str(check["appDir"])
    processes = _procfile(app_dir, check.problem) if app_dir.is_dir() else {}
    command = processes.get(PROCFILE_WEB)
    if command is None:
        return AppProcfile(processes, None)
    try:
        web = parse_web_line(command)
    except ProcfileError as err:
        check.problem(
            "appDir",
            f"Procfile web: {command}",
            f"expected a web line of commands joined by ';' or '&&', Gunicorn last; {err}",
        )
        return AppProcfile(processes, None)
    if not web.is_gunicorn and not check["wsgiTarget"]:
        check.problem(
            "appDir",
            f"Procfile web: {command}",
            f"expected a Procfile whose web process is gunicorn, after any commands it runs first (e.g. web: "
            f"flask db upgrade; gunicorn myapp:app): the deploy serves the app with Gunicorn, so {web.server} "
            f"would not be the one that serves. To keep the app as it is, set wsgiTarget to the WSGI callable "
            f"{web.server} serves (pulumi config set wsgiTarget myapp:app): the stack serves it with Gunicorn, "
            f"runs the commands before {web.server} once for each release, and leaves the rest of the line unused",
        )
    return AppProcfile(processes, web)


def check_app(check: Check, project_dir: Path, server: ServerSettings, site: SiteSettings) -> AppSettings | None:
    """The app's part: its name on the server, its code, how it runs, its releases and its site; None when its
    code cannot be read (the problems say why)."""
    app_name = check["appName"]
    if not (isinstance(app_name, str) and _APP_NAME.match(app_name)) or app_name in RESERVED_APP_NAMES:
        check.problem(
            "appName",
            app_name,
            "expected 1-31 characters of lowercase letters, digits and '-', starting with a letter, "
            f"and none of {', '.join(sorted(RESERVED_APP_NAMES))}",
        )
    app_dir = project_dir / str(check["appDir"])
    procfile = check_procfile(check, project_dir)
    web = procfile.web
    # Unset (empty, as Pulumi hands over its default): the Procfile's Gunicorn target, else wsgi:app.
    wsgi_target = check["wsgiTarget"] or (web.app_target if web and web.app_target else DEFAULT_WSGI_TARGET)
    app_source = check_app_source(check, app_dir, wsgi_target)
    static_dir = check_static_dir(check, app_dir)
    health_path = check["healthPath"]
    if not (isinstance(health_path, str) and re.fullmatch(r"/[A-Za-z0-9._~/-]*", health_path)):
        check.problem("healthPath", health_path, "expected a URL path starting with '/', e.g. /healthz")
    workers = check.whole_number("workers", WORKERS_FROM_SIZE, WORKERS_MAX)
    if workers == WORKERS_FROM_SIZE:
        workers = default_workers(server.size)
    processes = _processes(check, procfile.processes)
    releases_to_keep, release_command, web_commands, linked_dirs = check_releases(
        check, static_dir, procfile, server.instances
    )
    app_env = check_app_environment(check, server.database)
    if app_source is None:
        return None
    return AppSettings(
        name=app_name,
        directory=app_dir.resolve(),
        wsgi_target=wsgi_target,
        source=app_source,
        static_dir=static_dir,
        health_path=health_path,
        workers=workers,
        build_packages=tuple(_build_packages(check)),
        env=app_env,
        processes=processes,
        schedules=_schedules(check),
        releases_to_keep=releases_to_keep,
        release_command=release_command,
        web_commands=web_commands,
        linked_dirs=linked_dirs,
        site=site,
    )


def check_app_source(check: Check, app_dir: Path, wsgi_target: Any) -> AppSource | None:
    """What the app's directory holds: its dependency files and where its WSGI target's module imports from."""
    target = _WSGI_TARGET.match(wsgi_target) if isinstance(wsgi_target, str) else None
    app_source: AppSource | None = None
    if not app_dir.is_dir():
        check.problem(
            "appDir", check["appDir"], f"expected a directory holding the Flask app; {app_dir} does not exist"
        )
    else:
        import_root = module_root(app_dir, target["module"]) if target else ""
        if import_root is None:
            check.problem(
                "wsgiTarget",
                wsgi_target,
                f"module {target['module'] if target else ''} is not in {app_dir} (looked for a .py file "
                f"or a package, in the app directory and in {SRC_LAYOUT_DIR}/)",
            )
        try:
            app_source = inspect_app(app_dir, import_root or "")
        except AppSourceError as err:
            check.problem("appDir", check["appDir"], str(err))
    if not target:
        check.problem(
            "wsgiTarget",
            wsgi_target,
            "expected module:callable or module:factory(), e.g. wsgi:app or myproject:create_app()",
        )
    return app_source


def check_static_dir(check: Check, app_dir: Path) -> str | None:
    static_dir = check.optional("staticDir")
    if static_dir is not None:
        static_path = Path(str(static_dir))
        if static_path.is_absolute() or ".." in static_path.parts:
            check.problem("staticDir", static_dir, "expected a path inside appDir, relative to it")
        elif app_dir.is_dir() and not (app_dir / static_path).is_dir():
            check.problem("staticDir", static_dir, f"expected a directory; {app_dir / static_path} does not exist")
    return None if static_dir is None else str(static_dir)


def check_app_environment(check: Check, database: str) -> dict[str, SecretStr]:
    """The app's environment variables: names it may set, single-line values (never shown in a problem)."""
    app_env: dict[str, SecretStr] = {}
    raw_env = check["appEnv"]
    if not isinstance(raw_env, Mapping):
        check.problem("appEnv", raw_env, "expected a map of variable names to string values")
        return app_env
    for name, value in raw_env.items():
        if database == "postgres" and name == DATABASE_URL:
            check.problem(
                "appEnv",
                name,
                "expected no DATABASE_URL with database = 'postgres': the deploy sets it to the cluster's "
                "connection string",
            )
        elif not _ENV_NAME.match(str(name)) or name in RESERVED_ENV_NAMES:
            check.problem(
                "appEnv",
                name,
                "expected variable names of letters, digits and '_', not starting with a digit, "
                f"and none of {', '.join(sorted(RESERVED_ENV_NAMES))}",
            )
        elif not isinstance(value, str) or any(c in value for c in "\n\r\0"):
            check.problems.append(
                f"flask-droplet:appEnv.{name} = ********: expected a single-line string "
                "(no newline or NUL; numbers must be quoted)"
            )
        else:
            app_env[name] = SecretStr(value)
    return app_env


def check_releases(
    check: Check, static_dir: str | None, procfile: AppProcfile, instances: int
) -> tuple[int, tuple[str, ...], tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """Releases: how many stay for rollback, the commands each runs before it goes live (releaseCommand, else
    the Procfile's `release:`; then what the Procfile's `web:` line runs before Gunicorn), the paths they share
    (none when several droplets would each keep their own)."""
    releases_to_keep = check.whole_number("releasesToKeep", RELEASES_TO_KEEP_MIN, RELEASES_TO_KEEP_MAX)
    release_command: list[str] = []
    raw_command = check["releaseCommand"] or procfile.release
    if not isinstance(raw_command, str):
        check.problem("releaseCommand", raw_command, "expected a command line as a string, e.g. 'flask db upgrade'")
    else:
        try:
            release_command = shlex.split(raw_command)
        except ValueError as err:
            check.problem("releaseCommand", raw_command, f"expected a command line with balanced quotes ({err})")
    linked_dirs = _linked_dirs(check, static_dir)
    if instances > 1 and linked_dirs:
        check.problem(
            "linkedDirs",
            linked_dirs,
            f"expected none with instances = {instances}: each droplet would keep its own copy of these "
            "files; keep them in the database or in object storage (DigitalOcean Spaces)",
        )
    # Each command once: a web line that migrates, with the same migration as releaseCommand, migrates once.
    web_commands: list[tuple[str, ...]] = []
    for command in procfile.web.before if procfile.web else ():
        if command != tuple(release_command) and command not in web_commands:
            web_commands.append(command)
    return releases_to_keep, tuple(release_command), tuple(web_commands), tuple(linked_dirs)


def check_notifications(check: Check) -> NotifySettings:
    """Whom the droplet tells when something goes wrong (the webhooks are secrets), and whether of each release."""
    return NotifySettings(
        webhooks=_notify_webhooks(check["notifyWebhooks"], check.problems),
        on_live=check.boolean("notifyOnLive"),
    )


def check_https_and_dns(check: Check) -> SiteSettings:
    """The site's names, its certificate (HTTPS, the ACME server, HSTS) and the DNS zone DigitalOcean manages."""
    domain = check.optional("domain")
    if isinstance(domain, str):
        domain = domain.lower()
    if domain is not None and not _is_hostname(domain):
        check.problem("domain", domain, "expected a fully qualified hostname such as weather.example.org, or empty")

    https = check.boolean("https")
    hsts_preload = check.boolean("hstsPreload")
    www_alias = check.boolean("wwwAlias")
    acme_server = check["acmeServer"]
    acme_url = ACME_SERVERS.get(acme_server) if isinstance(acme_server, str) else None
    if acme_url is None:
        if isinstance(acme_server, str) and re.fullmatch(
            r"https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?", acme_server
        ):
            acme_url = acme_server
        else:
            check.problem(
                "acmeServer", acme_server, f"expected {' or '.join(ACME_SERVERS)}, or an ACME directory https:// URL"
            )
    acme_email = check.optional("acmeEmail")
    if acme_email is not None and not (isinstance(acme_email, str) and _EMAIL.match(acme_email)):
        check.problem("acmeEmail", acme_email, "expected an email address such as admin@example.org, or empty")
    dns_zone = check_dns_zone(check, domain)
    if domain is None:
        for key, value in (("wwwAlias", www_alias), ("hstsPreload", hsts_preload)):
            if value:
                check.problem(key, value, "expected false without a domain: it applies to a domain's names only")
    if hsts_preload and not https:
        check.problem("hstsPreload", hsts_preload, "expected false when https is false: HSTS needs HTTPS")
    return SiteSettings(
        domain=domain,
        https=https,
        acme_server=acme_url or "",
        acme_email=acme_email,
        hsts_preload=hsts_preload,
        www_alias=www_alias,
        dns_zone=dns_zone,
        # Brought for a Load Balancer only, once the fleet is known: `check_balancer_certificate`.
        balancer_certificate=None,
        balancer_certificate_key=None,
    )


def check_dns_zone(check: Check, domain: Any) -> str | None:
    dns_zone = check.optional("dnsZone")
    if isinstance(dns_zone, str):
        dns_zone = dns_zone.lower().rstrip(".")
    if dns_zone is not None:
        if not _is_hostname(dns_zone):
            check.problem(
                "dnsZone", dns_zone, "expected a DNS zone managed in DigitalOcean such as example.org, or empty"
            )
        elif not (isinstance(domain, str) and (domain == dns_zone or domain.endswith(f".{dns_zone}"))):
            check.problem(
                "dnsZone", dns_zone, f"expected the zone that holds domain ({domain!r}); set domain to a name in it"
            )
    return None if dns_zone is None else str(dns_zone)


def check_backups(check: Check) -> BackupSettings:
    """The server's backups of the app's state, and their off-site copies: the Spaces region of their bucket,
    how long they stay, the age identity."""
    backup_days = check.whole_number("backupDays", 0, BACKUP_DAYS_MAX)
    backup_interval = check.choice("backupInterval", BACKUP_INTERVALS, f"expected one of {', '.join(BACKUP_INTERVALS)}")
    region = check.optional("offsiteRegion")
    days = check.whole_number("offsiteDays", 1, OFFSITE_DAYS_MAX)
    identity = check.optional("offsiteIdentity")
    recipient = None
    if region is not None and region not in SPACES_REGIONS:
        check.problem("offsiteRegion", region, f"expected a Spaces region ({', '.join(SPACES_REGIONS)}), or empty")
    if identity is not None:
        recipient = age_recipient(identity)
        if recipient is None:
            check.problem(
                "offsiteIdentity",
                identity,
                "expected an age identity, the AGE-SECRET-KEY-1... line that age-keygen prints",
            )
    if region is not None:
        if identity is None:
            check.problems.append(
                "flask-droplet:offsiteIdentity is not set, and offsiteRegion is: make one with age-keygen and set it "
                "with pulumi config set --secret offsiteIdentity AGE-SECRET-KEY-1..."
            )
        if backup_days == 0:
            check.problem("offsiteRegion", region, "expected empty with backupDays 0: there are no backups to copy")
    return BackupSettings(
        days=backup_days,
        interval=backup_interval,
        offsite_region=region,
        offsite_days=days,
        offsite_recipient=recipient if region is not None else None,
        offsite_identity=SecretStr(identity) if region is not None and identity is not None else None,
    )


def age_recipient(identity: Any) -> str | None:
    """The public recipient (age1...) of an age X25519 identity (alone, or in age-keygen's file), or None."""
    if not isinstance(identity, str):
        return None
    lines = [line.strip() for line in identity.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1 or not lines[0].startswith("AGE-SECRET-KEY-1"):
        return None
    try:
        return str(pyrage.x25519.Identity.from_str(lines[0]).to_public())
    except pyrage.IdentityError:
        return None


def check_fleet_and_database(check: Check, server: ServerSettings) -> None:
    """What the database's plan and several droplets rule out."""
    instances, database = server.instances, server.database
    if database == "postgres" and server.database_nodes > 1 and server.database_size == SMALLEST_DATABASE_SIZE:
        check.problem(
            "databaseNodes",
            server.database_nodes,
            f"expected 1 with databaseSize = {SMALLEST_DATABASE_SIZE!r}: DigitalOcean offers standby nodes on "
            "every plan but the smallest, and would refuse the cluster; choose databaseSize db-s-1vcpu-2gb or larger",
        )
    # Checked before any resource exists: each of these would split the app's data between droplets.
    if instances > 1 and database == "sqlite":
        check.problem(
            "database",
            database,
            f"expected postgres (or none, for an app that keeps no data) with instances = {instances}: "
            "each droplet would keep its own SQLite file, and what a visitor saved would depend on "
            "which droplet the balancer sent them to",
        )


def check_balancer_certificate(check: Check, instances: int, site: SiteSettings) -> SiteSettings:
    """The certificate of the Load Balancer's HTTPS: DigitalOcean's Let's Encrypt one, or one the user brings.

    DigitalOcean issues its certificate only for a domain whose DNS it hosts (`dnsZone`); for a
    domain whose DNS is elsewhere the user brings one (`balancerCertificate` and its key). A fleet
    with HTTPS and neither is refused here, naming what to set, before any resource exists.
    """
    pem = check.optional("balancerCertificate")
    key = check.optional("balancerCertificateKey")
    https, domain = site.https, site.domain
    if not (https and instances > 1):
        for name, value in (("balancerCertificate", pem), ("balancerCertificateKey", key)):
            if value is not None:
                check.problems.append(
                    f"flask-droplet:{name} is set: expected empty with instances = {instances} and https = "
                    f"{str(https).lower()}: it is the certificate of a Load Balancer's HTTPS (instances over 1, "
                    "https true); one droplet gets its own from acmeServer"
                )
        return site
    if domain is None:
        check.problem(
            "https",
            https,
            f"expected a domain with instances = {instances}: the Load Balancer's certificate is for a domain "
            "name. Set domain (with dnsZone when DigitalOcean hosts its DNS, or with balancerCertificate and "
            "balancerCertificateKey when it is elsewhere), or https false for plain HTTP at the balancer's address",
        )
        return site
    if pem is None and key is None:
        if site.dns_zone is None:
            check.problem(
                "https",
                https,
                f"expected a certificate the Load Balancer can serve for {domain}, with instances = {instances}: "
                "DigitalOcean issues its Let's Encrypt certificate only for a domain whose DNS it hosts. Set "
                "dnsZone to the domain's zone at DigitalOcean, or bring a certificate: balancerCertificate (PEM, "
                "e.g. certbot's fullchain.pem) and balancerCertificateKey (with --secret, its privkey.pem); "
                "or set https false",
            )
        return site
    if pem is None or key is None:
        given, missing = (
            ("balancerCertificate", "balancerCertificateKey")
            if key is None
            else (
                "balancerCertificateKey",
                "balancerCertificate",
            )
        )
        check.problems.append(
            f"flask-droplet:{missing} is not set, and {given} is: the Load Balancer needs both the certificate "
            "(balancerCertificate, PEM) and its private key (pulumi config set --secret balancerCertificateKey "
            "< privkey.pem)"
        )
        return site
    try:
        chain = check_brought_certificate(str(pem), str(key), site.host_names, datetime.datetime.now(datetime.UTC))
    except CertificateError as error:
        check.problems.extend(f"flask-droplet:balancerCertificate: {reason}" for reason in error.certificate)
        check.problems.extend(f"flask-droplet:balancerCertificateKey = ********: {reason}" for reason in error.key)
        return site
    return replace(site, balancer_certificate=chain, balancer_certificate_key=SecretStr(str(key)))


def check_alerts(check: Check, site: SiteSettings) -> AlertSettings:
    """What DigitalOcean watches and whom it tells: the droplet's thresholds, the site's latency and certificate."""
    # Thresholds are checked even without alertEmails, so adding an address later cannot fail on them.
    emails = check.strings("alertEmails")
    for address in emails:
        if not _EMAIL.match(address):
            check.problem("alertEmails", address, "expected email addresses such as ops@example.org")
    alerts = AlertSettings(
        emails=tuple(dict.fromkeys(emails)),
        cpu_percent=check.whole_number("alertCpuPercent", ALERT_PERCENT_MIN, ALERT_PERCENT_MAX),
        memory_percent=check.whole_number("alertMemoryPercent", ALERT_PERCENT_MIN, ALERT_PERCENT_MAX),
        disk_percent=check.whole_number("alertDiskPercent", ALERT_PERCENT_MIN, ALERT_PERCENT_MAX),
        window=check.choice(
            "alertWindow", ALERT_WINDOWS, f"expected one of DigitalOcean's alert windows {', '.join(ALERT_WINDOWS)}"
        ),
        latency_ms=check.whole_number("alertLatencyMs", ALERT_LATENCY_MS_MIN, ALERT_LATENCY_MS_MAX),
        certificate_days=check.whole_number(
            "alertCertificateDays", ALERT_CERTIFICATE_DAYS_MIN, ALERT_CERTIFICATE_DAYS_MAX
        ),
    )
    if site.https and site.domain is None and alerts.certificate_days > ADDRESS_CERTIFICATE_DAYS_MAX:
        check.problem(
            "alertCertificateDays",
            alerts.certificate_days,
            f"expected at most {ADDRESS_CERTIFICATE_DAYS_MAX} without a domain: the address's 6-day certificate "
            "renews with under 3 days left, so more would alert on healthy renewals",
        )
    return alerts


def size_vcpus(size: str) -> int:
    """vCPUs of a droplet size slug: s-2vcpu-4gb, g-4vcpu-16gb, c-8 (CPU-optimized); 1 when it does not say."""
    match = re.search(r"(\d+)vcpu", size) or re.fullmatch(r"c2?-(\d+)(-.*)?", size)
    return int(match[1]) if match else 1


def default_workers(size: str) -> int:
    """Gunicorn's sync workers for a droplet size: 2 x vCPUs + 1, Gunicorn's own advice.

    Sync workers, because nginx in front buffers every request and response: a worker
    never waits on a slow client, only on the app, so one per vCPU keeps the CPU busy and
    the second (plus one) covers the moments a worker waits on its database or a file.
    Measured with scripts/bench on the rehearsal (1 vCPU, 3 workers; docs/benchmarks.md):
    gthread workers of 4 threads served as many requests a second as sync workers (within
    5%, in two runs) with a worse p99 (303 ms against 192 ms on `/`, 160 against 102 on the
    API), so sync.
    """
    return min(WORKERS_MAX, 2 * size_vcpus(size) + 1)


def ssh_key_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint DigitalOcean gives an OpenSSH public key line: 16 hex pairs joined by ':'.

    The same digest `ssh-keygen -l -E md5` prints, of the key's base64-decoded data: the
    comment does not enter it, so a key is the same key whatever its comment says.
    """
    digest = hashlib.md5(base64.b64decode(public_key.split()[1]), usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def volume_name(app_name: str, stack: str) -> str:
    """The Volume's name: `APP-STACK-state`, in what DigitalOcean accepts (a-z, 0-9, '-'; 64 at most)."""
    stack_part = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-") or "stack"
    return f"{app_name}-{stack_part[: 64 - len(app_name) - len('--state')].strip('-')}-state"


def _show(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return "********"
    return repr(value)


def _string_list(value: Any, key: str, problem: Problem) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problem(key, value, "expected a list of strings")
        return []
    return [v.strip() for v in value]


def _boolean(value: Any, key: str, problem: Problem) -> bool:
    # `pulumi config set` hands booleans over as the strings "true" and "false".
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        problem(key, value, "expected true or false")
        return False
    return value


def _bounded_int(value: Any, key: str, low: int, high: int, problem: Problem) -> int:
    # YAML and `pulumi config set` hand numbers over as strings; bool is an int subclass.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problem(key, value, f"expected a whole number from {low} to {high}")
        return low
    return value


def _ssh_public_key_problem(key: str) -> str | None:
    parts = key.split()
    accepted = f"expected an OpenSSH public key line: one of {', '.join(_SSH_KEY_TYPES)}, base64 data, optional comment"
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        return accepted
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return f"{accepted} (the key data is not base64)"
    # The blob starts with the key type as a length-prefixed string.
    length = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + length].decode("ascii", "replace") != parts[0]:
        return f"{accepted} (the key data does not match its type {parts[0]})"
    return None


def _linked_dirs(check: Check, static_dir: str | None) -> list[str]:
    key = "linkedDirs"
    accepted = (
        "expected relative paths inside appDir, e.g. uploads or myapp/media: parts of letters, digits, '.', "
        "'_' and '-', not inside staticDir (nginx serves that from the release), "
        f"none of {', '.join(sorted(UNLINKABLE))}"
    )
    paths: list[str] = []
    for path in check.strings(key):
        parts = path.strip("/").split("/") if not path.startswith("/") else []
        static_parts = tuple(Path(static_dir).parts) if static_dir else ()
        if (
            not parts
            or not all(_RELATIVE_PATH_PART.match(part) for part in parts)
            or parts[0] in UNLINKABLE
            or (static_parts and tuple(parts[: len(static_parts)]) == static_parts)
            or (static_parts and static_parts[: len(parts)] == tuple(parts))
        ):
            check.problem(key, path, accepted)
        elif "/".join(parts) not in paths:
            paths.append("/".join(parts))
    return paths


def _notify_webhooks(value: Any, problems: list[str]) -> tuple[Webhook, ...]:
    """`notifyWebhooks`: one address or a list of them, each `URL` or `FORM+URL` (slack+, discord+, json+).

    The addresses are secrets: a problem names an entry by its place and form, never its text."""
    accepted = (
        f"expected up to {WEBHOOKS_MAX} webhook addresses (a string or a list of strings), each an https:// URL "
        "(http:// too, for a receiver on a private network), optionally prefixed with its body's form: "
        f"{', '.join(f'{form}+https://...' for form in WEBHOOK_FORMS)}; without a prefix, hooks.slack.com takes "
        "Slack's body, discord.com/api/webhooks/ Discord's, anything else plain JSON"
    )
    entries = [value] if isinstance(value, str) and value else value
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        problems.append(f"flask-droplet:notifyWebhooks = ********: {accepted}")
        return ()
    if len(entries) > WEBHOOKS_MAX:
        problems.append(f"flask-droplet:notifyWebhooks = ******** ({len(entries)} addresses): {accepted}")
        return ()
    webhooks: list[Webhook] = []
    for place, entry in enumerate(entries, 1):
        given = entry.strip()
        prefix, plus, rest = given.partition("+")
        form, url = (prefix, rest) if plus and prefix in WEBHOOK_FORMS else ("", given)
        if not _WEBHOOK_URL.match(url):
            shown = f"{form}+" if form else ""
            problems.append(f"flask-droplet:notifyWebhooks[{place - 1}] = {shown}********: {accepted}")
            continue
        webhook = Webhook(form or webhook_form(url), SecretStr(url))
        if webhook not in webhooks:
            webhooks.append(webhook)
    return tuple(webhooks)


#: A Debian package name (Debian Policy 5.6.1).
_APT_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def _build_packages(check: Check) -> list[str]:
    """buildPackages: apt package names, each once."""
    key = "buildPackages"
    packages: list[str] = []
    for name in check.strings(key):
        if not _APT_PACKAGE.match(name):
            check.problem(
                key,
                name,
                "expected Ubuntu package names (lowercase letters, digits, '+', '-' and '.'), "
                "e.g. build-essential, python3-dev, libpq-dev",
            )
        elif name not in packages:
            packages.append(name)
    return packages


PROCFILE = "Procfile"


def _procfile(app_dir: Path, problem: Problem) -> dict[str, str]:
    """The app's Procfile, when it has one: its processes by name (`web` and `release` among them)."""
    path = app_dir / PROCFILE
    if not path.is_file():
        return {}
    try:
        return parse_procfile(path.read_text())
    except (ProcfileError, UnicodeDecodeError) as err:
        problem("appDir", f"{path.name} in {app_dir}", f"expected a Procfile of lines NAME: COMMAND; {err}")
        return {}


_PROCESS_NAME_RULE = "names of 1-30 lowercase letters, digits, '-' and '_', starting with a letter or digit"
_PROCESSES_ACCEPTED = (
    "expected a map of process names to a command line, or to {command, stopTimeoutSeconds, stopSignal, "
    f'droplets}}, e.g. {{"worker": "huey_consumer myapp.tasks.huey"}}; {_PROCESS_NAME_RULE}, none of web, release'
)


def _processes(check: Check, procfile: Mapping[str, str]) -> tuple[Process, ...]:
    """`processes`: NAME: COMMAND, or NAME: {command, stopTimeoutSeconds, stopSignal, droplets}; with the
    Procfile's processes (whose options an entry without a command sets), `web` and `release` apart."""
    key = "processes"
    value = check[key]
    found: dict[str, Process] = {}
    for name, command in procfile.items():
        if name in (PROCFILE_WEB, PROCFILE_RELEASE):
            continue
        if not NAME.match(name):
            check.problem("appDir", f"Procfile {name}: {command}", f"expected Procfile process {_PROCESS_NAME_RULE}")
            continue
        found[name] = Process(name, command)
    if not isinstance(value, Mapping):
        check.problem(key, value, _PROCESSES_ACCEPTED)
        return tuple(found.values())
    for name, entry in value.items():
        process = _process(check, key, name, entry, procfile)
        if process is not None:
            found[process.name] = process
    return tuple(found[name] for name in sorted(found))


def _process(check: Check, key: str, name: Any, entry: Any, procfile: Mapping[str, str]) -> Process | None:
    """One entry of `processes`, or None when it is refused (the problem says why)."""
    refuse = functools.partial(check.problem, key, {name: entry})
    options: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {"command": entry}
    command = options.get("command", procfile.get(str(name)))
    unknown = set(options) - {"command", "stopTimeoutSeconds", "stopSignal", "droplets"}
    if not isinstance(name, str) or not NAME.match(name) or name in (PROCFILE_WEB, PROCFILE_RELEASE) or unknown:
        refuse(_PROCESSES_ACCEPTED)
        return None
    if "command" in options and name in procfile:
        refuse(f"expected no command for {name!r}: the Procfile gives it one; set only its options here")
        return None
    if not isinstance(command, str) or not command.strip() or any(c in command for c in "\n\r\0"):
        refuse(f"expected a one-line command for {name!r}; {_PROCESSES_ACCEPTED}")
        return None
    stop_signal = str(options.get("stopSignal", "SIGTERM")).upper()
    stop_signal = stop_signal if stop_signal.startswith("SIG") else f"SIG{stop_signal}"
    if stop_signal not in STOP_SIGNALS:
        refuse(f"expected stopSignal one of {', '.join(STOP_SIGNALS)}")
        return None
    droplets = options.get("droplets", "all")
    if droplets not in DROPLETS:
        refuse("expected droplets all (every droplet) or first (the first only)")
        return None
    timeout = _bounded_int(
        options.get("stopTimeoutSeconds", STOP_TIMEOUT_DEFAULT),
        f"{key}.{name}.stopTimeoutSeconds",
        STOP_TIMEOUT_MIN,
        STOP_TIMEOUT_MAX,
        check.problem,
    )
    return Process(name, command.strip(), timeout, stop_signal, droplets)


def _schedules(check: Check) -> tuple[Schedule, ...]:
    """`schedules`: NAME: {command, when, randomDelaySeconds}, `when` a systemd calendar event or a cron expression."""
    key = "schedules"
    value = check[key]
    accepted = (
        'expected a map of job names to {command, when, randomDelaySeconds}, e.g. {"nightly": {"command": '
        '"flask --app myapp report", "when": "*-*-* 03:00:00"}} (or when: "0 3 * * *"); names of 1-30 '
        "lowercase letters, digits, '-' and '_'"
    )
    if not isinstance(value, Mapping):
        check.problem(key, value, accepted)
        return ()
    found: list[Schedule] = []
    for name, entry in value.items():
        if (
            not isinstance(name, str)
            or not NAME.match(name)
            or not isinstance(entry, Mapping)
            or set(entry) - {"command", "when", "randomDelaySeconds"}
        ):
            check.problem(key, {name: entry}, accepted)
            continue
        command, when = entry.get("command"), entry.get("when")
        if not isinstance(command, str) or not command.strip() or any(c in command for c in "\n\r\0"):
            check.problem(key, {name: entry}, f"expected a one-line command for {name!r}; {accepted}")
            continue
        if not isinstance(when, str) or not when.strip():
            check.problem(key, {name: entry}, f"expected when for {name!r}; {accepted}")
            continue
        try:
            calendar = to_calendar(when)
        except CalendarError as err:
            check.problem(
                f"{key}.{name}.when",
                when,
                f"expected a systemd calendar event ('*-*-* 03:00:00', 'Mon..Fri 09:00', daily) or a cron expression "
                f"('0 3 * * *'): {err}",
            )
            continue
        delay = _bounded_int(
            entry.get("randomDelaySeconds", 0), f"{key}.{name}.randomDelaySeconds", 0, RANDOM_DELAY_MAX, check.problem
        )
        found.append(Schedule(name, command.strip(), " ".join(when.split()), calendar, delay))
    return tuple(sorted(found, key=lambda schedule: schedule.name))


def _is_hostname(name: Any) -> bool:
    if not isinstance(name, str) or len(name) > 253:
        return False
    labels = name.rstrip(".").split(".")
    return len(labels) >= 2 and all(_HOST_LABEL.match(label) for label in labels) and not labels[-1].isdigit()
