"""The first boot under a fake boundary: what cloud-init's one runcmd does to a droplet it has just written."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from agent import firstboot
from agent.config import Config
from agent.context import Agent
from agent.fake import FakeSystem
from agent.system import Completed
from core.cloudinit import (
    FIRST_BOOT_ARCHIVE,
    FIRST_BOOT_COMMAND,
    FIRST_BOOT_MODULES,
    render_user_data,
    without_docstrings,
)
from core.policy import UFW_ALLOWED_PORTS
from tests.pulumi_harness import TEST_HOST_KEYS
from tests.unit.agent_server import config_of, settings_of

OPENSSH_9_6 = "OpenSSH_9.6p1 Ubuntu-3ubuntu13.5, OpenSSL 3.0.13 30 Jan 2024\n"
MODULI = (
    "# Time Type Tests Tries Size Generator Modulus\n"
    "20240101000000 2 6 100 2047 2 C1\n"
    "20240101000000 2 6 100 3071 2 C2\n"
    "20240101000000 2 6 100 8191 2 C3\n"
)
NGINX_CONF = "user www-data;\nevents {\n\tworker_connections 768;\n}\n"
LOGIN_DEFS = "UMASK\t\t022\n#PASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\t0\nENCRYPT_METHOD SHA512\n"


def written_droplet(variant: str = "ip", openssh: str = OPENSSH_9_6, **overrides: object) -> tuple[FakeSystem, Agent]:
    """A droplet as cloud-init leaves it before runcmd: the user-data's files, the packages' own."""
    settings = settings_of(variant, **overrides)
    server = FakeSystem()
    for entry in yaml.safe_load(render_user_data(settings, TEST_HOST_KEYS[0]))["write_files"]:
        server.files[entry["path"]] = entry["content"]
    server.files |= {
        "/etc/nginx/nginx.conf": NGINX_CONF,
        "/etc/nginx/sites-enabled/default": "server {}\n",
        "/etc/login.defs": LOGIN_DEFS,
        "/etc/ssh/moduli": MODULI,
        "/etc/ssh/ssh_host_ecdsa_key": "private",
        "/etc/ssh/ssh_host_ecdsa_key.pub": "public",
    }
    server.answer_with(("ssh", "-V"), lambda argv: Completed(0, "", openssh))
    server.answer("ssh-keygen", "-l", stdout="4096 SHA256:abc root@droplet (RSA)\n")
    return server, Agent(server, config_of(variant, **overrides))


def first_boot_entry(variant: str = "ip") -> dict[str, object]:
    document = yaml.safe_load(render_user_data(settings_of(variant), TEST_HOST_KEYS[0]))
    [entry] = [entry for entry in document["write_files"] if entry["path"] == FIRST_BOOT_ARCHIVE]
    assert document["runcmd"] == [list(FIRST_BOOT_COMMAND)]
    return entry


def test_user_data_carries_the_first_boot_phase_and_runs_it_and_nothing_else() -> None:
    entry = first_boot_entry()
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(str(entry["content"]))))

    assert sorted(archive.namelist()) == sorted(
        ["__main__.py", "agent/settings.json", *(f"agent/{module}" for module in FIRST_BOOT_MODULES)]
    )
    # The module's code without its docstrings and comments (the user-data's size is bounded).
    shipped = archive.read("agent/firstboot.py").decode()
    assert shipped == without_docstrings(Path(firstboot.__file__).read_text())
    assert '"""' not in shipped and "def first_boot(" in shipped
    assert Config.from_json_object(json.loads(archive.read("agent/settings.json"))) == config_of("ip")
    # The stack's settings and the agent's code: root's alone.
    assert (entry["encoding"], entry["owner"], entry["permissions"]) == ("b64", "root:root", "0600")


def test_the_first_boot_archive_runs_with_only_the_modules_it_carries(tmp_path: Path) -> None:
    """Python runs the archive as cloud-init does; an import of a module it does not carry fails here."""
    archive = tmp_path / "first-boot.pyz"
    archive.write_bytes(base64.b64decode(str(first_boot_entry()["content"])))
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import agent.firstboot, agent.config; "
        "agent.config.load(); sys.exit(0 if agent.firstboot.__file__.startswith(sys.argv[1]) else 1)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(archive)], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr


def test_user_data_stays_well_under_digitalocean_s_limit() -> None:
    """DigitalOcean takes at most 64 KiB of user-data; a droplet's first boot must leave room to grow."""
    for variant in ("ip", "domain", "fleet"):
        size = len(render_user_data(settings_of(variant), TEST_HOST_KEYS[0]).encode())
        assert size < 48 * 1024, (variant, size)


