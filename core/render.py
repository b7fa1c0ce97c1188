"""Render every file the server receives from `Settings`: pure functions, no Pulumi.

The templates live in `cloud-init/` at the top of the project. The same text
goes to a droplet (through Pulumi) and to the local rehearsal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from agent import manifest
from agent.manifest import Entry
from core.balancer import BALANCER_CHECK, PRIVATE_NETWORKS
from core.settings import Settings
from core.ssh_host_keys import HostKeys
from core.zipapp import zip_application

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
#: The server agent's package, shipped to the server with each deploy.
AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"

#: Gunicorn is installed by the deploy next to the app's own requirements.
GUNICORN_VERSION = "23.0.0"

#: uv installs the dependencies of apps that ship a uv.lock; the deploy puts it in a virtualenv of its own.
UV_VERSION = "0.13.8"

#: Certbot requests and renews the certificates; the deploy puts it in a virtualenv of its own.
#: 5.4 is the first that answers IP-address challenges from a webroot.
CERTBOT_VERSION = "5.8.0"

#: The user that Pulumi (and the rehearsal) log in as; it may use sudo.
DEPLOY_USER = "deploy"

#: Packages cloud-init installs on first boot.
PACKAGES = (
    "nginx",
    "ufw",
    "python3-venv",
    "curl",
    "fail2ban",
    "python3-systemd",
    "unattended-upgrades",
    # For auditors (and lynis): verify installed files against their packages, list pending upgrades.
    "debsums",
    "apt-show-versions",
    # Rotates nginx's logs (the distribution's /etc/logrotate.d/nginx); Ubuntu has it, minimal images may not.
    "logrotate",
)

#: needrestart's drop-in: upgrades restart neither nginx nor the app (Ubuntu 24.04 runs needrestart after apt).
NEEDRESTART_CONF = "/etc/needrestart/conf.d/flaskdroplet.conf"

#: sshd's algorithms, as ssh-audit's hardened policies want them. The droplet's OpenSSH 9.6 (Ubuntu
#: 24.04) gets the classic set; OpenSSH 9.9 and later (the rehearsal's Debian 13) key exchange that
#: resists quantum computers only. sshd refuses to start on a name it does not know, so each set
#: names only what its OpenSSH has (tests/unit/test_noble.py holds the 9.6 set to that).
SSH_HOST_KEY_ALGORITHMS = ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
SSH_CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-gcm@openssh.com",
    "aes128-ctr",
)
SSH_MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com")
SSH_KEX = {
    "classic": (
        "Hardened Ubuntu Server 24.04 LTS (version 2)",
        (
            "sntrup761x25519-sha512@openssh.com",
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "diffie-hellman-group18-sha512",
            "diffie-hellman-group-exchange-sha256",
            "diffie-hellman-group16-sha512",
        ),
    ),
    "post-quantum": (
        "Hardened Debian 13 (version 1)",
        ("mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"),
    ),
}
SSH_CHOICES_DIR = "/etc/ssh/flaskdroplet"
SSH_CRYPTO_DROP_IN = "/etc/ssh/sshd_config.d/20-flaskdroplet-crypto.conf"

#: Hardening files written at first boot (lynis's suggestions that suit a droplet): target and template.
HARDENING_FILES = (
    ("/etc/sysctl.d/60-flaskdroplet.conf", "sysctl.conf.j2"),
    ("/etc/modprobe.d/flaskdroplet.conf", "modprobe.conf.j2"),
    ("/etc/security/limits.d/flaskdroplet.conf", "limits.conf.j2"),
    ("/etc/issue", "issue.j2"),
    ("/etc/issue.net", "issue.j2"),
)

#: ufw's hook for rules of one's own, run when ufw starts and stops.
UFW_AFTER_INIT = "/etc/ufw/after.init"

#: nginx's main context, included by Debian's and Ubuntu's nginx.conf before anything else.
NGINX_MAIN_CONF = "/etc/nginx/modules-enabled/50-flaskdroplet.conf"

#: Connections each nginx worker may hold, set in nginx.conf's events block (the only place it can
#: be): the stock 768 runs out under a few thousand slow clients, which the site must outlast.
NGINX_WORKER_CONNECTIONS = 4096

#: Where the nginx sandbox drop-in goes.
NGINX_SANDBOX_DROP_IN = "/etc/systemd/system/nginx.service.d/flaskdroplet-sandbox.conf"

#: journald's drop-in: a persistent journal of bounded size.
JOURNALD_DROP_IN = "/etc/systemd/journald.conf.d/60-flaskdroplet.conf"

#: How long the timer may wait past each backup's calendar event, so that droplets do not all start at once.
BACKUP_RANDOM_DELAY = {"hourly": "5min", "daily": "1h", "weekly": "1h"}

#: Ports ufw opens; everything else inbound is denied.
UFW_ALLOWED_PORTS = ("22/tcp", "80/tcp", "443/tcp")


#: The Gunicorn service's sandbox. The same settings apply to the live service and to
#: each release's checks (gunicorn --check-config and the candidate), so a release that
#: cannot run inside the sandbox fails before it takes traffic.
SERVICE_SANDBOX: tuple[tuple[str, str], ...] = (
    ("UMask", "0027"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateUsers", "yes"),
    ("PrivateMounts", "yes"),
    ("DevicePolicy", "closed"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("ProcSubset", "pid"),
    ("KeyringMode", "private"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RemoveIPC", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged @resources"),
)


@dataclass(frozen=True)
class ServerLayout:
    """Where things live on the server; derived from the app's name only."""

    app_name: str

    @property
    def app_user(self) -> str:
        return self.app_name

    @property
    def root(self) -> str:
        return f"/srv/{self.app_name}"

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    @property
    def assets(self) -> str:
        """Static files by content, `HASH/PATH`: every content the kept releases hold, served at /static/_v/."""
        return f"{self.root}/assets"

    @property
    def proxy_cache(self) -> str:
        """nginx's cache of the app's cacheable answers (inside /var/lib/nginx, which its sandbox may write)."""
        return f"/var/lib/nginx/cache-{self.app_name}"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def state_dir(self) -> str:
        """The app's StateDirectory: the one place it writes, kept across releases."""
        return f"/var/lib/{self.app_name}"

    @property
    def sqlite_url(self) -> str:
        """DATABASE_URL with `database` sqlite: one file in the state directory, kept across releases."""
        return f"sqlite:///{self.state_dir}/database.sqlite3"

    @property
    def balancer_drain(self) -> str:
        """While this file exists, the balancer's health check answers 503: the droplet leaves its rotation."""
        return f"/run/{self.app_name}-balancer-drain"

    @property
    def state_mount_unit(self) -> str:
        """The mount unit of the state directory's Volume, named by systemd's path escaping."""
        return systemd_escape_path(self.state_dir) + ".mount"

    @property
    def state_format_unit(self) -> str:
        """Makes a file system on the Volume when it has none; never on one that holds anything."""
        return f"{self.app_name}-state-format.service"

    @property
    def backups(self) -> str:
        """Backups of the state directory, `STAMP.tar.gz`, on the droplet's own disk: root's, beside the Volume."""
        return f"/var/backups/{self.app_name}"

    @property
    def backup_incoming(self) -> str:
        """Where the app's user writes a backup while it is taken; root then packs and keeps it."""
        return f"{self.backups}/.incoming"

    @property
    def backup_unit(self) -> str:
        return f"{self.app_name}-backup"

    @property
    def backup_script(self) -> str:
        return f"/usr/local/lib/flaskdroplet/{self.app_name}-backup.py"

    @property
    def access_log(self) -> str:
        """nginx's one line for each request of the site, with its request id."""
        return f"/var/log/nginx/{self.app_name}.access.log"

    @property
    def acme_webroot(self) -> str:
        """Where the ACME client leaves HTTP-01 challenge answers for nginx to serve."""
        return "/var/www/flaskdroplet-acme"

    @property
    def certificate_dir(self) -> str:
        """Certbot's live directory for the app's certificate (its lineage is named after the app)."""
        return f"/etc/letsencrypt/live/{self.app_name}"

    @property
    def certbot(self) -> str:
        return f"/opt/flaskdroplet/certbot-{CERTBOT_VERSION}/bin/certbot"

    @property
    def renew_unit(self) -> str:
        return "flaskdroplet-certbot-renew"

    @property
    def config_dir(self) -> str:
        return f"/etc/{self.app_name}"

    @property
    def env_file(self) -> str:
        return f"{self.config_dir}/env"

    @property
    def socket_path(self) -> str:
        return f"/run/{self.app_name}.sock"

    @property
    def service_unit(self) -> str:
        return f"{self.app_name}.service"

    @property
    def socket_unit(self) -> str:
        return f"{self.app_name}.socket"

    @property
    def candidate_unit(self) -> str:
        """Transient unit a new release runs as while it proves itself healthy."""
        return f"{self.app_name}-candidate"

    @property
    def candidate_socket_path(self) -> str:
        return f"/run/{self.app_name}-candidate.sock"

    @property
    def candidate_port(self) -> int:
        """nginx's loopback-only port in front of the candidate."""
        return 8081

    @property
    def nginx_site(self) -> str:
        return f"/etc/nginx/sites-available/{self.app_name}.conf"

    @property
    def incoming(self) -> str:
        """Where uploads land, in the deploy user's home."""
        return f"/home/{DEPLOY_USER}/flaskdroplet"

    @property
    def deploy_script(self) -> str:
        return f"{self.incoming}/deploy.sh"

    @property
    def agent_archive(self) -> str:
        """The server agent (its code and `settings.json`), which deploy.sh runs."""
        return f"{self.incoming}/agent.pyz"

    def bundle(self, release_id: str) -> str:
        return f"{self.incoming}/bundles/{release_id}.tar.gz"


