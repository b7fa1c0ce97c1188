"""The agent's admin verbs and its Volume handling, under the fake boundary."""

from __future__ import annotations

import pytest

from agent import volume
from agent.cli import main
from agent.context import Agent, Failed
from agent.system import Completed
from tests.unit.agent_server import (
    PUBLIC_IPV4,
    Release,
    bundle_of,
    config_of,
    deploy,
    first_booted,
    live_server,
    relocked,
    with_certificate,
)

BACKUPS = "/var/backups/weather"


def test_run_runs_the_command_as_the_app_in_the_live_release_and_passes_its_status() -> None:
    server, config, release = live_server()
    server.answer("systemd-run", "--quiet", "--wait", "--collect", returncode=3)

    assert main(["run", "--", "flask", "--app", "weather", "routes"], server, config) == 3

    (command,) = server.ran("systemd-run")
    assert command[4] == "--pipe"  # no terminal on both ends
    assert "--uid=weather" in command
    assert f"--working-directory=/srv/weather/releases/{release.release_id}/app" in command
    assert command[-4:] == [
        f"/srv/weather/releases/{release.release_id}/app/.venv/bin/flask",
        "--app",
        "weather",
        "routes",
    ]


def test_run_with_a_terminal_on_both_ends_gets_one_inside() -> None:
    server, config, _ = live_server()
    server.terminal = True

    assert main(["run", "flask", "shell"], server, config) == 0

    assert server.ran("systemd-run")[0][4] == "--pty"


def test_run_names_a_program_that_is_nowhere() -> None:
    server, config, release = live_server()

    assert main(["run", "flsk"], server, config) == 127

    assert server.stderr[-1].endswith(
        f"no program 'flsk' in the release's virtualenv (/srv/weather/releases/{release.release_id}/app/.venv/bin), "
        "the app or PATH"
    )


def test_run_takes_a_path_in_the_app_as_it_is() -> None:
    server, config, release = live_server()
    script = f"/srv/weather/releases/{release.release_id}/app/bin/task"
    server.executable.add(script)

    assert main(["run", "bin/task"], server, config) == 0

    assert server.ran("systemd-run")[0][-1] == script


def test_run_before_any_release_says_to_deploy_first() -> None:
    server, config = first_booted(), config_of("ip")

    assert main(["run", "flask"], server, config) == 1

    assert "FAILED: no release is live yet: deploy one first" in server.stderr[0]


def test_logs_show_the_requests_the_errors_and_the_journal() -> None:
    server, config, _ = live_server()
    server.answer("tail", "-n", "20", config.layout.access_log, stdout="one\ntwo\n")
    server.answer("tail", "-n", "20", "/var/log/nginx/error.log", returncode=1)

    assert main(["logs", "-n", "20"], server, config) == 0

    assert server.stdout == [
        f"== {config.layout.access_log}: the last 20 requests (id= is the request id the app gets as X-Request-ID)",
        "one\ntwo",
        "== /var/log/nginx/error.log: the last 20 lines",
        "(none yet)",
        "== the journal of weather.service, its processes and jobs, nginx and the deploy's units: the last 20 "
        "lines (journalctl -u weather.service -u weather.socket -u weather-candidate.service -u nginx.service "
        "-u weather-backup.service -u flaskdroplet-certbot-renew.service -u weather-process-*.service "
        "-u weather-schedule-*.service -u weather-candidate-*.service)",
    ]
    assert server.commands[-1][:4] == ["journalctl", "--no-pager", "--output=short-iso", "--lines=20"]


def test_logs_follow_every_source_at_once() -> None:
    server, config, _ = live_server()

    assert main(["logs", "-f"], server, config) == 0

    assert ["tail", "-n", "50", "-F", config.layout.access_log] in server.commands
    assert "--follow" in server.commands[-1]


def test_backup_starts_the_backup_unit_and_names_the_newest_backup() -> None:
    server, config, _ = live_server()

    def took(argv: list[str]) -> Completed:
        server.files[f"{BACKUPS}/20261201T020000Z.tar.gz"] = b""
        return Completed(0)

    server.answer_with(("systemctl", "start", "weather-backup.service"), took)
    server.files[f"{BACKUPS}/20261130T020000Z.tar.gz"] = b""

    assert main(["backup"], server, config) == 0

    assert server.stdout == ["20261201T020000Z"]


