"""The agent's processes and scheduled jobs under the fake server: candidates, the switch, rollback, removal."""

from __future__ import annotations

import json
from typing import Any

from agent.cli import main
from agent.fake import FakeSystem
from agent.processes import Spec
from agent.system import Completed
from tests.unit.agent_server import bundle_of, deploy, forget, live_server

WORKER = "huey_consumer tasks.huey"
PROCESSES = {
    "worker": WORKER,
    "mailer": {"command": "python -m mailer", "stopTimeoutSeconds": 120, "droplets": "first"},
}
SCHEDULES = {"nightly": {"command": "flask --app wsgi report", "when": "0 3 * * *", "randomDelaySeconds": 60}}
WITH_BOTH: dict[str, Any] = {"processes": PROCESSES, "schedules": SCHEDULES}
UNITS = "/etc/systemd/system"


def candidate_starts(server: FakeSystem) -> list[list[str]]:
    return [argv for argv in server.ran("systemd-run") if any(a.startswith("--unit=weather-candidate-") for a in argv)]


def test_a_release_with_processes_starts_them_as_candidates_then_installs_and_restarts_them() -> None:
    server, config, _ = live_server(**WITH_BOTH)

    # On a first deploy too (live_server did it): now a second release with a changed command.
    second = bundle_of("ip", processes={**PROCESSES, "worker": f"{WORKER} -w 2"}, schedules=SCHEDULES)
    assert deploy(server, config, second) == 0, server.stderr

    starts = candidate_starts(server)
    assert [argv[3] for argv in starts] == [
        "--unit=weather-candidate-mailer.service",
        "--unit=weather-candidate-worker.service",
    ]
    worker = starts[1]
    assert worker[-3:] == ["/bin/sh", "-c", f"exec {WORKER} -w 2"]
    assert f"--working-directory=/srv/weather/releases/{second.release_id}/app" in worker
    assert "--property=ProtectSystem=strict" in worker and "--uid=weather" in worker
    assert "--property=TimeoutStopSec=30" in worker
    # Candidates run beside the live processes, then stop, and the switch restarts the live ones.
    events = server.events
    started = events.index(f"run: {' '.join(starts[1])}")
    restarted = events.index("run: systemctl restart weather-process-worker.service")
    stop = "run: systemctl stop weather-candidate-mailer.service weather-candidate-worker.service"
    assert started < events.index(stop, started) < restarted
    assert events.index(f"link: /srv/weather/current -> /srv/weather/releases/{second.release_id}") < restarted
    unit = server.read_text(f"{UNITS}/weather-process-worker.service") or ""
    assert f'ExecStart=/bin/sh -c "exec {WORKER} -w 2"' in unit
    assert "WorkingDirectory=/srv/weather/current/app" in unit and "KillSignal=SIGTERM" in unit
    assert "TimeoutStopSec=120" in (server.read_text(f"{UNITS}/weather-process-mailer.service") or "")
    assert ["systemctl", "restart", "weather-process-mailer.service"] in server.commands
    timer = server.read_text(f"{UNITS}/weather-schedule-nightly.timer") or ""
    assert "OnCalendar=*-*-* 03:00:00\n" in timer and "Persistent=true" in timer and "RandomizedDelaySec=60" in timer
    assert ["systemctl", "enable", "--quiet", "weather-schedule-nightly.timer"] in server.commands
    assert server.stdout[0] == second.release_id
    assert [line.split(" (")[0] for line in server.stdout[2:4]] == [
        "process: mailer unknown",
        "process: worker unknown",
    ]
    assert server.stdout[4].startswith("schedule: nightly next ")


def test_a_process_that_dies_at_its_start_fails_the_deploy_before_the_switch() -> None:
    server, config, release = live_server(**WITH_BOTH)
    crashing = bundle_of("ip", processes={**PROCESSES, "worker": "huey_consumer nowhere.huey"}, schedules=SCHEDULES)
    alive = iter([0, 0, 0, 3])
    server.answer_with(
        ("systemctl", "is-active", "--quiet", "weather-candidate-worker.service"),
        lambda argv: Completed(next(alive, 3)),
    )
    forget(server)

    assert deploy(server, config, crashing) == 1

    failure = server.stderr[-2]
    assert "the process worker (huey_consumer nowhere.huey) exited within 5 s of its start" in failure
    assert "journalctl -u weather-candidate-worker.service" in failure
    assert f"{release.release_id} is still live, its processes too" in failure
    assert server.readlink("/srv/weather/current") == f"/srv/weather/releases/{release.release_id}"
    assert ["journalctl", "-u", "weather-candidate-worker.service", "-n", "30", "--no-pager"] in server.commands
    assert not server.ran("systemctl", "restart", "weather-process-worker.service")
    assert not server.ran("systemctl", "restart", "weather.service")
    assert "huey_consumer nowhere" not in (server.read_text(f"{UNITS}/weather-process-worker.service") or "")
    assert server.ran("systemctl", "stop", "weather-candidate-mailer.service", "weather-candidate-worker.service")