def volume_device(volume_name: str) -> str:
    """Where a DigitalOcean Volume appears on its droplet."""
    return f"/dev/disk/by-id/scsi-0DO_Volume_{volume_name}"


def systemd_escape_path(path: str) -> str:
    """`systemd-escape --path`: the unit name of a path (for a mount unit, its mount point)."""
    parts = path.strip("/").split("/")

    def escape(part: str) -> str:
        escaped = "".join(c if c.isascii() and (c.isalnum() or c in ":_.") else f"\\x{ord(c):02x}" for c in part)
        return "\\x2e" + escaped[1:] if escaped.startswith(".") else escaped

    return "-".join(escape(part) for part in parts) or "-"


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


def _render(template: str, settings: Settings, **extra: Any) -> str:
    layout = ServerLayout(settings.app_name)
    return _ENV.get_template(template).render(
        settings=settings,
        layout=layout,
        deploy_user=DEPLOY_USER,
        gunicorn_version=GUNICORN_VERSION,
        uv_version=UV_VERSION,
        certbot_version=CERTBOT_VERSION,
        health_host=settings.domain or "127.0.0.1",
        sandbox=SERVICE_SANDBOX,
        nginx_drop_in=NGINX_SANDBOX_DROP_IN,
        nginx_worker_connections=NGINX_WORKER_CONNECTIONS,
        journald_drop_in=JOURNALD_DROP_IN,
        balancer=BALANCER_CHECK,
        private_networks=PRIVATE_NETWORKS,
        **extra,
    )


