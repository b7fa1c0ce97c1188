"""The server agent under a fake boundary: facts in, the commands it runs and the files it writes out."""

from __future__ import annotations

import dataclasses

import pytest

from agent import checks, finish, manifest
from agent.cli import main
from agent.context import Agent, Failed
from agent.inputs import DeployInput
from agent.system import Completed
from tests.unit.agent_server import (
    ENVIRONMENT,
    PUBLIC_IPV4,
    bundle_of,
    config_of,
    deploy,
    first_booted,
    forget,
    live_server,
    with_certificate,
)

SERVICE_RESTARTS = ("systemctl", "restart", "weather.service")


def test_first_deploy_installs_the_release_and_reports_its_url() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    release = bundle_of("ip")

    assert deploy(server, config, release) == 0, server.stderr

    directory = f"/srv/weather/releases/{release.release_id}"
    assert server.readlink("/srv/weather/current") == directory
    assert server.stdout == [release.release_id, f"https://{PUBLIC_IPV4}/"]
    assert server.read_text("/etc/weather/env") == ENVIRONMENT
    assert server.read_text("/srv/weather/public-ipv4") == f"{PUBLIC_IPV4}\n"
    env = server.read_text(f"{directory}/release.env") or ""
    assert f"APP_VERSION={release.release_id}\n" in env
    assert "DATABASE_URL=sqlite:////var/lib/weather/database.sqlite3\n" in env
    # The certificate serves: the HTTPS site, and its renewal and the backups on their timers.
    assert "listen 443" in (server.read_text(config.layout.nginx_site) or "")
    assert ["systemctl", "enable", "--quiet", "--now", "flaskdroplet-certbot-renew.timer"] in server.commands
    assert ["systemctl", "enable", "--quiet", "--now", "weather-backup.timer"] in server.commands
    assert server.ran(*SERVICE_RESTARTS)
    assert not server.ran("/opt/flaskdroplet/certbot-5.8.0/bin/certbot")
    # Static files point into the store of contents; the release's virtualenv is shared by its key.
    assert any(path.startswith("/srv/weather/assets/") for path in server.files)
    assert server.readlink(
        f"{directory}/app/.venv",
    ).startswith("/srv/weather/venvs/")  # type: ignore[union-attr]


def test_an_unchanged_configuration_runs_no_daemon_reload_and_restarts_nothing() -> None:
    server, config, release = live_server()

    assert deploy(server, config, release) == 0, server.stderr

    assert not server.ran("systemctl", "daemon-reload")
    assert not [argv for argv in server.ran("systemctl") if argv[1] in ("restart", "reload", "stop")]
    assert not [argv for argv in server.ran("systemd-run") if "--unit=weather-candidate" in argv]
    assert (
        f"{server.clock()} deploy[weather]: release {release.release_id} is already live and healthy; nothing to change"
        in server.stderr
    )
    assert server.stdout[:2] == [release.release_id, f"https://{PUBLIC_IPV4}/"]
    assert not [path for path in server.written if path.startswith("/etc/")]


def test_a_changed_nginx_site_reloads_nginx_and_nothing_else() -> None:
    server, config, release = live_server()
    server.files[config.layout.nginx_site] = "# edited by hand\n"

    assert deploy(server, config, release) == 0, server.stderr

    assert server.ran("nginx", "-t")
    assert server.ran("systemctl", "reload", "nginx")
    assert not server.ran("systemctl", "daemon-reload")
    assert not server.ran("systemctl", "restart")
    assert [path for path in server.written if path.startswith("/etc/")] == [config.layout.nginx_site]


def test_a_changed_unit_reloads_systemd_and_the_release_goes_live_again() -> None:
    server, config, release = live_server()
    server.files["/etc/systemd/system/weather.service"] = "[Service]\n"

    assert deploy(server, config, release) == 0, server.stderr

    assert server.ran("systemctl", "daemon-reload")
    assert server.ran(*SERVICE_RESTARTS)
    assert not server.ran("systemctl", "reload", "nginx")


def test_a_valid_certificate_is_not_requested_again() -> None:
    server, config, release = live_server()

    deploy(server, config, release)

    assert not server.ran(config.layout.certbot)
    assert not server.ran("getent")