def test_ssh_is_allowed_before_the_firewall_is_enabled() -> None:
    server, agent = written_droplet()

    assert firstboot.first_boot(agent) == 0, server.stderr

    ufw = server.ran("ufw")
    enable = ufw.index(["ufw", "--force", "enable"])
    allowed = [argv[2] for argv in ufw[:enable] if argv[:2] == ["ufw", "allow"]]
    assert ufw.index(["ufw", "default", "deny", "incoming"]) < enable
    assert allowed == list(UFW_ALLOWED_PORTS)
    assert allowed[0] == "22/tcp"
    # Not behind a balancer: no private network is let in.
    assert not [argv for argv in ufw if "from" in argv]


def test_behind_a_balancer_its_check_port_is_open_to_the_private_networks_only() -> None:
    server, agent = written_droplet("fleet")

    assert firstboot.first_boot(agent) == 0, server.stderr

    rules = [argv for argv in server.ran("ufw", "allow", "proto") if "from" in argv]
    assert [argv[5] for argv in rules] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert {argv[-1] for argv in rules} == {str(agent.config.balancer_port)}


def test_the_volume_is_mounted_before_anything_else_and_only_with_one() -> None:
    server, agent = written_droplet("ip")
    assert firstboot.first_boot(agent) == 0, server.stderr
    assert server.commands[:2] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", agent.config.layout.state_mount_unit],
    ]

    server, agent = written_droplet("domain")
    assert firstboot.first_boot(agent) == 0, server.stderr
    assert not server.ran("systemctl", "enable", "--now", agent.config.layout.state_mount_unit)
    assert server.commands[0] == ["systemctl", "restart", "systemd-journald"]


@pytest.mark.parametrize(
    ("openssh", "choice"),
    [
        (OPENSSH_9_6, "classic"),
        ("OpenSSH_9.9p1, OpenSSL 3.4.0\n", "post-quantum"),
        ("OpenSSH_10.0p2\n", "post-quantum"),
    ],
)
def test_sshd_gets_the_algorithms_its_version_reads(openssh: str, choice: str) -> None:
    server, agent = written_droplet(openssh=openssh)

    assert firstboot.first_boot(agent) == 0, server.stderr

    drop_in = server.read_text(agent.config.layout.ssh_crypto_drop_in)
    assert drop_in == server.read_text(f"{agent.config.layout.ssh_choices_dir}/crypto-{choice}.conf")
    assert f"flask-droplet: sshd uses the {choice} algorithms, an Ed25519 and an RSA 4096 host key" in server.stderr
    # Checked by sshd first, then restarted; no ECDSA key; groups under 3072 bits gone, the header kept.
    assert server.events.index("run: sshd -t") < server.events.index("run: systemctl try-restart ssh.service")
    assert not server.exists("/etc/ssh/ssh_host_ecdsa_key")
    assert server.read_text("/etc/ssh/moduli") == MODULI.replace("20240101000000 2 6 100 2047 2 C1\n", "")
    # The program's RSA key is already 4096 bits: kept.
    assert not server.ran("ssh-keygen", "-q")


def test_an_rsa_host_key_under_4096_bits_is_made_again() -> None:
    server, agent = written_droplet()
    server.answer("ssh-keygen", "-l", stdout="3072 SHA256:abc root@droplet (RSA)\n")

    assert firstboot.first_boot(agent) == 0, server.stderr

    assert server.ran("ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-f", "/etc/ssh/ssh_host_rsa_key")


def test_algorithms_sshd_refuses_are_taken_back_and_sshd_keeps_running() -> None:
    server, agent = written_droplet()
    server.answer("sshd", "-t", returncode=255)

    assert firstboot.first_boot(agent) == 0, server.stderr

    assert not server.exists(agent.config.layout.ssh_crypto_drop_in)
    assert not server.ran("systemctl", "try-restart", "ssh.service")
    assert "flask-droplet: WARNING: sshd refused the classic algorithms; they are not used" in server.stderr


def test_an_unreadable_openssh_version_stops_the_first_boot() -> None:
    server, agent = written_droplet(openssh="ssh: command not found\n")

    assert firstboot.first_boot(agent) == 1

    assert "cannot tell the OpenSSH version" in server.stderr[-1]
    assert not server.ran("nginx")


