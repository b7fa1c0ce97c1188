"""The server's policy: the versions it installs, its packages, sshd's algorithms, nginx's and systemd's limits.

Choices, not paths (those are `core/layout.py`); the renderers put them in the server's files.
"""

from __future__ import annotations

from core.appsource import GUNICORN
from core.appsource import UV_VERSION as APP_UV_VERSION

#: Gunicorn is installed by the deploy next to the app's own requirements, unless they declare it
#: (`core/appsource.py`).
GUNICORN_VERSION = GUNICORN.version

#: uv installs the dependencies of apps that ship a uv.lock, and the Python an app asks for.
UV_VERSION = APP_UV_VERSION

#: Certbot requests and renews the certificates; the deploy puts it in a virtualenv of its own.
#: 5.4 is the first that answers IP-address challenges from a webroot.
CERTBOT_VERSION = "5.8.0"
#: boto3 uploads the off-site copies and fetches them back, from a virtualenv of its own; the same pin as
#: requirements-dev.txt, which the tests run it with.
BOTO3_VERSION = "1.44.5"

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

#: Connections each nginx worker may hold, set in nginx.conf's events block (the only place it can
#: be): the stock 768 runs out under a few thousand slow clients, which the site must outlast.
NGINX_WORKER_CONNECTIONS = 4096

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