def render_nginx_site(settings: Settings, tls: bool = False) -> str:
    """The nginx site: reverse proxy to the Gunicorn socket, static files, unknown hosts dropped.

    With `tls`, the site once its certificate exists: HTTPS, and HTTP only for ACME
    challenges and a redirect.
    """
    return _render("nginx-site.conf.j2", settings, tls=tls)


def render_nginx_main(settings: Settings) -> str:
    """Settings of nginx's main context (the file limit of its workers)."""
    return _render("nginx-main.conf.j2", settings)


def render_nginx_sandbox(settings: Settings) -> str:
    """A systemd drop-in that sandboxes nginx, which holds the TLS private key."""
    return _render("nginx-sandbox.conf.j2", settings)


def render_needrestart_conf(settings: Settings) -> str:
    """needrestart's drop-in (Perl): nginx and the app are left for the next deploy or reboot to restart."""
    return _render("needrestart.conf.j2", settings)


def render_sshd_crypto(settings: Settings, choice: str) -> str:
    """One of sshd's algorithm drop-ins: `classic` (OpenSSH 9.6) or `post-quantum` (OpenSSH 9.9 and later)."""
    policy, kex = SSH_KEX[choice]
    return _render(
        "sshd-crypto.conf.j2",
        settings,
        policy=policy,
        post_quantum=choice == "post-quantum",
        host_key_algorithms=SSH_HOST_KEY_ALGORITHMS,
        kex=kex,
        ciphers=SSH_CIPHERS,
        macs=SSH_MACS,
    )


