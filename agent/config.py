"""What the agent knows of its stack: `settings.json`, rendered by `core/render.py`.

Every name here is a key of that file; the project's `Settings` and `ServerLayout`
decide the values, the agent only reads them.
"""

from __future__ import annotations

import dataclasses
import json
import pkgutil
from dataclasses import dataclass
from typing import Any

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
    app_name: str
    app_user: str
    root: str
    releases: str
    current: str
    state_dir: str
    state_device: str
    """The DigitalOcean Volume the state directory lives on (volumeSize); empty for none."""
    state_volume_gib: int
    state_mount_unit: str
    state_format_unit: str
    config_dir: str
    env_file: str
    service_unit: str
    socket_unit: str
    candidate_unit: str
    candidate_socket: str
    candidate_port: int
    nginx_site: str
    nginx_site_link: str
    access_log: str
    backup_days: int
    """Backups of the state directory (backupDays; 0 for none), taken by `backup_unit`, kept in `backups`."""
    backup_unit: str
    backup_script: str
    backups: str
    backup_incoming: str
    static_dir: str
    """Static files (staticDir, inside the app), stored by content in `assets`, served at /static/_v/."""
    assets: str
    proxy_cache: str
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
    """With database sqlite, the app's DATABASE_URL; empty otherwise."""
    behind_balancer: bool
    balancer_port: int
    balancer_drain: str
    out_of_rotation_seconds: int
    into_rotation_seconds: int
    https: bool
    domain: str
    host_names: tuple[str, ...]
    acme_server: str
    acme_email: str
    acme_webroot: str
    certificate_dir: str
    certbot_version: str
    certbot: str
    renew_unit: str
    health_host: str
    health_path: str
    nginx_worker_connections: int
    ufw_allowed_ports: tuple[str, ...]
    """What the host firewall lets in; everything else inbound is denied."""
    balancer_networks: tuple[str, ...]
    """Behind a balancer, the private networks its health check comes from; empty otherwise."""
    ssh_choices_dir: str
    """sshd's algorithm drop-ins, one per OpenSSH generation; the first boot installs the one it reads."""
    ssh_crypto_drop_in: str
    sandbox: tuple[tuple[str, str], ...]
    """The service's sandbox, for the checks that run each release before it is live."""
    build_packages: tuple[str, ...] = ()
    """apt packages installed before a new virtualenv is, for dependencies built from source (buildPackages)."""
    notify_file: str = ""
    """The webhooks to tell (root's alone, from the deploy's stdin); no file, no notifications."""
    notify_on_live: bool = False
    """Tell the webhooks of each release that goes live, too (notifyOnLive)."""
    offsite: bool = False
    """Each backup is copied off-site (offsiteRegion) by `offsite_unit`, with `offsite_script` run by
    `offsite_python` (boto3's virtualenv), to the bucket that `offsite_file` names (root's alone)."""
    offsite_unit: str = ""
    offsite_script: str = ""
    offsite_file: str = ""
    offsite_python: str = ""
    boto3_version: str = ""
    dns_zone: str = ""
    """The domain's zone at DigitalOcean, whose records the program writes (dnsZone); "" when they are the user's."""

    @property
    def uv(self) -> str:
        return f"/opt/flaskdroplet/uv-{self.uv_version}/bin/uv"

    @property
    def lock_file(self) -> str:
        return f"/run/lock/{self.app_name}-deploy.lock"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        values = dict(data)
        values["release_command"] = tuple(values["release_command"])
        values["web_commands"] = tuple(tuple(command) for command in values.get("web_commands", ()))
        for name in ("host_names", "ufw_allowed_ports", "balancer_networks"):
            values[name] = tuple(values[name])
        values["sandbox"] = tuple((key, value) for key, value in values["sandbox"])
        values["build_packages"] = tuple(values.get("build_packages", ()))
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load() -> Config:
    """The settings shipped inside the agent's archive, beside its code."""
    data = pkgutil.get_data("agent", "settings.json")
    if data is None:
        raise RuntimeError("the agent has no settings.json")
    return Config.from_dict(json.loads(data))
