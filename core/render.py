"""Render every file the server receives from `Settings`: pure functions, no Pulumi.

The templates live in `cloud-init/` at the top of the project; each is rendered with a
context that names what it reads, no more. Where things go on the server is
`core/layout.py`, the choices they carry `core/policy.py`, and the cloud-init document
`core/cloudinit.py`. The same text goes to a droplet (through Pulumi) and to the local
rehearsal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from agent import manifest
from agent.config import Config
from agent.manifest import Entry
from core.balancer import BALANCER_CHECK, PRIVATE_NETWORKS
from core.layout import (
    DEPLOY_USER,
    JOURNALD_DROP_IN,
    NEEDRESTART_CONF,
    NGINX_MAIN_CONF,
    NGINX_SANDBOX_DROP_IN,
    SSH_CHOICES_DIR,
    UFW_AFTER_INIT,
    systemd_escape_path,
    volume_device,
)
from core.policy import (
    BACKUP_RANDOM_DELAY,
    BOTO3_VERSION,
    CERTBOT_VERSION,
    GUNICORN_VERSION,
    NGINX_WORKER_CONNECTIONS,
    SERVICE_SANDBOX,
    SSH_CIPHERS,
    SSH_HOST_KEY_ALGORITHMS,
    SSH_KEX,
    SSH_MACS,
    UFW_ALLOWED_PORTS,
    UV_VERSION,
)
from core.settings import Settings

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
#: The server agent's package, shipped to the server with each deploy.
AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"

#: Hardening files written at first boot (lynis's suggestions that suit a droplet): target and template.
HARDENING_FILES = (
    ("/etc/sysctl.d/60-flaskdroplet.conf", "sysctl.conf.j2"),
    ("/etc/modprobe.d/flaskdroplet.conf", "modprobe.conf.j2"),
    ("/etc/security/limits.d/flaskdroplet.conf", "limits.conf.j2"),
    ("/etc/issue", "issue.j2"),
    ("/etc/issue.net", "issue.j2"),
)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - config files and shell, not HTML
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


_ENV = _environment()


def _render(template: str, **context: Any) -> str:
    """TEMPLATE with CONTEXT, the names it reads (StrictUndefined: a name it lacks is an error)."""
    return _ENV.get_template(template).render(**context)


def render_nginx_site(settings: Settings, tls: bool = False) -> str:
    """The nginx site: reverse proxy to the Gunicorn socket, static files, unknown hosts dropped.

    With `tls`, the site once its certificate exists: HTTPS, and HTTP only for ACME
    challenges and a redirect.
    """
    return _render(
        "nginx-site.conf.j2",
        settings=settings,
        layout=settings.layout,
        tls=tls,
        balancer=BALANCER_CHECK,
        private_networks=PRIVATE_NETWORKS,
    )


def render_nginx_main(settings: Settings) -> str:
    """Settings of nginx's main context (the file limit of its workers)."""
    return _render("nginx-main.conf.j2", nginx_worker_connections=NGINX_WORKER_CONNECTIONS)


def render_nginx_sandbox(settings: Settings) -> str:
    """A systemd drop-in that sandboxes nginx, which holds the TLS private key."""
    return _render("nginx-sandbox.conf.j2")


def render_needrestart_conf(settings: Settings) -> str:
    """needrestart's drop-in (Perl): nginx and the app are left for the next deploy or reboot to restart."""
    return _render("needrestart.conf.j2", settings=settings)


def render_sshd_crypto(settings: Settings, choice: str) -> str:
    """One of sshd's algorithm drop-ins: `classic` (OpenSSH 9.6) or `post-quantum` (OpenSSH 9.9 and later)."""
    policy, kex = SSH_KEX[choice]
    return _render(
        "sshd-crypto.conf.j2",
        settings=settings,
        policy=policy,
        post_quantum=choice == "post-quantum",
        host_key_algorithms=SSH_HOST_KEY_ALGORITHMS,
        kex=kex,
        ciphers=SSH_CIPHERS,
        macs=SSH_MACS,
    )


