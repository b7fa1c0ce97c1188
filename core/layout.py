"""Where things live on the server: the app's directories, units and sockets, and the project's fixed paths.

Derived from the app's name alone (`ServerLayout`), or fixed (the drop-ins' paths). The
settings hold one layout (`Settings.layout`); the renderers, the plan and both executors read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.policy import BOTO3_VERSION, CERTBOT_VERSION

#: The user that Pulumi (and the rehearsal) log in as; it may use sudo.
DEPLOY_USER = "deploy"

#: needrestart's drop-in: upgrades restart neither nginx nor the app (Ubuntu 24.04 runs needrestart after apt).
NEEDRESTART_CONF = "/etc/needrestart/conf.d/flaskdroplet.conf"

SSH_CHOICES_DIR = "/etc/ssh/flaskdroplet"
SSH_CRYPTO_DROP_IN = "/etc/ssh/sshd_config.d/20-flaskdroplet-crypto.conf"

#: ufw's hook for rules of one's own, run when ufw starts and stops.
UFW_AFTER_INIT = "/etc/ufw/after.init"

#: nginx's main context, included by Debian's and Ubuntu's nginx.conf before anything else.
NGINX_MAIN_CONF = "/etc/nginx/modules-enabled/50-flaskdroplet.conf"

#: Where the nginx sandbox drop-in goes.
NGINX_SANDBOX_DROP_IN = "/etc/systemd/system/nginx.service.d/flaskdroplet-sandbox.conf"

#: journald's drop-in: a persistent journal of bounded size.
JOURNALD_DROP_IN = "/etc/systemd/journald.conf.d/60-flaskdroplet.conf"


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
    def offsite_unit(self) -> str:
        """Uploads each new backup, encrypted, to the off-site bucket (offsiteRegion), once a backup succeeds."""
        return f"{self.app_name}-offsite"

    @property
    def offsite_script(self) -> str:
        return f"/usr/local/lib/flaskdroplet/{self.app_name}-offsite.py"

    @property
    def offsite_file(self) -> str:
        """Where the off-site bucket is and the key that reaches it: root's alone, from each deploy's stdin."""
        return f"{self.config_dir}/offsite.json"

    @property
    def offsite_python(self) -> str:
        """The Python of boto3's own virtualenv, which runs the off-site script."""
        return f"/opt/flaskdroplet/boto3-{BOTO3_VERSION}/bin/python"

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
    def notify_file(self) -> str:
        """The webhooks the droplet tells (notifyWebhooks): root's alone, from each deploy's stdin."""
        return f"{self.config_dir}/notify.json"

    @property
    def notify_unit(self) -> str:
        """The template unit each of the server's units names in `OnFailure=`: `NOTIFY@FAILED-UNIT.service`."""
        return f"{self.app_name}-notify@.service"

    @property
    def on_failure(self) -> str:
        """What a unit's `OnFailure=` names: the notify unit, for the unit that failed (%n)."""
        return self.notify_unit.replace("@.", "@%n.")

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
    def authorized_keys(self) -> str:
        """The deploy user's authorized keys: the stack's keys, put in place by every deploy."""
        return f"/home/{DEPLOY_USER}/.ssh/authorized_keys"

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

    def process_unit(self, name: str) -> str:
        """The service of one of the app's processes (`processes`, the Procfile's)."""
        return f"{self.app_name}-process-{name}.service"

    def schedule_unit(self, name: str) -> str:
        """The service and timer (`.service`, `.timer`) of one of the app's scheduled jobs, without the suffix."""
        return f"{self.app_name}-schedule-{name}"


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
