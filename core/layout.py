"""Where things live on the server: the agent's `ServerLayout`, derived from the app's name and the versions of
the tools the program pins.

The settings hold one layout (`Settings.layout`); the renderers, the plan and both executors read it, and the
agent's `settings.json` carries it.
"""

from __future__ import annotations

from agent.layout import ServerLayout as ServerLayout
from core.policy import BOTO3_VERSION, CERTBOT_VERSION, UV_VERSION

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

#: The project's tools, each in a directory of its own version: uv, certbot, boto3.
TOOLS_DIR = "/opt/flaskdroplet"

#: nginx's loopback-only port in front of the candidate.
CANDIDATE_PORT = 8081


def server_layout(
    app_name: str,
    *,
    uv_version: str = UV_VERSION,
    certbot_version: str = CERTBOT_VERSION,
    boto3_version: str = BOTO3_VERSION,
) -> ServerLayout:
    """The layout of the app named `app_name` on the server, with the tools at these versions."""
    root, config_dir, backups = f"/srv/{app_name}", f"/etc/{app_name}", f"/var/backups/{app_name}"
    state_dir, incoming = f"/var/lib/{app_name}", f"/home/{DEPLOY_USER}/flaskdroplet"
    return ServerLayout(
        app_name=app_name,
        app_user=app_name,
        root=root,
        releases=f"{root}/releases",
        current=f"{root}/current",
        # The file naming the release that was live before the current one (a rollback's target).
        previous=f"{root}/previous",
        # The releases' virtualenvs, by the hash of what they hold, shared between releases.
        venvs=f"{root}/venvs",
        # The address the site is reached at, as the last deploy was given it.
        public_ipv4_file=f"{root}/public-ipv4",
        # The droplet's place in its fleet (first or secondary), as the last deploy said.
        role_file=f"{root}/droplet-role",
        # One deploy at a time.
        lock_file=f"/run/lock/{app_name}-deploy.lock",
        # Static files by content, `HASH/PATH`: every content the kept releases hold, served at /static/_v/.
        assets=f"{root}/assets",
        # nginx's cache of the app's cacheable answers (inside /var/lib/nginx, which its sandbox may write).
        proxy_cache=f"/var/lib/nginx/cache-{app_name}",
        # The app's StateDirectory: the one place it writes, kept across releases.
        state_dir=state_dir,
        # DATABASE_URL with `database` sqlite: one file in the state directory, kept across releases.
        sqlite_url=f"sqlite:///{state_dir}/database.sqlite3",
        # The mount unit of the state directory's Volume, named by systemd's path escaping.
        state_mount_unit=systemd_escape_path(state_dir) + ".mount",
        # Makes a file system on the Volume when it has none; never on one that holds anything.
        state_format_unit=f"{app_name}-state-format.service",
        # While this file exists, the balancer's health check answers 503: the droplet leaves its rotation.
        balancer_drain=f"/run/{app_name}-balancer-drain",
        # Backups of the state directory, `STAMP.tar.gz`, on the droplet's own disk: root's, beside the Volume.
        backups=backups,
        # Where the app's user writes a backup while it is taken; root then packs and keeps it.
        backup_incoming=f"{backups}/.incoming",
        backup_unit=f"{app_name}-backup",
        backup_script=f"/usr/local/lib/flaskdroplet/{app_name}-backup.py",
        # Uploads each new backup, encrypted, to the off-site bucket (offsiteRegion), once a backup succeeds.
        offsite_unit=f"{app_name}-offsite",
        offsite_script=f"/usr/local/lib/flaskdroplet/{app_name}-offsite.py",
        # Where the off-site bucket is and the key that reaches it: root's alone, from each deploy's stdin.
        offsite_file=f"{config_dir}/offsite.json",
        # The Python of boto3's own virtualenv, which runs the off-site script.
        offsite_python=f"{TOOLS_DIR}/boto3-{boto3_version}/bin/python",
        # nginx's one line for each request of the site, with its request id.
        access_log=f"/var/log/nginx/{app_name}.access.log",
        # Where the ACME client leaves HTTP-01 challenge answers for nginx to serve.
        acme_webroot="/var/www/flaskdroplet-acme",
        # Certbot's live directory for the app's certificate (its lineage is named after the app).
        certificate_dir=f"/etc/letsencrypt/live/{app_name}",
        # Certbot's renewal settings of that lineage.
        certificate_renewal=f"/etc/letsencrypt/renewal/{app_name}.conf",
        certbot=f"{TOOLS_DIR}/certbot-{certbot_version}/bin/certbot",
        renew_unit="flaskdroplet-certbot-renew",
        uv=f"{TOOLS_DIR}/uv-{uv_version}/bin/uv",
        config_dir=config_dir,
        # The webhooks the droplet tells (notifyWebhooks): root's alone, from each deploy's stdin.
        notify_file=f"{config_dir}/notify.json",
        # The template unit each of the server's units names in `OnFailure=`: `NOTIFY@FAILED-UNIT.service`.
        notify_unit=f"{app_name}-notify@.service",
        env_file=f"{config_dir}/env",
        socket_path=f"/run/{app_name}.sock",
        service_unit=f"{app_name}.service",
        socket_unit=f"{app_name}.socket",
        # Transient unit a new release runs as while it proves itself healthy.
        candidate_unit=f"{app_name}-candidate",
        candidate_socket_path=f"/run/{app_name}-candidate.sock",
        candidate_port=CANDIDATE_PORT,
        nginx_site=f"/etc/nginx/sites-available/{app_name}.conf",
        nginx_site_link=f"/etc/nginx/sites-enabled/{app_name}.conf",
        # The deploy user's authorized keys: the stack's keys, put in place by every deploy.
        authorized_keys=f"/home/{DEPLOY_USER}/.ssh/authorized_keys",
        # Where uploads land, in the deploy user's home.
        incoming=incoming,
        deploy_script=f"{incoming}/deploy.sh",
        # The server agent (its code and `settings.json`), which deploy.sh runs.
        agent_archive=f"{incoming}/agent.pyz",
        # sshd's algorithm drop-ins, one per OpenSSH generation; the first boot installs the one it reads.
        ssh_choices_dir=SSH_CHOICES_DIR,
        ssh_crypto_drop_in=SSH_CRYPTO_DROP_IN,
    )


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