def test_a_failed_backup_shows_its_journal() -> None:
    server, config, _ = live_server()
    server.answer("systemctl", "start", "weather-backup.service", returncode=1)

    assert main(["backup"], server, config) == 1

    assert server.ran("journalctl", "-u", "weather-backup.service")
    assert "FAILED: the backup of /var/lib/weather failed (output above)" in server.stderr[-2]


def test_backup_with_backups_off_says_so() -> None:
    server, config, _ = live_server("domain")

    assert main(["backup"], server, config) == 1

    assert "backups are off on this server" in server.stderr[-2]


def test_restore_backs_up_first_then_puts_the_backup_back_with_the_app_stopped() -> None:
    server, config, _ = live_server()
    server.files[f"{BACKUPS}/20261130T020000Z.tar.gz"] = b""
    server.write_file("/var/lib/weather/database.sqlite3", "now")
    server.answer("tar", "-xzf", f"{BACKUPS}/20261130T020000Z.tar.gz")
    server.make_dirs("/var/lib/weather/lost+found")

    def took(argv: list[str]) -> Completed:
        server.files[f"{BACKUPS}/20261201T020000Z.tar.gz"] = b""
        return Completed(0)

    server.answer_with(("systemctl", "start", "weather-backup.service"), took)

    assert main(["restore", "20261130T020000Z.tar.gz"], server, config) == 0

    assert server.stdout == ["20261130T020000Z"]
    stop = server.commands.index(["systemctl", "stop", "weather.socket", "weather.service"])
    untar = server.commands.index(
        ["tar", "-xzf", f"{BACKUPS}/20261130T020000Z.tar.gz", "-C", "/var/lib/weather", "--no-same-owner"]
    )
    assert stop < untar < server.commands.index(["systemctl", "start", "weather.socket"])
    assert not server.exists("/var/lib/weather/database.sqlite3")
    assert server.is_dir("/var/lib/weather/lost+found")
    assert "restored 20261130T020000Z; the state before it is the backup 20261201T020000Z" in server.stderr[-1]


def test_restore_names_the_backups_there_are() -> None:
    server, config, _ = live_server()
    server.files[f"{BACKUPS}/20261130T020000Z.tar.gz"] = b""

    server.answer("tar", "-tzf", returncode=2)

    assert main(["restore", "nope"], server, config) == 1
    assert main(["restore", "20261130T020000Z"], server, config) == 1  # a tar that does not read
    server.remove(f"{BACKUPS}/20261130T020000Z.tar.gz")
    assert main(["restore"], server, config) == 1

    failures = [line.split("FAILED: ", 1)[1] for line in server.stderr if "FAILED: " in line]
    assert failures[0] == f"no backup 'nope' in {BACKUPS}; backups: 20261130T020000Z.tar.gz "
    assert failures[1] == f"the backup {BACKUPS}/20261130T020000Z.tar.gz cannot be read; nothing has changed"
    assert failures[2] == f"no backup in {BACKUPS} to restore"


def test_restore_that_leaves_the_app_unhealthy_names_the_backup_before_it() -> None:
    server, config, _ = live_server()
    server.files[f"{BACKUPS}/20261130T020000Z.tar.gz"] = b""
    server.answer("tar", "-xzf", f"{BACKUPS}/20261130T020000Z.tar.gz")
    server.answer("curl", returncode=7)

    assert main(["restore"], server, config) == 1

    assert "the state as it was before the restore is the backup 20261130T020000Z" in server.stderr[-2]


def test_a_volume_that_is_not_attached_stops_the_deploy_before_anything_changes() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    server.answer("test", "-b", returncode=1)

    assert deploy(server, config, bundle_of("ip")) == 1

    assert "does not exist after 30 s" in next(line for line in server.stderr if "FAILED" in line)
    assert not server.exists("/srv/weather/releases")