def render_ufw_after_init(settings: Settings) -> str:
    """ufw's after.init hook: a rule that keeps the app's user from the metadata service."""
    return _render("ufw-after.init.j2", settings)


def render_renew_units(settings: Settings) -> dict[str, str]:
    """The certificate's renewal: a service running `certbot renew` and the timer that starts it."""
    layout = ServerLayout(settings.app_name)
    return {
        f"{layout.renew_unit}.service": _render("certbot-renew.service.j2", settings),
        f"{layout.renew_unit}.timer": _render("certbot-renew.timer.j2", settings),
    }


def render_backup_files(settings: Settings) -> dict[str, str]:
    """The state directory's backups, by file name in the bundle: the script, its service and its timer.

    Empty with `backupDays` 0.
    """
    if not settings.backup_days:
        return {}
    layout = ServerLayout(settings.app_name)
    delay = BACKUP_RANDOM_DELAY[settings.backup_interval]
    return {
        "state-backup.py": (AGENT_DIR / "backup.py").read_text(),
        f"{layout.backup_unit}.service": _render("state-backup.service.j2", settings),
        f"{layout.backup_unit}.timer": _render("state-backup.timer.j2", settings, random_delay=delay),
    }


def render_journald_conf(settings: Settings) -> str:
    """journald's drop-in: the journal kept on disk across reboots, and bounded in size."""
    return _render("journald.conf.j2", settings)


def render_service_unit(settings: Settings) -> str:
    """The systemd service that runs Gunicorn as the app's user."""
    return _render("gunicorn.service.j2", settings)


def render_socket_unit(settings: Settings) -> str:
    """The systemd socket Gunicorn is activated on; only nginx's user may connect."""
    return _render("gunicorn.socket.j2", settings)


def render_sshd_config(settings: Settings) -> str:
    """sshd drop-in: keys only, no root, only the deploy user."""
    return _render("sshd.conf.j2", settings)


def render_deploy_script(settings: Settings) -> str:
    """deploy.sh: what the plan and the admin run over SSH, as root; it hands its words to the agent."""
    return _render("deploy.sh.j2", settings)


def render_agent_settings(settings: Settings) -> str:
    """`settings.json` of the server agent: everything it knows of the stack, in one file."""
    layout = ServerLayout(settings.app_name)
    values: dict[str, Any] = {
        "app_name": settings.app_name,
        "app_user": layout.app_user,
        "root": layout.root,
        "releases": layout.releases,
        "current": layout.current,
        "state_dir": layout.state_dir,
        "state_device": volume_device(settings.volume_name) if settings.volume_name else "",
        "state_volume_gib": settings.volume_size,
        "state_mount_unit": layout.state_mount_unit,
        "state_format_unit": layout.state_format_unit,
        "config_dir": layout.config_dir,
        "env_file": layout.env_file,
        "service_unit": layout.service_unit,
        "socket_unit": layout.socket_unit,
        "candidate_unit": layout.candidate_unit,
        "candidate_socket": layout.candidate_socket_path,
        "candidate_port": layout.candidate_port,
        "nginx_site": layout.nginx_site,
        "nginx_site_link": f"/etc/nginx/sites-enabled/{settings.app_name}.conf",
        "access_log": layout.access_log,
        "backup_days": settings.backup_days,
        "backup_unit": layout.backup_unit,
        "backup_script": layout.backup_script,
        "backups": layout.backups,
        "backup_incoming": layout.backup_incoming,
        "static_dir": settings.static_dir or "",
        "assets": layout.assets,
        "proxy_cache": layout.proxy_cache,
        "wsgi_target": settings.wsgi_target,
        "workers": settings.workers,
        "gunicorn_version": GUNICORN_VERSION,
        "uv_version": UV_VERSION,
        "import_root": settings.app_source.import_root,
        "release_command": list(settings.release_command),
        "releases_to_keep": settings.releases_to_keep,
        "sqlite_url": layout.sqlite_url if settings.database == "sqlite" else "",
        "behind_balancer": settings.behind_balancer,
        "balancer_port": BALANCER_CHECK.port,
        "balancer_drain": layout.balancer_drain,
        "out_of_rotation_seconds": BALANCER_CHECK.out_of_rotation_seconds,
        "into_rotation_seconds": BALANCER_CHECK.into_rotation_seconds,
        "https": settings.server_tls,
        "domain": settings.domain or "",
        "host_names": list(settings.host_names),
        "acme_server": settings.acme_server,
        "acme_email": settings.acme_email or "",
        "acme_webroot": layout.acme_webroot,
        "certificate_dir": layout.certificate_dir,
        "certbot_version": CERTBOT_VERSION,
        "certbot": layout.certbot,
        "renew_unit": layout.renew_unit,
        "health_host": settings.domain or "127.0.0.1",
        "health_path": settings.health_path,
        "nginx_worker_connections": NGINX_WORKER_CONNECTIONS,
        "ufw_allowed_ports": list(UFW_ALLOWED_PORTS),
        "balancer_networks": list(PRIVATE_NETWORKS if settings.behind_balancer else ()),
        "ssh_choices_dir": SSH_CHOICES_DIR,
        "ssh_crypto_drop_in": SSH_CRYPTO_DROP_IN,
        "sandbox": [list(pair) for pair in SERVICE_SANDBOX],
    }
    return json.dumps(values, indent=1) + "\n"


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
    return "".join(f"{app_path} {state_path}\n" for app_path, state_path in settings.state_links)