def test_a_process_left_out_is_stopped_and_its_unit_removed_and_a_rollback_returns_it() -> None:
    server, config, release = live_server(**WITH_BOTH)
    without = bundle_of("ip", processes={}, schedules={})

    assert deploy(server, config, without) == 0, server.stderr

    for unit in (
        "weather-process-worker.service",
        "weather-schedule-nightly.timer",
        "weather-schedule-nightly.service",
    ):
        assert ["systemctl", "disable", "--quiet", "--now", unit] in server.commands
        assert not server.exists(f"{UNITS}/{unit}")
    events = server.events
    assert events.index("run: systemctl disable --quiet --now weather-schedule-nightly.timer") < events.index(
        "run: systemctl disable --quiet --now weather-schedule-nightly.service"
    )
    forget(server)

    assert main(["rollback"], server, config) == 0, server.stderr

    assert server.readlink("/srv/weather/current") == f"/srv/weather/releases/{release.release_id}"
    assert server.exists(f"{UNITS}/weather-process-worker.service")
    assert ["systemctl", "restart", "weather-process-worker.service"] in server.commands
    assert ["systemctl", "restart", "weather-schedule-nightly.timer"] in server.commands
    assert candidate_starts(server)


def test_a_secondary_droplet_runs_no_jobs_and_no_processes_of_the_first() -> None:
    server, config, _release = live_server(**WITH_BOTH)
    second = bundle_of("ip", processes={**PROCESSES, "worker": f"{WORKER} -w 4"}, schedules=SCHEDULES)

    assert deploy(server, config, second, "--skip-release-command", "--secondary") == 0, server.stderr

    assert server.exists(f"{UNITS}/weather-process-worker.service")
    assert not server.exists(f"{UNITS}/weather-process-mailer.service")
    assert not server.exists(f"{UNITS}/weather-schedule-nightly.timer")
    assert server.read_text("/srv/weather/droplet-role") == "secondary\n"
    forget(server)
    # A rollback keeps to the droplet's place in its fleet.
    assert main(["rollback"], server, config) == 0, server.stderr
    assert not server.exists(f"{UNITS}/weather-schedule-nightly.timer")
    assert [a[3] for a in candidate_starts(server)] == ["--unit=weather-candidate-worker.service"]


def test_a_job_time_this_servers_systemd_refuses_stops_the_deploy_before_anything_changes() -> None:
    server, config, _release = live_server()
    server.answer("systemd-analyze", "calendar", returncode=1)
    later = bundle_of("ip", schedules=SCHEDULES)

    assert deploy(server, config, later) == 1

    assert "the job nightly's time *-*-* 03:00:00 is refused by this server's systemd" in server.stderr[-2]
    assert not server.ran("systemd-run")
    assert not server.exists(f"/srv/weather/releases/{later.release_id}")


def test_the_same_release_again_restarts_nothing_but_puts_a_unit_edited_by_hand_back() -> None:
    server, config, release = live_server(**WITH_BOTH)
    server.files[f"{UNITS}/weather-process-worker.service"] = "# edited\n"

    assert deploy(server, config, release) == 0, server.stderr

    assert "already live and healthy" in " ".join(server.stderr)
    assert ["systemctl", "restart", "weather-process-worker.service"] in server.commands
    assert ["systemctl", "start", "weather-process-mailer.service"] in server.commands
    assert not candidate_starts(server)


def test_memory_check_counts_the_processes_as_candidates() -> None:
    server, config, _release = live_server(**WITH_BOTH)
    server.answer("systemctl", "show", "-p", "MainPID", "--value", "weather.service", stdout="100\n")
    server.answer("ps", "-o", "rss=", "-p", "100", stdout="102400\n102400\n102400\n102400\n")
    server.answer("systemctl", "show", "-p", "MainPID", "--value", "weather-process-worker.service", stdout="200\n")
    server.answer("ps", "-o", "rss=", "-p", "200", stdout="307200\n")
    server.files["/proc/meminfo"] = "MemAvailable: 614400 kB\n"
    second = bundle_of("ip", processes={**PROCESSES, "worker": f"{WORKER} -w 2"}, schedules=SCHEDULES)

    assert deploy(server, config, second) == 1

    # 2 web processes of 100 MiB for the candidate, the worker's 300 MiB and the mailer as a web process.
    assert (
        "and 2 processes about 400 MiB as candidates, 600 MiB more than now, and 600 MiB are free"
        in (server.stderr[-2])
    )
    assert "Set workers lower, run fewer processes or choose a larger size" in server.stderr[-2]


def test_a_restore_stops_the_processes_and_timers_while_the_state_is_replaced() -> None:
    server, config, _ = live_server(**WITH_BOTH, backupDays=7)
    server.files["/var/backups/weather/20260101T000000Z.tar.gz"] = b""
    server.answer("tar", "-xzf", "/var/backups/weather/20260101T000000Z.tar.gz")

    assert main(["restore"], server, config) == 0, server.stderr

    units = ["weather-schedule-nightly.timer", "weather-process-mailer.service", "weather-process-worker.service"]
    events = server.events
    stop = events.index("run: systemctl stop " + " ".join(units))
    assert stop < events.index(
        "run: tar -xzf /var/backups/weather/20260101T000000Z.tar.gz -C /var/lib/weather --no-same-owner"
    )
    assert ["systemctl", "start", *units] in server.commands


def test_a_release_before_processes_json_has_none() -> None:
    assert Spec.loads(None) == Spec()
    spec = Spec.loads(json.dumps({"processes": [{"name": "w", "unit": "u.service", "command": "c"}]}))
    assert spec.processes[0].stop_timeout == 30 and spec.for_droplet(False).processes == spec.processes