def test_a_missing_certificate_is_requested_after_dns_points_here() -> None:
    config = config_of("domain")
    server = first_booted("domain")
    server.answer("getent", "ahostsv4", "weather.example.org", stdout=f"{PUBLIC_IPV4} STREAM weather.example.org\n")
    server.executable.add(config.layout.certbot)
    server.files[config.layout.certbot] = ""

    def issue(argv: list[str]) -> Completed:
        with_certificate(server, config, config.host_names)
        return Completed(0)

    server.answer_with((config.layout.certbot, "certonly"), issue)

    assert deploy(server, config, bundle_of("domain")) == 0, server.stderr

    (request,) = server.ran(config.layout.certbot)
    assert request[request.index("--domain") + 1] == "weather.example.org"
    assert "--preferred-profile" in request and "classic" in request
    assert server.stdout[1] == "https://weather.example.org/"


def test_a_domain_that_does_not_resolve_here_stops_the_deploy_before_any_order() -> None:
    config = config_of("domain")
    server = first_booted("domain")
    server.answer("getent", "ahostsv4", "weather.example.org", stdout="198.51.100.1 STREAM weather.example.org\n")

    assert deploy(server, config, bundle_of("domain")) == 1

    assert not server.ran(config.layout.certbot)
    assert any("resolves to 198.51.100.1, not to this server's address 203.0.113.10" in line for line in server.stderr)
    assert any("or set dnsZone to a zone DigitalOcean holds" in line for line in server.stderr)
    assert not server.exists("/srv/forecast/current")


def test_a_domain_whose_zone_the_stack_writes_is_told_to_wait_for_it_or_its_delegation() -> None:
    config = dataclasses.replace(config_of("domain"), dns_zone="example.org")
    server = first_booted("domain")
    server.answer("getent", "ahostsv4", "weather.example.org", stdout="")

    assert deploy(server, config, bundle_of("domain")) == 1

    said = "\n".join(server.stderr)
    assert "weather.example.org resolves to nothing" in said
    assert "The stack's A record in example.org points at it" in said and "ns1, ns2 and ns3.digitalocean.com" in said
    assert "set dnsZone" not in said


def test_an_address_certificate_that_fails_keeps_plain_http_and_says_so() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    server.files[config.layout.certbot] = ""
    server.answer(config.layout.certbot, returncode=1)

    assert deploy(server, config, bundle_of("ip")) == 0, server.stderr

    assert server.stdout[1] == f"http://{PUBLIC_IPV4}/"
    assert any("the site stays on plain HTTP and the next deploy tries again" in line for line in server.stderr)
    assert "listen 443" not in (server.read_text(config.layout.nginx_site) or "")


def test_300_mib_free_refuses_a_release_that_needs_more_and_names_both_figures() -> None:
    server, config, _ = live_server()
    server.answer("df", "-m", "--output=avail", stdout="Avail\n  300\n")
    server.answer("du", "-sm", stdout="500\t/srv/weather/venvs/x\n")
    release = bundle_of("ip", workers=4)  # another release with the same dependencies...
    (venv,) = server.listdir("/srv/weather/venvs")
    server.remove(f"/srv/weather/venvs/{venv}/.complete")  # ... whose virtualenv must be made again

    assert deploy(server, config, release) == 1

    failure = next(line for line in server.stderr if "FAILED:" in line)
    assert "the disk holding /srv/weather has 300 MiB free" in failure
    assert "this release needs about 565 MiB (the release 1 MiB, a new virtualenv 500 MiB, 64 MiB to spare)" in failure
    assert not server.ran("tar")
    assert not server.exists(f"/srv/weather/releases/{release.release_id}")


def test_memory_too_small_for_the_workers_refuses_the_release() -> None:
    server, config, _ = live_server("ip", workers=32)
    server.answer("systemctl", "show", "-p", "MainPID", stdout="4242\n")
    server.answer("ps", "-o", "rss=", stdout="102400\n102400\n")
    server.files["/sys/fs/cgroup/memory.max"] = f"{1024 * 1048576}\n"
    server.files["/sys/fs/cgroup/memory.current"] = f"{600 * 1048576}\n"
    server.files["/sys/fs/cgroup/memory.stat"] = f"anon 1\ninactive_file {100 * 1048576}\n"

    assert deploy(server, config, bundle_of("ip", workers=32, healthPath="/ready")) == 1

    failure = next(line for line in server.stderr if "FAILED:" in line)
    assert "32 workers need about 3300 MiB (100 MiB a process, as the live release uses)" in failure
    assert "3100 MiB more than now, and 524 MiB are free" in failure
    assert "Set workers lower or choose a larger size; the live release keeps serving" in failure