def render_ufw_after_init(settings: Settings) -> str:
    """ufw's after.init hook: a rule that keeps the app's user from the metadata service."""
    return _render("ufw-after.init.j2", layout=settings.layout)


def render_renew_units(settings: Settings) -> dict[str, str]:
    """The certificate's renewal: a service running `certbot renew` and the timer that starts it."""
    layout = settings.layout
    return {
        f"{layout.renew_unit}.service": _render("certbot-renew.service.j2", settings=settings, layout=layout),
        f"{layout.renew_unit}.timer": _render("certbot-renew.timer.j2", settings=settings),
    }


def render_backup_files(settings: Settings) -> dict[str, str]:
    """The state directory's backups, by file name in the bundle: the script, its service and its timer.

    Empty with `backupDays` 0.
    """
    if not settings.backups.days:
        return {}
    layout = settings.layout
    delay = BACKUP_RANDOM_DELAY[settings.backups.interval]
    return {
        "state-backup.py": (AGENT_DIR / "backup.py").read_text(),
        f"{layout.backup_unit}.service": _render(
            "state-backup.service.j2", settings=settings, layout=layout, sandbox=SERVICE_SANDBOX
        ),
        f"{layout.backup_unit}.timer": _render("state-backup.timer.j2", settings=settings, random_delay=delay),
    } | render_offsite_files(settings)


def render_offsite_files(settings: Settings) -> dict[str, str]:
    """The off-site copies of the backups, by file name in the bundle: the script and its service.

    Empty without `offsiteRegion`.
    """
    if not (settings.backups.days and settings.backups.offsite_region):
        return {}
    layout = settings.layout
    return {
        "offsite.py": (AGENT_DIR / "offsite.py").read_text(),
        f"{layout.offsite_unit}.service": _render("offsite.service.j2", settings=settings, layout=layout),
    }


def render_notify_unit(settings: Settings) -> str:
    """The template unit that tells the webhooks a unit failed: `OnFailure=` of the app's and the deploy's units."""
    return _render("notify@.service.j2", settings=settings, layout=settings.layout)


def render_journald_conf(settings: Settings) -> str:
    """journald's drop-in: the journal kept on disk across reboots, and bounded in size."""
    return _render("journald.conf.j2", settings=settings)


def render_service_unit(settings: Settings) -> str:
    """The systemd service that runs Gunicorn as the app's user."""
    return _render("gunicorn.service.j2", settings=settings, layout=settings.layout, sandbox=SERVICE_SANDBOX)


def render_socket_unit(settings: Settings) -> str:
    """The systemd socket Gunicorn is activated on; only nginx's user may connect."""
    return _render("gunicorn.socket.j2", settings=settings, layout=settings.layout)


def render_sshd_config(settings: Settings) -> str:
    """sshd drop-in: keys only, no root, only the deploy user."""
    return _render("sshd.conf.j2", deploy_user=DEPLOY_USER)


def render_gunicorn_conf(settings: Settings) -> str:
    """Gunicorn's settings for each release (`server/gunicorn.conf.py` in the bundle)."""
    return _render("gunicorn.conf.py.j2", settings=settings)


def render_deploy_script(settings: Settings) -> str:
    """deploy.sh: what the plan and the admin run over SSH, as root; it hands its words to the agent."""
    return _render("deploy.sh.j2", settings=settings, layout=settings.layout)