def test_state_on_the_droplets_disk_moves_onto_the_volume_once() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    server.write_file("/var/lib/weather/database.sqlite3", "rows")
    mounted = {"now": False}

    def mountpoint(argv: list[str]) -> Completed:
        return Completed(0 if mounted["now"] else 1)

    def mount(argv: list[str]) -> Completed:
        mounted["now"] = True
        server.make_dirs("/var/lib/weather/lost+found")
        return Completed(0)

    server.answer_with(("mountpoint", "-q"), mountpoint)
    server.answer_with(("systemctl", "enable", "--quiet", "--now", "var-lib-weather.mount"), mount)

    assert deploy(server, config, bundle_of("ip")) == 0, server.stderr

    assert ["cp", "-a", "/var/lib/weather.before-volume/.", "/var/lib/weather/"] in server.commands
    assert server.exists("/var/lib/weather.before-volume/database.sqlite3")


def test_a_volume_that_holds_data_beside_state_on_the_disk_puts_everything_back() -> None:
    server, config = first_booted("ip"), config_of("ip")
    agent = Agent(server, config)
    server.write_file("/var/lib/weather/database.sqlite3", "rows")
    server.answer("mountpoint", "-q", returncode=1)

    def mount(argv: list[str]) -> Completed:
        server.write_file("/var/lib/weather/other.sqlite3", "other rows")
        return Completed(0)

    server.answer_with(("systemctl", "enable", "--quiet", "--now", "var-lib-weather.mount"), mount)

    with pytest.raises(Failed, match="the Volume already holds data and so does /var/lib/weather"):
        volume.ensure_state_volume(agent, [])
    assert server.exists("/var/lib/weather/database.sqlite3")
    assert not server.exists("/etc/systemd/system/var-lib-weather.mount")


def test_a_volume_larger_than_its_file_system_grows_it_and_warns_when_that_fails() -> None:
    server, config, release = live_server()
    device = config.state_device
    server.answer("blockdev", "--getsize64", device, stdout=f"{2048 * 1048576}\n")
    server.answer("dumpe2fs", "-h", device, stdout="Block count:  262144\nBlock size:   4096\n")

    deploy(server, config, release)

    assert server.ran("/usr/lib/systemd/systemd-growfs", "/var/lib/weather")
    assert server.stdout[-1] == (
        f"warning: the Volume has 1024 MiB its file system does not use: growing it online failed (the deploy's log); "
        f"sudo resize2fs {device}"
    )


def test_a_state_directory_mounted_from_elsewhere_stops_the_deploy() -> None:
    server, config, release = live_server()
    server.answer("stat", "-c", stdout="8:1\n")
    server.answer("stat", "-L", stdout="8:16\n")

    assert deploy(server, config, release) == 1

    assert f"/var/lib/weather is mounted, but not from the Volume {config.state_device}" in server.stderr[-2]


def test_an_address_certificate_that_cannot_be_renewed_keeps_serving_the_one_there_is() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    server.files[config.layout.certificate_renewal] = "server = https://elsewhere/dir\n"
    server.files[config.layout.certbot] = ""
    server.answer(config.layout.certbot, returncode=1)

    assert deploy(server, config, bundle_of("ip")) == 0, server.stderr

    assert server.stdout[1] == f"https://{PUBLIC_IPV4}/"
    assert any("the current certificate keeps serving" in line for line in server.stderr)


def test_a_domain_certificate_that_cannot_be_had_stops_the_deploy() -> None:
    config = config_of("domain")
    server = first_booted("domain")
    server.answer("getent", "ahostsv4", stdout=f"{PUBLIC_IPV4} STREAM weather.example.org\n")
    server.answer("python3", "-m", "venv", returncode=1)  # certbot does not install

    assert deploy(server, config, bundle_of("domain")) == 1

    assert "https: no certificate for weather.example.org" in next(line for line in server.stderr if "FAILED" in line)


def test_locked_dependencies_install_with_uv() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    release = bundle_of("ip")
    data = release.data
    server.files[config.layout.uv] = ""

    locked = relocked(data)
    assert deploy(server, config, Release(*locked)) == 0, server.stderr

    (sync,) = server.ran(config.layout.uv, "sync")
    assert "--locked" in sync
    assert server.ran(config.layout.uv, "pip", "install")