def test_a_failing_candidate_leaves_the_live_release_its_units_and_its_site() -> None:
    server, config, live = live_server()
    unit_before = server.read_text("/etc/systemd/system/weather.service")
    site_before = server.read_text(config.layout.nginx_site)
    server.answer("curl", "--silent", "--fail", "--max-time", "5", "-H", "Host: 127.0.0.1", returncode=22)
    broken = bundle_of("ip", workers=4, healthPath="/ready")

    assert deploy(server, config, broken) == 1

    assert server.readlink("/srv/weather/current") == f"/srv/weather/releases/{live.release_id}"
    assert server.read_text("/etc/systemd/system/weather.service") == unit_before
    assert server.read_text(config.layout.nginx_site) == site_before
    assert not server.ran(*SERVICE_RESTARTS)
    # The units the failed release wrote are gone from systemd's view too.
    assert server.ran("systemctl", "daemon-reload")
    assert server.events.index("write: /etc/systemd/system/weather.service") < len(server.events) - 1
    assert server.commands[-1][:2] != ["systemctl", "restart"]
    failure = next(line for line in server.stderr if "FAILED:" in line)
    assert f"did not answer 2xx within 30 s; {live.release_id} is still live" in failure


def test_a_release_unhealthy_once_live_is_switched_back_with_the_files_before_it() -> None:
    server, config, live = live_server()
    unit_before = server.read_text("/etc/systemd/system/weather.service")
    server.answer("curl", "--silent", "--fail", "--max-time", "5", "--insecure", returncode=22)
    broken = bundle_of("ip", workers=4)

    assert deploy(server, config, broken) == 1

    assert server.readlink("/srv/weather/current") == f"/srv/weather/releases/{live.release_id}"
    assert server.read_text("/etc/systemd/system/weather.service") == unit_before
    assert any("is unhealthy once live; switching back to" in line for line in server.stderr)


def test_nginx_rejecting_the_site_puts_every_file_back() -> None:
    server, config, _ = live_server()
    unit_before = server.read_text("/etc/systemd/system/weather.service")
    server.answer("nginx", "-t", returncode=1)
    server.files[config.layout.nginx_site] = "# drifted\n"
    release = bundle_of("ip", workers=4)

    assert deploy(server, config, release) == 1

    assert server.read_text(config.layout.nginx_site) == "# drifted\n"
    assert server.read_text("/etc/systemd/system/weather.service") == unit_before
    assert any(
        f"release {release.release_id}: nginx rejects its site configuration (nginx -t)" in line
        for line in server.stderr
    )


def test_the_lock_makes_a_second_deploy_wait_for_the_first() -> None:
    server, config, release = live_server()
    server.locked_for = 3

    assert deploy(server, config, release) == 0

    assert server.slept >= 3
    first_effect = next(i for i, event in enumerate(server.events) if not event.startswith("lock"))
    assert server.events.index("lock: /run/lock/weather-deploy.lock") < first_effect + 1


def test_a_lock_held_for_ten_minutes_stops_the_deploy() -> None:
    server, config, release = live_server()
    server.locked_for = 10_000

    assert deploy(server, config, release) == 1

    assert any("another deploy has held the lock for 10 minutes" in line for line in server.stderr)
    assert not server.written


def test_rollback_picks_the_release_that_was_live_before() -> None:
    server, config, first = live_server()
    second = bundle_of("ip", workers=4)
    assert deploy(server, config, second) == 0, server.stderr
    forget(server)

    assert main(["rollback"], server, config) == 0

    assert server.readlink("/srv/weather/current") == f"/srv/weather/releases/{first.release_id}"
    assert server.stdout == [first.release_id]
    assert server.read_text("/srv/weather/previous") == f"/srv/weather/releases/{second.release_id}\n"


def test_rollback_to_a_release_that_is_not_there_names_those_that_are() -> None:
    server, config, release = live_server()

    assert main(["rollback", "0123456789ab"], server, config) == 1

    assert any(
        f"release 0123456789ab is not on this server; releases: {release.release_id}" in line for line in server.stderr
    )


def test_pruning_keeps_releases_to_keep_and_the_live_one() -> None:
    server, config, _ = live_server()
    releases = [f"/srv/weather/releases/r{n}" for n in range(8)]
    for age, path in enumerate(releases):
        server.make_dirs(path)
        server.mtimes[path] = 100 - age  # r0 is the newest
        server.symlink(f"/srv/weather/venvs/v{age}", f"{path}/app/.venv")
        server.make_dirs(f"/srv/weather/venvs/v{age}")
    server.symlink(releases[-1], "/srv/weather/current")  # the oldest is live
    server.files["/srv/weather/previous"] = releases[-2] + "\n"

    finish.prune(Agent(server, config))

    kept = [path for path in releases if server.is_dir(path)]
    assert kept == [*releases[: config.releases_to_keep], releases[-2], releases[-1]]
    assert sorted(server.listdir("/srv/weather/venvs")) == ["v0", "v1", "v2", "v3", "v4", "v6", "v7"]