def render_agent_settings(settings: Settings) -> str:
    """`settings.json` of the server agent: everything it knows of the stack, in one file (`agent.config.Config`)."""
    layout = settings.layout
    return Config(
        layout=layout,
        state_device=volume_device(settings.server.volume_name) if settings.server.volume_name else "",
        state_volume_gib=settings.server.volume_size,
        backup_days=settings.backups.days,
        offsite=bool(settings.backups.days and settings.backups.offsite_region),
        boto3_version=BOTO3_VERSION,
        static_dir=settings.app.static_dir or "",
        wsgi_target=settings.app.wsgi_target,
        workers=settings.app.workers,
        gunicorn_version=GUNICORN_VERSION,
        uv_version=UV_VERSION,
        import_root=settings.app.source.import_root,
        release_command=tuple(settings.app.release_command),
        web_commands=tuple(tuple(command) for command in settings.app.web_commands),
        releases_to_keep=settings.app.releases_to_keep,
        sqlite_url=layout.sqlite_url if settings.server.database == "sqlite" else "",
        behind_balancer=settings.server.behind_balancer,
        balancer_port=BALANCER_CHECK.port,
        out_of_rotation_seconds=BALANCER_CHECK.out_of_rotation_seconds,
        into_rotation_seconds=BALANCER_CHECK.into_rotation_seconds,
        https=settings.server_tls,
        domain=settings.app.site.domain or "",
        host_names=tuple(settings.app.site.host_names),
        dns_zone=settings.app.site.dns_zone or "",
        acme_server=settings.app.site.acme_server,
        acme_email=settings.app.site.acme_email or "",
        certbot_version=CERTBOT_VERSION,
        health_host=settings.app.site.domain or "127.0.0.1",
        health_path=settings.app.health_path,
        nginx_worker_connections=NGINX_WORKER_CONNECTIONS,
        ufw_allowed_ports=tuple(UFW_ALLOWED_PORTS),
        balancer_networks=tuple(PRIVATE_NETWORKS if settings.server.behind_balancer else ()),
        notify_on_live=settings.notifications.on_live,
        sandbox=tuple(SERVICE_SANDBOX),
        build_packages=tuple(settings.app.build_packages),
    ).to_json()


def render_env_file(app_env: dict[str, str] | Any) -> str:
    """The app's environment as a systemd EnvironmentFile.

    Values are double-quoted with POSIX double-quote escapes (systemd reads them the
    same way), so `$`, backticks, quotes and backslashes arrive verbatim.
    """
    lines = ["# The app's environment, from the stack's appEnv. Rendered by flask-droplet.\n"]
    for name in sorted(app_env):
        value = re.sub(r'(["\\`$])', r"\\\1", str(app_env[name]))
        lines.append(f'{name}="{value}"\n')
    return "".join(lines)


def render_state_links(settings: Settings) -> str:
    """`server/state-links` of a release: a line `PATH_IN_APP PATH_IN_STATE_DIR` for each path linked there."""
    return "".join(f"{app_path} {state_path}\n" for app_path, state_path in settings.app.state_links)


def render_state_volume_units(settings: Settings) -> dict[str, str]:
    """The Volume's units, by file name: a file system made only on an empty Volume, and its mount."""
    if settings.server.volume_name is None:
        return {}
    layout = settings.layout
    device = volume_device(settings.server.volume_name)
    return {
        layout.state_format_unit: _render(
            "state-format.service.j2",
            settings=settings,
            layout=layout,
            device=device,
            device_unit=systemd_escape_path(device) + ".device",
        ),
        layout.state_mount_unit: _render("state-volume.mount.j2", settings=settings, layout=layout, device=device),
    }


def systemd_exec_command(command: str) -> str:
    """`ExecStart=` for a shell command line: `/bin/sh -c 'exec COMMAND'` in systemd's own quoting, so that
    systemd passes the line to the shell unchanged (its `$VARIABLES` are the shell's, `%` is no specifier)."""
    line = f"exec {command}"
    quoted = line.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'/bin/sh -c "{quoted}"'