def test_login_policy_sets_what_the_file_has_commented_or_not() -> None:
    server, agent = written_droplet()

    assert firstboot.first_boot(agent) == 0, server.stderr

    assert server.read_text("/etc/login.defs") == (
        "UMASK 027\nPASS_MAX_DAYS 365\nPASS_MIN_DAYS 1\nENCRYPT_METHOD SHA512\n"
    )


def test_the_site_replaces_nginx_default_and_nginx_checks_it_before_it_restarts() -> None:
    server, agent = written_droplet()

    assert firstboot.first_boot(agent) == 0, server.stderr

    config = agent.config
    assert not server.exists("/etc/nginx/sites-enabled/default")
    assert server.readlink("/etc/nginx/sites-enabled/weather.conf") == config.layout.nginx_site
    assert {config.layout.root, config.layout.releases, config.layout.acme_webroot} <= server.dirs
    assert server.read_text("/etc/nginx/nginx.conf") == NGINX_CONF.replace("768", "4096")
    order = [event for event in server.events if event.startswith("run: ")]
    assert order.index("run: nginx -t") < order.index("run: systemctl restart nginx.service")
    assert order[-5:] == [
        "run: systemctl restart nginx.service",
        f"run: systemctl enable --now {config.layout.socket_unit}",
        f"run: systemctl enable {config.layout.service_unit}",
        "run: fail2ban-client --test",
        "run: systemctl restart fail2ban",
    ]


def test_a_start_refused_once_is_said_with_its_journal_and_tried_again() -> None:
    server, agent = written_droplet()
    tries = iter([1, 0])
    server.answer_with(("systemctl", "restart", "nginx.service"), lambda argv: Completed(next(tries)))

    assert firstboot.first_boot(agent) == 0, server.stderr

    assert "flask-droplet: WARNING: nginx.service did not start; once more in 3 s" in server.stderr
    assert server.ran("journalctl", "-b", "-u", "nginx.service", "-n", "20", "--no-pager")
    assert len(server.ran("systemctl", "restart", "nginx.service")) == 2
    assert server.slept == 3


def test_a_start_refused_twice_stops_the_first_boot() -> None:
    server, agent = written_droplet()
    server.answer("systemctl", "enable", "--now", agent.config.layout.socket_unit, returncode=1)

    assert firstboot.first_boot(agent) == 1

    assert server.stderr[-1] == (
        f"flask-droplet: first boot FAILED: {agent.config.layout.socket_unit} did not start "
        f"(journalctl -b -u {agent.config.layout.socket_unit})"
    )
    assert not server.ran("systemctl", "enable", agent.config.layout.service_unit)


def test_a_failed_step_stops_the_first_boot_and_names_the_command() -> None:
    server, agent = written_droplet()
    server.answer("nginx", "-t", returncode=1)

    assert firstboot.first_boot(agent) == 1

    assert server.stderr[-1] == "flask-droplet: first boot FAILED: `nginx -t` failed"
    assert not server.ran("systemctl", "restart", "nginx.service")


@pytest.mark.parametrize("failing", [("fail2ban-client", "--test"), ("systemctl", "restart", "fail2ban")])
def test_fail2ban_that_cannot_start_is_said_and_the_site_still_comes_up(failing: tuple[str, ...]) -> None:
    server, agent = written_droplet()
    server.answer(*failing, returncode=1)

    assert firstboot.first_boot(agent) == 0

    assert server.stderr[-1] == "flask-droplet: WARNING: fail2ban did not start (journalctl -u fail2ban)"


def test_refused_sysctls_are_said_and_do_not_stop_the_first_boot() -> None:
    server, agent = written_droplet()
    server.answer("sysctl", returncode=255)

    assert firstboot.first_boot(agent) == 0

    assert "flask-droplet: some sysctls were refused" in server.stderr


def test_main_runs_the_first_boot_on_the_real_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` builds the real boundary and the shipped settings; here both are stood in for."""
    server, agent = written_droplet()
    monkeypatch.setattr(firstboot, "RealSystem", lambda: _Closing(server))
    monkeypatch.setattr(firstboot, "load", lambda: agent.config)
    monkeypatch.setattr(sys, "stderr", io.StringIO())

    assert firstboot.main() == 0
    assert server.events[-1] == "closed"


class _Closing(FakeSystem):
    def __init__(self, server: FakeSystem) -> None:
        self.__dict__ = server.__dict__

    def close(self) -> None:
        self.events.append("closed")