def test_behind_a_balancer_the_switch_happens_out_of_its_rotation() -> None:
    server, config, _ = live_server("fleet")
    second = bundle_of("fleet", workers=4)

    assert deploy(server, config, second, "--skip-release-command") == 0, server.stderr

    drain = config.layout.balancer_drain
    assert server.events.index(f"write: {drain}") < server.events.index("run: systemctl restart weather.service")
    assert not server.exists(drain)
    assert server.slept >= config.out_of_rotation_seconds + config.into_rotation_seconds
    assert any("release command: left to the droplet that ran it" in line for line in server.stderr)


def test_the_release_command_runs_once_for_each_release() -> None:
    server, config, release = live_server("fleet")
    (first,) = [argv for argv in live_commands(server, "fleet") if "upgrade" in argv]
    forget(server)

    assert deploy(server, config, release) == 0

    assert not [argv for argv in server.commands if "upgrade" in argv]
    assert first[-4:] == ["--app", "weather", "db", "upgrade"]


def live_commands(server: object, variant: str) -> list[list[str]]:
    again = first_booted(variant)
    config = config_of(variant)
    with_certificate(again, config, config.host_names)
    deploy(again, config, bundle_of(variant))
    return again.commands


def test_a_failing_release_command_leaves_the_live_release() -> None:
    server, config, live = live_server("fleet")
    server.answer("systemd-run", "--quiet", "--wait", "--collect", "--pipe", returncode=3)
    release = bundle_of("fleet", workers=4)

    assert deploy(server, config, release) == 1

    failure = next(line for line in server.stderr if "FAILED:" in line)
    assert (
        f"releaseCommand 'flask --app weather db upgrade' exited 3 (output above); {live.release_id} is still live"
        in failure
    )


SEED = ("flask", "--app", "weather", "seed")


def release_runs(server: object) -> list[str]:
    """The commands run in a release, by their last word (upgrade, seed), in order."""
    commands = server.commands  # type: ignore[attr-defined]
    return [argv[-1] for argv in commands if argv[0] == "systemd-run" and argv[-1] in ("upgrade", "seed")]


def test_the_procfile_web_commands_run_after_the_release_command_once_for_each_release() -> None:
    server, config, _ = live_server("fleet")
    config = dataclasses.replace(config, web_commands=(SEED,))
    release = bundle_of("fleet", workers=4)

    assert deploy(server, config, release) == 0, server.stderr

    assert release_runs(server) == ["upgrade", "seed"]
    assert any(
        "running the Procfile's web command before Gunicorn, once for this release before it goes live: "
        "flask --app weather seed" in line
        for line in server.stderr
    )
    forget(server)
    assert deploy(server, config, release) == 0
    assert release_runs(server) == []


def test_a_failing_procfile_web_command_leaves_the_live_release() -> None:
    server, config, live = live_server("fleet")
    config = dataclasses.replace(config, web_commands=(SEED,))
    server.answer_with(("systemd-run",), lambda argv: Completed(4 if argv[-1] == "seed" else 0))

    assert deploy(server, config, bundle_of("fleet", workers=4)) == 1

    failure = next(line for line in server.stderr if "FAILED:" in line)
    assert (
        f"Procfile web: 'flask --app weather seed' exited 4 (output above); {live.release_id} is still live" in failure
    )
    assert "run: systemctl restart weather.service" not in server.events


def test_procfile_web_commands_are_left_to_the_first_droplet() -> None:
    server, config, _ = live_server("fleet")
    config = dataclasses.replace(config, release_command=(), web_commands=(SEED,))

    assert deploy(server, config, bundle_of("fleet", workers=4), "--skip-release-command") == 0

    assert release_runs(server) == []
    assert any("release command: left to the droplet that ran it" in line for line in server.stderr)


def test_usage_errors_name_the_usage() -> None:
    server, config = first_booted(), config_of("ip")

    assert main(["only-one-word"], server, config) == 1
    assert main(["logs", "-n", "x"], server, config) == 1
    assert main(["backup", "extra"], server, config) == 1
    assert main(["run"], server, config) == 1
    assert main(["rollback", "a", "b"], server, config) == 1
    assert main(["restore", "a", "b"], server, config) == 1

    failures = [line.split("FAILED: ", 1)[1] for line in server.stderr if "FAILED: " in line]
    assert failures == [
        "usage: deploy.sh [--skip-release-command] [--secondary] RELEASE_ID BUNDLE [PUBLIC_IPV4], "
        "or deploy.sh rollback [RELEASE_ID]",
        "usage: deploy.sh logs [-f] [-n LINES]",
        "usage: deploy.sh backup",
        "usage: deploy.sh run [--] COMMAND [ARGS...]",
        "usage: deploy.sh rollback [RELEASE_ID]",
        "usage: deploy.sh restore [--offsite] [BACKUP]",
    ]