def render_state_volume_units(settings: Settings) -> dict[str, str]:
    """The Volume's units, by file name: a file system made only on an empty Volume, and its mount."""
    if settings.volume_name is None:
        return {}
    layout = ServerLayout(settings.app_name)
    device = volume_device(settings.volume_name)
    extra = {"device": device, "device_unit": systemd_escape_path(device) + ".device"}
    return {
        layout.state_format_unit: _render("state-format.service.j2", settings, **extra),
        layout.state_mount_unit: _render("state-volume.mount.j2", settings, **extra),
    }


def server_config_files(settings: Settings) -> dict[str, str]:
    """Files under the bundle's `server/` directory: the manifest of the server's files, and what the
    release itself reads (its Gunicorn settings, `state-links`)."""
    return {
        "manifest.json": manifest.dumps(server_manifest(settings)),
        "state-links": render_state_links(settings),
        "gunicorn.conf.py": _render("gunicorn.conf.py.j2", settings),
    }


def _unit(name: str) -> str:
    return f"/etc/systemd/system/{name}"


def server_manifest(settings: Settings) -> list[Entry]:
    """Every file cloud-init writes at first boot and every file each deploy keeps as rendered, with the
    handlers a change notifies; in the order cloud-init writes them."""
    layout = ServerLayout(settings.app_name)
    reload, app = manifest.DAEMON_RELOAD, manifest.RESTART_APP

    def early(path: str, content: str, mode: str = "0644") -> Entry:
        return Entry(path, content, mode=mode, first_boot="early")

    def deferred(path: str, content: str, mode: str = "0644") -> Entry:
        return Entry(path, content, mode=mode, first_boot="deferred")

    entries = [
        # The Volume's units, mounted before anything else in runcmd.
        *(
            Entry(_unit(unit), text, first_boot="early", deploy=True, group="volume", notify=(reload,))
            for unit, text in render_state_volume_units(settings).items()
        ),
        # Before sshd starts: written in cloud-init's first stage.
        early("/etc/ssh/sshd_config.d/10-flaskdroplet.conf", render_sshd_config(settings)),
        *(early(f"{SSH_CHOICES_DIR}/crypto-{choice}.conf", render_sshd_crypto(settings, choice)) for choice in SSH_KEX),
        *(early(path, _render(template, settings)) for path, template in HARDENING_FILES),
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
        Entry(
            _unit(layout.service_unit),
            render_service_unit(settings),
            first_boot="deferred",
            deploy=True,
            notify=(reload, app),
        ),
        Entry(
            _unit(layout.socket_unit),
            render_socket_unit(settings),
            first_boot="deferred",
            deploy=True,
            notify=(reload, app),
        ),
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
        deferred("/etc/fail2ban/jail.local", _render("fail2ban-sshd.conf.j2", settings)),
        deferred(NEEDRESTART_CONF, render_needrestart_conf(settings)),
        deferred(NGINX_MAIN_CONF, render_nginx_main(settings)),
        # ufw runs it when it starts: the app may not reach the metadata service.
        deferred(UFW_AFTER_INIT, render_ufw_after_init(settings), mode="0755"),
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
    return entries


class _CloudConfigDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the user-data reads like the files it writes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CloudConfigDumper.add_representer(str, _represent_str)


#: The agent's first-boot phase (`agent/firstboot.py`) as a zip application of the modules it needs
#: and the stack's settings; the user-data carries it, readable by root only, and runcmd runs it once.
FIRST_BOOT_ARCHIVE = "/usr/local/lib/flaskdroplet/first-boot.pyz"
FIRST_BOOT_COMMAND = ("/usr/bin/python3", "-I", FIRST_BOOT_ARCHIVE)
FIRST_BOOT_MODULES = ("__init__.py", "config.py", "context.py", "firstboot.py", "system.py")
FIRST_BOOT_ENTRY = "from agent.firstboot import main\n\nraise SystemExit(main())\n"


def first_boot_archive(settings: Settings) -> bytes:
    files = {"__main__.py": FIRST_BOOT_ENTRY.encode(), "agent/settings.json": render_agent_settings(settings).encode()}
    files |= {f"agent/{name}": (AGENT_DIR / name).read_bytes() for name in FIRST_BOOT_MODULES}
    return zip_application(files)


def _write_file(entry: Entry) -> dict[str, Any]:
    """A cloud-init `write_files` entry; "deferred" ones are written once the packages are installed."""
    written: dict[str, Any] = {
        "path": entry.path,
        "content": entry.content,
        "owner": entry.owner,
        "permissions": entry.mode,
    }
    if entry.first_boot == "deferred":
        written["defer"] = True
    return written


def render_user_data(settings: Settings, host_keys: HostKeys) -> str:
    """The droplet's cloud-init user-data, with the host keys the program made for it.

    Its one secret is those host keys: on the droplet only root reads user-data (the app's
    user is refused the metadata service, `render_ufw_after_init`). The app's environment
    arrives later, with each deploy.
    """
    layout = ServerLayout(settings.app_name)
    document: dict[str, Any] = {
        "package_update": True,
        "packages": list(PACKAGES),
        "ssh_pwauth": False,
        # The program's host keys are the server's only ones: the image's are deleted, and with keys
        # given cloud-init makes none.
        "ssh_deletekeys": True,
        "ssh_keys": host_keys.as_dict(),
        "disable_root": True,
        # The distribution's default user becomes the deploy user; DigitalOcean's
        # registered keys and the keys below both land in its authorized_keys.
        "user": {
            "name": DEPLOY_USER,
            "gecos": "Deploys releases over SSH",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
        },
        "users": [
            "default",
            {
                "name": layout.app_user,
                "gecos": f"Runs {settings.app_name}",
                "system": True,
                "shell": "/usr/sbin/nologin",
                "homedir": layout.root,
                "no_create_home": True,
                "lock_passwd": True,
            },
        ],
        "ssh_authorized_keys": list(settings.ssh_public_keys),
        # The manifest's first-boot files; each deploy keeps those it owns as rendered.
        "write_files": [
            *(_write_file(entry) for entry in server_manifest(settings) if entry.first_boot),
            {
                "path": FIRST_BOOT_ARCHIVE,
                "content": base64.encodebytes(first_boot_archive(settings)).decode(),
                "encoding": "b64",
                "owner": "root:root",
                "permissions": "0600",
            },
        ],
        "runcmd": [[*FIRST_BOOT_COMMAND]],
    }
    body = yaml.dump(document, Dumper=_CloudConfigDumper, sort_keys=False, width=1000, default_flow_style=None)
    return "#cloud-config\n" + body


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def server_config_hash(settings: Settings) -> str:
    """One hash over every rendered server file; a change means a redeploy."""
    files = {
        **server_config_files(settings),
        "deploy.sh": render_deploy_script(settings),
        "settings.json": render_agent_settings(settings),
        "agent": agent_source_hash(),
    }
    return sha256_text(json.dumps(files, sort_keys=True))


def agent_sources() -> list[Path]:
    """The agent's modules that go to the server, sorted (its fake stays with the tests)."""
    return sorted(path for path in AGENT_DIR.glob("*.py") if path.name != "fake.py")


def agent_source_hash() -> str:
    return sha256_text(json.dumps({path.name: path.read_text() for path in agent_sources()}, sort_keys=True))
