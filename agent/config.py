"""What the agent knows of its stack: `settings.json`, a `Config` that `core/render.py` writes and the agent
reads back; every path is in its `layout`."""

from __future__ import annotations

import dataclasses
import json
import pkgutil
from dataclasses import dataclass

from agent.layout import ServerLayout
from agent.strict import JsonValue, read

#: Seconds a release has to answer its health check, as a candidate and once live.
HEALTH_TRIES = 30
#: Seconds a release's processes must keep running as candidates before it may go live.
PROCESS_SETTLE_SECONDS = 5
#: Disk kept free beyond what a release is estimated to need, in MiB, and the estimate of a new
#: virtualenv when no release has one yet to measure.
DISK_MARGIN_MIB = 64
NEW_VENV_MIB = 200
#: Memory kept free beyond what the app's processes are measured to need, in MiB.
MEMORY_MARGIN_MIB = 64
#: How long a deploy waits for another one, and for apt or dpkg, in seconds.
LOCK_WAIT_SECONDS = 600
APT_WAIT_SECONDS = 600


@dataclass(frozen=True)
class Config:
    layout: ServerLayout
    state_device: str
    """The DigitalOcean Volume the state directory lives on (volumeSize); empty for none."""
    state_volume_gib: int
    backup_days: int
    """Backups of the state directory (backupDays; 0 for none)."""
    offsite: bool
    """Each backup is copied off-site (offsiteRegion), by the layout's `offsite_unit`."""
    boto3_version: str
    static_dir: str
    """Static files (staticDir, inside the app), stored by content in the layout's `assets`."""
    wsgi_target: str
    workers: int
    gunicorn_version: str
    uv_version: str
    import_root: str
    """Where the app's packages import from, inside the release's app directory ("" or src)."""
    release_command: tuple[str, ...]
    """Run once for each new release, before it goes live (releaseCommand); empty for none."""
    web_commands: tuple[tuple[str, ...], ...]
    """What the Procfile's web line runs before Gunicorn: once for each new release, after the release command."""
    releases_to_keep: int
    sqlite_url: str
    """With database sqlite, the app's DATABASE_URL (the layout's `sqlite_url`); empty otherwise."""
    behind_balancer: bool
    balancer_port: int
    out_of_rotation_seconds: int
    into_rotation_seconds: int
    https: bool
    domain: str
    host_names: tuple[str, ...]
    dns_zone: str
    """The domain's zone at DigitalOcean, whose records the program writes (dnsZone); "" when they are the user's."""
    acme_server: str
    acme_email: str
    certbot_version: str
    health_host: str
    health_path: str
    nginx_worker_connections: int
    ufw_allowed_ports: tuple[str, ...]
    """What the host firewall lets in; everything else inbound is denied."""
    balancer_networks: tuple[str, ...]
    """Behind a balancer, the private networks its health check comes from; empty otherwise."""
    notify_on_live: bool
    """Tell the webhooks of each release that goes live, too (notifyOnLive)."""
    sandbox: tuple[tuple[str, str], ...]
    """The service's sandbox, for the checks that run each release before it is live."""
    build_packages: tuple[str, ...]
    """apt packages installed before a new virtualenv is, for dependencies built from source (buildPackages)."""

    @property
    def app_name(self) -> str:
        return self.layout.app_name

    @classmethod
    def from_json_object(cls, data: JsonValue) -> Config:
        """`settings.json` as `to_json` writes it; `InputError` for a field unknown or missing, or of another type."""
        return read(cls, data, "settings.json")

    def to_json(self) -> str:
        """`settings.json`: every field, the layout one object among them."""
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"


def load() -> Config:
    """The settings shipped inside the agent's archive, beside its code."""
    data = pkgutil.get_data("agent", "settings.json")
    if data is None:
        raise RuntimeError("the agent has no settings.json")
    return Config.from_json_object(json.loads(data))