def render_processes(settings: Settings) -> str:
    """`server/processes.json` of a release: its processes and scheduled jobs, and their units' text.

    The agent installs the units of the release it makes live (and of the one a rollback returns to)."""
    layout = settings.layout
    processes, schedules, units = [], [], {}

    def service(template: str, command: str, **extra: object) -> str:
        """A service of the release, run as the app in its sandbox."""
        exec_start = systemd_exec_command(command)
        return _render(
            template, settings=settings, layout=layout, sandbox=SERVICE_SANDBOX, exec_start=exec_start, **extra
        )

    for process in settings.app.processes:
        unit = layout.process_unit(process.name)
        units[unit] = service("app-process.service.j2", process.command, process=process)
        processes.append(dataclasses.asdict(dataclasses.replace(process, unit=unit)))
    for schedule in settings.app.schedules:
        unit = layout.schedule_unit(schedule.name)
        units[f"{unit}.service"] = service("app-schedule.service.j2", schedule.command, schedule=schedule)
        units[f"{unit}.timer"] = _render("app-schedule.timer.j2", settings=settings, schedule=schedule)
        schedules.append(dataclasses.asdict(dataclasses.replace(schedule, unit=unit)))
    return json.dumps({"processes": processes, "schedules": schedules, "units": units}, indent=1) + "\n"


def server_config_files(settings: Settings) -> dict[str, str]:
    """Files under the bundle's `server/` directory: the manifest of the server's files, and what the
    release itself reads (its Gunicorn settings, `state-links`, its processes and scheduled jobs)."""
    return {
        "manifest.json": manifest.dumps(server_manifest(settings)),
        "processes.json": render_processes(settings),
        "state-links": render_state_links(settings),
        "gunicorn.conf.py": render_gunicorn_conf(settings),
    }


def _unit(name: str) -> str:
    return f"/etc/systemd/system/{name}"


def server_manifest(settings: Settings) -> list[Entry]:
    """Every file cloud-init writes at first boot and every file each deploy keeps as rendered, with the
    handlers a change notifies; in the order cloud-init writes them."""
    layout = settings.layout
    reload, app = manifest.DAEMON_RELOAD, manifest.RESTART_APP

    def early(path: str, content: str, mode: str = "0644") -> Entry:
        return Entry(path, content, mode=mode, first_boot="early")

    def deferred(path: str, content: str, mode: str = "0644") -> Entry:
        return Entry(path, content, mode=mode, first_boot="deferred")

    def kept_unit(unit: str, content: str, *notify: str) -> Entry:
        """A unit cloud-init writes once the packages are in, which every deploy keeps as rendered."""
        return Entry(_unit(unit), content, first_boot="deferred", deploy=True, notify=notify)

    entries = [
        # The Volume's units, mounted before anything else in runcmd.
        *(
            Entry(_unit(unit), text, first_boot="early", deploy=True, group="volume", notify=(reload,))
            for unit, text in render_state_volume_units(settings).items()
        ),
        # Before sshd starts: written in cloud-init's first stage.
        early("/etc/ssh/sshd_config.d/10-flaskdroplet.conf", render_sshd_config(settings)),
        *(early(f"{SSH_CHOICES_DIR}/crypto-{choice}.conf", render_sshd_crypto(settings, choice)) for choice in SSH_KEX),
        *(early(path, _render(template)) for path, template in HARDENING_FILES),
        # The journal on disk, bounded, from the first boot on; cloud-init restarts journald in runcmd.
        Entry(
            JOURNALD_DROP_IN,
            render_journald_conf(settings),
            first_boot="early",
            deploy=True,
            notify=(manifest.RESTART_JOURNALD,),
        ),
        # After the packages exist, so nginx's own defaults do not clash with them. The site takes its
        # HTTPS form once a certificate serves, and only if nginx accepts it.
        Entry(
            layout.nginx_site,
            render_nginx_site(settings),
            https_content=render_nginx_site(settings, tls=True) if settings.server_tls else None,
            first_boot="deferred",
            deploy=True,
            check=("nginx", "-t"),
            notify=(manifest.RELOAD_NGINX,),
        ),
        kept_unit(layout.service_unit, render_service_unit(settings), reload, app),
        kept_unit(layout.socket_unit, render_socket_unit(settings), reload, app),
        # Named in the OnFailure= of the units above and below; it does nothing without notifyWebhooks.
        kept_unit(layout.notify_unit, render_notify_unit(settings), reload),
        Entry(
            NGINX_SANDBOX_DROP_IN,
            render_nginx_sandbox(settings),
            first_boot="deferred",
            deploy=True,
            notify=(reload, manifest.RESTART_NGINX, app),
        ),
        # Security updates install themselves every day.
        deferred(
            "/etc/apt/apt.conf.d/20auto-upgrades",
            'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n',
        ),
        # jail.local, which upgrades never touch, as fail2ban's documentation asks.
        deferred("/etc/fail2ban/jail.local", _render("fail2ban-sshd.conf.j2")),
        deferred(NEEDRESTART_CONF, render_needrestart_conf(settings)),
        deferred(NGINX_MAIN_CONF, render_nginx_main(settings)),
        # ufw runs it when it starts: the app may not reach the metadata service.
        deferred(UFW_AFTER_INIT, render_ufw_after_init(settings), mode="0755"),
        # Cloud-init writes them at first boot (with the account's keys the droplet was created with); from
        # the first deploy on, they are the stack's keys as they are now: a key added or removed is a deploy.
        Entry(
            layout.authorized_keys,
            render_authorized_keys(settings),
            owner=f"{DEPLOY_USER}:{DEPLOY_USER}",
            mode="0600",
            deploy=True,
        ),
    ]
    # The certificate's renewal, with HTTPS; without it, gone (and the app's units reloaded for it).
    renew = render_renew_units(settings) if settings.server_tls else {}
    for unit in (f"{layout.renew_unit}.timer", f"{layout.renew_unit}.service"):
        enable = unit if unit.endswith(".timer") else ""
        entries.append(Entry(_unit(unit), renew.get(unit), deploy=True, notify=(reload, app), enable=enable))
    # Backups beside the app: a change reloads systemd and restarts nothing of the app. Turned off, no
    # more are taken; those already taken stay.
    backup = render_backup_files(settings)
    for unit in (f"{layout.backup_unit}.timer", f"{layout.backup_unit}.service"):
        enable = unit if unit.endswith(".timer") else ""
        entries.append(Entry(_unit(unit), backup.get(unit), deploy=True, notify=(reload,), enable=enable))
    entries.append(Entry(layout.backup_script, backup.get("state-backup.py"), deploy=True))
    unit = f"{layout.offsite_unit}.service"
    entries.append(Entry(_unit(unit), backup.get(unit), deploy=True, notify=(reload,)))
    entries.append(Entry(layout.offsite_script, backup.get("offsite.py"), deploy=True))
    return entries