def test_a_bundle_that_does_not_match_its_release_id_changes_nothing() -> None:
    server, config = first_booted(), config_of("ip")
    release = bundle_of("ip")
    server.files[release.path] = release.data + b"x"
    server.stdin = DeployInput(ENVIRONMENT).to_json()

    assert main([release.release_id, release.path, PUBLIC_IPV4], server, config) == 1
    assert main(["nothex", release.path], server, config) == 1
    assert main([release.release_id, "/nowhere.tar.gz"], server, config) == 1
    server.files[release.path] = release.data
    assert main([release.release_id, release.path, "not-an-address"], server, config) == 1
    assert main([release.release_id, release.path], server, config) == 1

    assert [line.split("FAILED: ", 1)[1] for line in server.stderr if "FAILED: " in line] == [
        f"bundle {release.path} does not match release {release.release_id}",
        "release id 'nothex' is not 12 hex digits",
        "bundle /nowhere.tar.gz does not exist",
        "public address 'not-an-address' is not an IPv4 address",
        "no public address given, and none recorded",
    ]
    assert not server.exists("/srv/weather/releases")


def test_apt_holding_its_lock_is_waited_for_before_installing() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    server.dpkg_busy_for = 2

    assert deploy(server, config, bundle_of("ip")) == 0

    assert any("waiting for apt/dpkg to finish" in line for line in server.stderr)
    assert any("apt/dpkg finished after 4 s" in line for line in server.stderr)


def test_apt_holding_its_lock_for_ten_minutes_stops_the_deploy() -> None:
    server, config = first_booted(), config_of("ip")
    server.dpkg_busy_for = 10_000

    with pytest.raises(Failed, match="apt/dpkg has held its lock for 10 minutes"):
        checks.wait_for_apt(Agent(server, config))


def test_a_failed_dependency_install_removes_the_half_made_virtualenv() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)
    server.answer("python3", "-m", "venv", returncode=1)

    assert deploy(server, config, bundle_of("ip")) == 1

    assert any("its dependencies did not install" in line for line in server.stderr)
    assert not [path for path in server.dirs if "/.staging." in path]
    assert not server.listdir("/srv/weather/venvs")


def test_a_warning_for_each_extra_that_is_not_running() -> None:
    server, config, release = live_server()
    server.answer("systemctl", "is-active", "--quiet", "fail2ban", returncode=3)

    deploy(server, config, release)

    assert server.stdout[2:] == [
        "warning: fail2ban is not running (journalctl -u fail2ban): failed SSH logins are not banned"
    ]


def test_handlers_run_once_each_in_their_order() -> None:
    server = first_booted()
    notified = {manifest.RELOAD_NGINX, manifest.RESTART_NGINX, manifest.DAEMON_RELOAD, manifest.RESTART_JOURNALD}

    manifest.run_handlers(server, notified)

    assert server.commands == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "restart", "systemd-journald"],
        ["systemctl", "restart", "nginx"],
    ]


def test_a_feature_turned_off_removes_its_files_after_stopping_its_timer() -> None:
    server, _, _ = live_server()
    off = config_of("ip", backupDays=0, offsiteRegion="")
    quiet = bundle_of("ip", backupDays=0, offsiteRegion="")

    assert deploy(server, off, quiet) == 0, server.stderr

    assert not server.exists("/etc/systemd/system/weather-backup.timer")
    assert not server.exists(off.layout.backup_script)
    disable = server.commands.index(["systemctl", "disable", "--quiet", "--now", "weather-backup.timer"])
    assert disable < server.commands.index(["systemctl", "daemon-reload"])


def test_manifest_entries_read_back_as_written() -> None:
    entries = manifest.loads(manifest.dumps([manifest.Entry("/x", None, notify=("a",), enable="u.timer")]))

    assert entries == [manifest.Entry("/x", None, notify=("a",), enable="u.timer")]


def test_memory_is_what_the_tighter_of_the_machine_and_its_cgroup_leaves() -> None:
    server, config = first_booted(), config_of("ip")
    server.files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = f"{512 * 1048576}\n"
    server.files["/sys/fs/cgroup/memory/memory.usage_in_bytes"] = f"{256 * 1048576}\n"
    server.files["/sys/fs/cgroup/memory.max"] = "max\n"
    server.files["/sys/fs/cgroup/memory.current"] = "1\n"

    assert checks.available_memory_mib(Agent(server, config)) == 256
