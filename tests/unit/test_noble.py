"""What differs on a real Ubuntu 24.04 droplet, held by tests that run here.

The rehearsal boots Debian 13 (systemd 257, nginx 1.26); the droplet has systemd 255 and
nginx 1.24. A unit directive newer than 255 is ignored with a warning (the sandbox
weakens silently) and fails `systemd-run --property`; an nginx directive newer than 1.24
fails `nginx -t` there. Every directive the project renders is listed below with the
version that introduced it (from systemd.directives(7) and the NEWS file, and nginx's
documentation and CHANGES); a directive missing from the table fails the test until it is
added with its version.
"""

from __future__ import annotations

import re

import pytest

from core.cloudinit import render_user_data
from core.policy import SERVICE_SANDBOX, SSH_CIPHERS, SSH_HOST_KEY_ALGORITHMS, SSH_KEX, SSH_MACS
from core.render import (
    render_backup_files,
    render_journald_conf,
    render_nginx_main,
    render_nginx_sandbox,
    render_nginx_site,
    render_renew_units,
    render_service_unit,
    render_socket_unit,
    render_sshd_config,
    render_state_volume_units,
)
from core.settings import Settings
from tests.pulumi_harness import TEST_HOST_KEYS
from tests.unit.test_render import GOLDEN_CONFIGS, golden_settings

NOBLE_SYSTEMD = 255
NOBLE_NGINX = (1, 24, 0)

#: systemd unit directives the project renders, and the systemd version that introduced each.
SYSTEMD_DIRECTIVES = {
    # [Unit], [Install]
    "Description": 1, "Requires": 1, "Wants": 1, "After": 1, "Before": 1, "Conflicts": 1, "ConditionPathExists": 1,
    "DefaultDependencies": 1, "OnFailure": 1, "OnSuccess": 249, "RequiresMountsFor": 201, "WantedBy": 1,
    # [Service]
    "Type": 1, "NotifyAccess": 1, "User": 1, "Group": 1, "WorkingDirectory": 1, "Environment": 1,
    "EnvironmentFile": 1, "ExecStart": 1, "ExecReload": 1, "KillMode": 1, "TimeoutStopSec": 188, "Restart": 1,
    "RestartSec": 1, "TimeoutStartSec": 188, "UMask": 1, "StateDirectory": 235, "StateDirectoryMode": 235,
    "RemainAfterExit": 1,
    # ExecStartPost's "+" prefix (full privileges) is 231.
    "ExecStartPost": 1, "Nice": 1, "IOSchedulingClass": 1,
    # [Mount]
    "What": 1, "Where": 1, "Options": 1,
    # [Socket], [Timer]
    "ListenStream": 1, "SocketUser": 214, "SocketGroup": 214, "SocketMode": 1,
    "OnCalendar": 197, "RandomizedDelaySec": 229, "Persistent": 212,
    # Sandboxing
    "NoNewPrivileges": 187, "CapabilityBoundingSet": 1, "AmbientCapabilities": 229, "PrivateTmp": 1,
    "PrivateDevices": 209, "PrivateUsers": 232, "PrivateMounts": 239, "DevicePolicy": 1, "ProtectSystem": 214,
    "ProtectHome": 214, "ProtectKernelTunables": 232, "ProtectKernelModules": 232, "ProtectKernelLogs": 244,
    "ProtectControlGroups": 232, "ProtectClock": 245, "ProtectHostname": 242, "ProtectProc": 247,
    "ProcSubset": 247, "KeyringMode": 235, "RestrictAddressFamilies": 211, "RestrictNamespaces": 233,
    "RestrictRealtime": 231, "RestrictSUIDSGID": 242, "RemoveIPC": 232, "LockPersonality": 235,
    "MemoryDenyWriteExecute": 231, "SystemCallArchitectures": 213, "SystemCallFilter": 187,
    "SystemCallErrorNumber": 209, "ReadWritePaths": 231, "IPAddressDeny": 235,
    # journald.conf
    "Storage": 186, "SystemMaxUse": 38, "SystemKeepFree": 38, "MaxRetentionSec": 195,
}  # fmt: skip

#: Values that arrived later than their directive.
SYSTEMD_VALUES = {("ProtectSystem", "strict"): 232, ("ProtectProc", "invisible"): 247, ("ProcSubset", "pid"): 247}