def render_authorized_keys(settings: Settings) -> str:
    """The deploy user's authorized_keys: `sshPublicKeys` and the keys named by `sshKeyFingerprints`."""
    header = "# The stack's SSH keys (sshPublicKeys, sshKeyFingerprints), put back by every deploy.\n"
    return header + "".join(f"{key}\n" for key in settings.server.authorized_keys)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ServerFiles:
    """What a deploy sends the server besides the app, rendered once for a plan."""

    config: Mapping[str, str]
    """The bundle's `server/` files (`server_config_files`)."""
    deploy_script: str
    agent_settings: str
    """The agent's `settings.json`, inside its archive."""

    @property
    def config_hash(self) -> str:
        """One hash over every rendered server file and the agent's code; a change means a redeploy."""
        files = {
            **self.config,
            "deploy.sh": self.deploy_script,
            "settings.json": self.agent_settings,
            "agent": agent_source_hash(),
        }
        return sha256_text(json.dumps(files, sort_keys=True))


def render_server_files(settings: Settings) -> ServerFiles:
    return ServerFiles(
        config=server_config_files(settings),
        deploy_script=render_deploy_script(settings),
        agent_settings=render_agent_settings(settings),
    )


def agent_sources() -> list[Path]:
    """The agent's modules that go to the server, sorted (its fake stays with the tests)."""
    return sorted(path for path in AGENT_DIR.glob("*.py") if path.name != "fake.py")


def agent_source_hash() -> str:
    return sha256_text(json.dumps({path.name: path.read_text() for path in agent_sources()}, sort_keys=True))
