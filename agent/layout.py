"""Where things live on the server, for one app: its directories, units and sockets, and the agent's own files.

`ServerLayout` holds every path of one app as a field. The program derives each from the app's name and the
pinned versions of the tools it runs, and says there what each is for (`core/layout.py`); it renders with the
layout (`Settings.layout`) and writes it into the agent's `settings.json` as one object, which the agent reads
back (`Config.layout`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLayout:
    """Where things live on the server, for one app."""

    app_name: str
    app_user: str
    root: str
    releases: str
    current: str
    previous: str
    venvs: str
    public_ipv4_file: str
    role_file: str
    lock_file: str
    assets: str
    proxy_cache: str
    state_dir: str
    sqlite_url: str
    state_mount_unit: str
    state_format_unit: str
    balancer_drain: str
    backups: str
    backup_incoming: str
    backup_unit: str
    backup_script: str
    offsite_unit: str
    offsite_script: str
    offsite_file: str
    offsite_python: str
    access_log: str
    acme_webroot: str
    certificate_dir: str
    certificate_renewal: str
    certbot: str
    renew_unit: str
    uv: str
    config_dir: str
    notify_file: str
    notify_unit: str
    env_file: str
    socket_path: str
    service_unit: str
    socket_unit: str
    candidate_unit: str
    candidate_socket_path: str
    candidate_port: int
    nginx_site: str
    nginx_site_link: str
    authorized_keys: str
    incoming: str
    deploy_script: str
    agent_archive: str
    ssh_choices_dir: str
    ssh_crypto_drop_in: str

    @property
    def on_failure(self) -> str:
        """What a unit's `OnFailure=` names: the notify unit, for the unit that failed (%n)."""
        return self.notify_unit.replace("@.", "@%n.")

    def bundle(self, release_id: str) -> str:
        return f"{self.incoming}/bundles/{release_id}.tar.gz"

    def process_unit(self, name: str) -> str:
        """The service of one of the app's processes (`processes`, the Procfile's)."""
        return f"{self.app_name}-process-{name}.service"

    def schedule_unit(self, name: str) -> str:
        """The service and timer (`.service`, `.timer`) of one of the app's scheduled jobs, without the suffix."""
        return f"{self.app_name}-schedule-{name}"