#: nginx directives (and listen parameters) the project renders, and the nginx version that introduced each.
NGINX_DIRECTIVES = {
    "server": (0, 1, 0), "listen": (0, 1, 0), "server_name": (0, 1, 0), "location": (0, 1, 0),
    "upstream": (0, 1, 0), "return": (0, 1, 0), "root": (0, 1, 0), "alias": (0, 1, 0), "default_type": (0, 1, 0),
    "access_log": (0, 1, 0), "autoindex": (0, 1, 0), "add_header": (0, 1, 0), "expires": (0, 1, 0),
    "proxy_pass": (0, 1, 0), "proxy_redirect": (0, 1, 0), "proxy_set_header": (0, 1, 0),
    "client_header_timeout": (0, 1, 0), "client_body_timeout": (0, 1, 0), "send_timeout": (0, 1, 0),
    "keepalive_timeout": (0, 1, 0), "large_client_header_buffers": (0, 1, 0), "client_max_body_size": (0, 1, 0),
    "server_tokens": (0, 1, 0), "limit_req_zone": (0, 7, 21), "limit_req": (0, 7, 21),
    "limit_conn_zone": (1, 1, 8), "limit_conn": (0, 7, 0), "limit_req_status": (1, 3, 15),
    "limit_conn_status": (1, 3, 15), "ssl_certificate": (0, 1, 0), "ssl_certificate_key": (0, 1, 0),
    "ssl_protocols": (0, 7, 2), "ssl_ciphers": (0, 1, 0), "ssl_prefer_server_ciphers": (0, 1, 0),
    "ssl_session_timeout": (0, 1, 0), "ssl_session_cache": (0, 5, 6), "ssl_session_tickets": (1, 5, 9),
    "ssl_ecdh_curve": (1, 1, 0), "ssl_reject_handshake": (1, 19, 4), "gzip": (0, 1, 0), "gzip_types": (0, 1, 0),
    "gzip_vary": (0, 6, 19), "proxy_cache_path": (0, 7, 44), "proxy_cache": (0, 7, 44), "proxy_cache_key": (0, 7, 44),
    "proxy_cache_bypass": (0, 7, 48), "proxy_no_cache": (0, 7, 48), "proxy_cache_lock": (1, 1, 12),
    "proxy_cache_use_stale": (0, 7, 44), "map": (0, 3, 16), "log_format": (0, 1, 0),
    "worker_rlimit_nofile": (0, 1, 0), "if": (0, 1, 0), "set_real_ip_from": (0, 3, 8), "real_ip_header": (0, 3, 8),
}  # fmt: skip
#: `listen` parameters: `http2` as a parameter is 1.9.5; the `http2 on;` directive (1.25.1) and `quic`
#: (1.25.0) are newer than noble's nginx and so absent from both tables.
NGINX_LISTEN_PARAMETERS = {"ssl": (0, 7, 14), "http2": (1, 9, 5), "default_server": (0, 8, 21)}

VARIANTS = sorted(GOLDEN_CONFIGS)


def unit_files(settings: Settings) -> dict[str, str]:
    return {
        "service": render_service_unit(settings),
        "socket": render_socket_unit(settings),
        "nginx drop-in": render_nginx_sandbox(settings),
        **render_renew_units(settings),
        **render_state_volume_units(settings),
        **{name: text for name, text in render_backup_files(settings).items() if not name.endswith(".py")},
        "journald drop-in": render_journald_conf(settings),
    }


def unit_directives(text: str) -> list[tuple[str, str]]:
    return [
        (key.strip(), value.strip())
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith(("#", "["))
        for key, value in [line.split("=", 1)]
    ]


def nginx_statements(text: str) -> list[list[str]]:
    """Each directive of an nginx file as its words: statements end on `;`, `{` or `}` outside quotes.

    The lines inside a `map` block are its table, not directives, and are left out.
    """
    statements: list[list[str]] = []
    words: list[str] = []
    word, quote = "", ""
    in_map = False
    for line in text.splitlines():
        for char in line:
            if quote:
                word += char
                quote = "" if char == quote else quote
            elif char in "\"'":
                word, quote = word + char, char
            elif char == "#":
                break
            elif char.isspace() or char in ";{}":
                if word:
                    words.append(word)
                word = ""
                if char == "}":
                    in_map = False
                if char in ";{}" and words:
                    if not in_map:
                        statements.append(words)
                    in_map = in_map or (char == "{" and words[0] == "map")
                    words = []
            else:
                word += char
        if word and not quote:
            words.append(word)
            word = ""
    return statements


def systemd_problems(used: list[tuple[str, str]]) -> list[str]:
    problems = [f"{key}: not in SYSTEMD_DIRECTIVES" for key, _ in used if key not in SYSTEMD_DIRECTIVES]
    problems += [
        f"{key}={value}: newer than systemd {NOBLE_SYSTEMD}"
        for key, value in used
        if max(SYSTEMD_DIRECTIVES.get(key, 0), SYSTEMD_VALUES.get((key, value), 0)) > NOBLE_SYSTEMD
    ]
    return sorted(set(problems))


def nginx_problems(site: str) -> list[str]:
    statements = nginx_statements(site)
    problems = []
    for words in statements:
        name = words[0]
        if name not in NGINX_DIRECTIVES:
            problems.append(f"{name}: not in NGINX_DIRECTIVES")
        elif NGINX_DIRECTIVES[name] > NOBLE_NGINX:
            problems.append(f"{name}: newer than nginx 1.24")
        if name == "listen":
            for parameter in words[2:]:
                if NGINX_LISTEN_PARAMETERS.get(parameter, (99,)) > NOBLE_NGINX:
                    problems.append(f"listen {parameter}: unknown, or newer than nginx 1.24")
    return sorted(set(problems))


@pytest.mark.parametrize("variant", VARIANTS)
def test_units_use_only_what_noble_systemd_knows(variant: str) -> None:
    settings = golden_settings(variant)
    used = [pair for text in unit_files(settings).values() for pair in unit_directives(text)]
    used += list(SERVICE_SANDBOX)  # also passed to systemd-run --property, which refuses unknown ones

    assert systemd_problems(used) == []


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_nginx_site_uses_only_what_noble_nginx_knows(variant: str, tls: bool) -> None:
    settings = golden_settings(variant)

    assert nginx_problems(render_nginx_site(settings, tls=tls)) == []
    assert nginx_problems(render_nginx_main(settings)) == []


def test_the_guards_catch_what_noble_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    site = render_nginx_site(golden_settings("ip"), tls=True)
    newer = site.replace("ssl_session_tickets off;", "http2 on;").replace("listen 443 ssl http2;", "listen 443 quic;")

    assert nginx_problems(newer) == ["http2: not in NGINX_DIRECTIVES", "listen quic: unknown, or newer than nginx 1.24"]
    assert systemd_problems([("PrivatePIDs", "yes")]) == ["PrivatePIDs: not in SYSTEMD_DIRECTIVES"]
    monkeypatch.setitem(SYSTEMD_DIRECTIVES, "PrivatePIDs", 257)
    assert systemd_problems([("PrivatePIDs", "yes")]) == ["PrivatePIDs=yes: newer than systemd 255"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_nothing_names_sshd_service_port_or_listen_address(variant: str) -> None:
    """noble's sshd is socket-activated (ssh.socket) and has no sshd.service alias; Port and
    ListenAddress in a drop-in would not move the socket, and a unit named sshd.service does not exist."""
    settings = golden_settings(variant)
    rendered = render_user_data(settings, TEST_HOST_KEYS[0]) + render_sshd_config(settings)

    assert "sshd.service" not in rendered
    assert not re.search(r"^\s*(Port|ListenAddress)\b", render_sshd_config(settings), re.MULTILINE)


#: What OpenSSH 9.6 (Ubuntu 24.04) knows, from `ssh -Q kex`, `-Q cipher`, `-Q mac` and `-Q HostKeyAlgorithms`
#: of OpenSSH 9.6p1 (the certificate and security-key host key types left out).
OPENSSH_96 = {
    "kex": {
        "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
        "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
        "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
        "curve25519-sha256", "curve25519-sha256@libssh.org", "sntrup761x25519-sha512@openssh.com",
    },
    "ciphers": {
        "3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    },
    "macs": {
        "hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5", "hmac-md5-96",
        "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha1-96-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-md5-etm@openssh.com",
        "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com", "umac-128-etm@openssh.com",
    },
    "host_keys": {
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
        "rsa-sha2-256", "ssh-rsa", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    },
}  # fmt: skip


def test_the_droplets_sshd_algorithms_are_all_known_to_openssh_96() -> None:
    """sshd refuses to start on an algorithm name it does not know: on a droplet, a lost server."""
    _, kex = SSH_KEX["classic"]

    assert set(kex) - OPENSSH_96["kex"] == set()
    assert set(SSH_CIPHERS) - OPENSSH_96["ciphers"] == set()
    assert set(SSH_MACS) - OPENSSH_96["macs"] == set()
    assert set(SSH_HOST_KEY_ALGORITHMS) - OPENSSH_96["host_keys"] == set()
    # The post-quantum set names what 9.6 lacks: it is for OpenSSH 9.9 and later only.
    assert set(SSH_KEX["post-quantum"][1]) - OPENSSH_96["kex"] == {"mlkem768x25519-sha256", "sntrup761x25519-sha512"}
