"""Processes and scheduled jobs: the Procfile read the Heroku way, cron translated, every refusal and its message."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from core import processes
from core.processes import (
    CalendarError,
    Process,
    ProcfileError,
    WebLine,
    cron_to_calendar,
    parse_procfile,
    parse_web_line,
    to_calendar,
)
from core.render import render_agent_settings, render_processes, systemd_exec_command
from core.settings import SettingsError, parse_settings
from tests.pulumi_harness import PROJECT_DIR


def test_procfile_lines_are_name_colon_command_with_comments_and_blank_lines_skipped() -> None:
    text = (
        "# the app's processes\nweb: gunicorn wsgi:app\n\n"
        "worker:   huey_consumer tasks.huey -w 2  \nrelease: flask db upgrade\n"
    )

    assert parse_procfile(text) == {
        "web": "gunicorn wsgi:app",
        "worker": "huey_consumer tasks.huey -w 2",
        "release": "flask db upgrade",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("worker huey_consumer tasks.huey\n", "line 1 'worker huey_consumer tasks.huey' is not NAME: COMMAND"),
        ("web: gunicorn x:app\nworker:\n", "line 2 'worker:' is not NAME: COMMAND"),
        ("a: one\na: two\n", "line 2 names the process 'a' a second time"),
    ],
)
def test_a_procfile_line_of_another_shape_is_refused_with_its_number(text: str, message: str) -> None:
    with pytest.raises(ProcfileError, match=message):
        parse_procfile(text)


@pytest.mark.parametrize(
    ("cron", "calendar"),
    [
        ("0 3 * * *", ("*-*-* 03:00:00",)),
        ("*/15 * * * *", ("*-*-* *:00,15,30,45:00",)),
        ("30 2 * * 1-5", ("Mon,Tue,Wed,Thu,Fri *-*-* 02:30:00",)),
        ("5 4 * * 7", ("Sun *-*-* 04:05:00",)),
        ("5 4 * * sun,sat", ("Sun,Sat *-*-* 04:05:00",)),
        ("0 0 1 jan,jul *", ("*-01,07-01 00:00:00",)),
        ("0 8-18/5 * * *", ("*-*-* 08,13,18:00:00",)),
        ("0 12 */10 * *", ("*-*-01,11,21,31 12:00:00",)),
        # Cron runs on either day when both are restricted; systemd's event needs both, so two events.
        ("0 0 13 * 5", ("Fri *-*-* 00:00:00", "*-*-13 00:00:00")),
        ("@daily", ("daily",)),
        ("@midnight", ("daily",)),
        ("@hourly", ("hourly",)),
    ],
)
def test_cron_is_translated_to_systemd_calendar_events(cron: str, calendar: tuple[str, ...]) -> None:
    assert cron_to_calendar(cron) == calendar


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine")
@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 * * * *", "30 2 * * 1-5", "0 0 13 * 5", "0 0 1 jan,jul *"])
def test_each_translation_is_read_by_systemd_as_cron_would_run_it(cron: str) -> None:
    events = cron_to_calendar(cron)
    shown = subprocess.run(
        ["systemd-analyze", "calendar", *events], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    assert shown.count("Next elapse:") == len(events)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("61 * * * *", "the minute field's 61 is not from 0 to 59"),
        ("0 24 * * *", "the hour field's 24 is not from 0 to 23"),
        ("0 0 0 * *", "the day of month field's 0 is not from 1 to 31"),
        ("0 0 * 13 *", "the month field's 13 is not from 1 to 12"),
        ("0 0 * * 8", "the day of week field's 8 is not from 0 to 7"),
        ("0 0 * * fun", "the day of week field's 'fun' is not a number"),
        ("*/0 * * * *", "step '0' is not a whole number above 0"),
        ("0 10-2 * * *", "range '10-2' runs backwards"),
        ("@reboot", "'@reboot' is not one of cron's"),
        ("dialy", "'dialy' is not one of systemd's"),
        ("at three o'clock", "without quotes"),
        ("$(reboot)", "without quotes"),
    ],
)
def test_a_bad_time_is_refused_saying_what_is_wrong(when: str, message: str) -> None:
    with pytest.raises(CalendarError, match=message.replace("(", r"\(").replace("*", r"\*").replace("$", r"\$")):
        to_calendar(when)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine")
def test_systemd_s_own_parser_has_the_last_word() -> None:
    with pytest.raises(CalendarError, match="systemd-analyze calendar refuses"):
        to_calendar("*-*-* 25:00")
    assert to_calendar("Mon..Fri *-*-* 09:00:00") == ("Mon..Fri *-*-* 09:00:00",)


def test_without_systemd_analyze_the_shape_is_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes.shutil, "which", lambda name: None)
    assert to_calendar("*-*-* 25:00") == ("*-*-* 25:00",)  # left to the server's own check, before any change
    with pytest.raises(CalendarError, match="expected a systemd calendar event"):
        to_calendar("a b c d e f")


def test_exec_start_hands_the_line_to_the_shell_unchanged() -> None:
    assert systemd_exec_command('echo "100%" $HOME \\n') == '/bin/sh -c "exec echo \\"100%%\\" $$HOME \\\\n"'


# Settings


def app_with(tmp_path: Path, procfile: str | None) -> Path:
    app = tmp_path / "app"
    shutil.copytree(PROJECT_DIR / "app", app, ignore=shutil.ignore_patterns("__pycache__", "instance", "tests"))
    if procfile is not None:
        (app / "Procfile").write_text(procfile)
    return app


def settings_with(good_config: dict[str, Any], app: Path | None = None, **extra: Any) -> Any:
    config = {**good_config, **extra}
    if app is not None:
        config["appDir"] = str(app)
    return parse_settings(config, PROJECT_DIR)


def refusals(good_config: dict[str, Any], app: Path | None = None, **extra: Any) -> list[str]:
    with pytest.raises(SettingsError) as refused:
        settings_with(good_config, app, **extra)
    return refused.value.problems


def test_processes_come_from_the_procfile_and_the_config(tmp_path: Path, good_config: dict[str, Any]) -> None:
    app = app_with(tmp_path, "web: gunicorn wsgi:app\nworker: huey_consumer tasks.huey\nrelease: flask db upgrade\n")
    processes = {"worker": {"stopTimeoutSeconds": 90, "stopSignal": "INT"}, "mailer": "python -m mailer"}

    settings = settings_with(good_config, app, processes=processes)

    assert settings.app.processes == (
        Process("mailer", "python -m mailer"),
        Process("worker", "huey_consumer tasks.huey", stop_timeout=90, stop_signal="SIGINT"),
    )
    assert settings.app.release_command == ("flask", "db", "upgrade")


def test_schedules_keep_what_was_written_and_its_calendar(good_config: dict[str, Any]) -> None:
    schedules = {"nightly": {"command": "flask report", "when": "0  3 * * *", "randomDelaySeconds": 600}}

    (schedule,) = settings_with(good_config, schedules=schedules).app.schedules

    assert (schedule.name, schedule.when, schedule.calendar, schedule.random_delay) == (
        "nightly",
        "0 3 * * *",
        ("*-*-* 03:00:00",),
        600,
    )


# The web line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("gunicorn wsgi:app", WebLine((), "gunicorn", "wsgi:app")),
        (
            "flask db upgrade; flask translate compile; gunicorn shop:app",
            WebLine((("flask", "db", "upgrade"), ("flask", "translate", "compile")), "gunicorn", "shop:app"),
        ),
        (
            'FLASK_APP=shop flask db upgrade && exec gunicorn -w 4 -b 0.0.0.0:$PORT --log-file - "shop:create_app()"',
            WebLine((("env", "FLASK_APP=shop", "flask", "db", "upgrade"),), "gunicorn", "shop:create_app()"),
        ),
        ("python -m gunicorn --preload --bind=:8000 -w4 shop.wsgi", WebLine((), "gunicorn", "shop.wsgi:application")),
        ("bin/gunicorn --reload --config gunicorn.conf.py shop:app", WebLine((), "gunicorn", "shop:app")),
        (
            "flask db upgrade; waitress-serve --port=$PORT shop:app",
            WebLine((("flask", "db", "upgrade"),), "waitress-serve", None),
        ),
        ("flask run --host 0.0.0.0", WebLine((), "flask", None)),
        ("python3 -m waitress shop:app", WebLine((), "waitress", None)),
    ],
)
def test_a_web_line_is_commands_then_the_server_it_starts(line: str, expected: WebLine) -> None:
    assert parse_web_line(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("gunicorn shop:app | tee log", "uses '|'; a web line is commands joined by ';' or '&&', the server last"),
        ("flask db upgrade > log; gunicorn shop:app", "uses '>'"),
        ("flask db upgrade & gunicorn shop:app", "uses '&'"),
        ("gunicorn 'shop:app", "does not split as a shell line"),
        (";", "runs no command"),
    ],
)
def test_a_web_line_that_is_more_than_commands_in_a_row_is_refused(line: str, message: str) -> None:
    with pytest.raises(ProcfileError, match=message.replace("|", "\\|")):
        parse_web_line(line)


def test_the_web_line_gives_the_wsgi_target_and_runs_its_commands_before_each_release(
    tmp_path: Path, good_config: dict[str, Any]
) -> None:
    app = app_with(
        tmp_path, "web: flask --app weather db upgrade; flask --app weather seed && gunicorn 'weather:create_app()'\n"
    )

    settings = settings_with(good_config, app)

    assert settings.app.wsgi_target == "weather:create_app()"
    assert settings.app.release_command == ()
    assert settings.app.web_commands == (
        ("flask", "--app", "weather", "db", "upgrade"),
        ("flask", "--app", "weather", "seed"),
    )
    shipped = Config.from_json_object(json.loads(render_agent_settings(settings)))
    assert shipped.web_commands == settings.app.web_commands
    assert shipped.wsgi_target == "weather:create_app()"


def test_with_release_command_each_command_runs_once_release_command_first(
    tmp_path: Path, good_config: dict[str, Any]
) -> None:
    app = app_with(tmp_path, "web: flask --app weather db upgrade; flask --app weather seed; gunicorn wsgi:app\n")

    same = settings_with(good_config, app, releaseCommand="flask --app weather db upgrade")
    other = settings_with(good_config, app, releaseCommand="flask --app weather check", wsgiTarget="wsgi:app")

    assert same.app.release_command == ("flask", "--app", "weather", "db", "upgrade")
    assert same.app.web_commands == (("flask", "--app", "weather", "seed"),)
    assert other.app.release_command == ("flask", "--app", "weather", "check")
    assert other.app.web_commands == (
        ("flask", "--app", "weather", "db", "upgrade"),
        ("flask", "--app", "weather", "seed"),
    )


def test_wsgi_target_in_the_config_wins_over_the_procfiles(tmp_path: Path, good_config: dict[str, Any]) -> None:
    app = app_with(tmp_path, "web: gunicorn 'weather:create_app()'\n")

    assert settings_with(good_config, app, wsgiTarget="wsgi:app").app.wsgi_target == "wsgi:app"


def test_another_server_is_refused_by_name_and_the_message_says_how_to_keep_the_app(
    tmp_path: Path, good_config: dict[str, Any]
) -> None:
    app = app_with(tmp_path, "web: flask --app weather db upgrade; waitress-serve --port=$PORT wsgi:app\n")

    (problem,) = refusals(good_config, app)

    assert problem.startswith(
        "flask-droplet:appDir = 'Procfile web: flask --app weather db upgrade; waitress-serve --port=$PORT wsgi:app': "
        "expected a Procfile whose web process is gunicorn, after any commands it runs first"
    )
    assert "so waitress-serve would not be the one that serves" in problem
    assert "To keep the app as it is, set wsgiTarget to the WSGI callable waitress-serve serves" in problem
    # With wsgiTarget, Gunicorn serves that callable and the commands before waitress still run.
    settings = settings_with(good_config, app, wsgiTarget="wsgi:app")
    assert settings.app.web_commands == (("flask", "--app", "weather", "db", "upgrade"),)


# (Procfile, config change, text the message must contain, in full)
REFUSALS: list[tuple[str | None, dict[str, Any], str]] = [
    (
        "web: flask run\n",
        {},
        "flask-droplet:appDir = 'Procfile web: flask run': expected a Procfile whose web process is gunicorn",
    ),
    ("worker huey\n", {}, "expected a Procfile of lines NAME: COMMAND; line 1 'worker huey' is not NAME: COMMAND"),
    ("Worker: huey\n", {}, "flask-droplet:appDir = 'Procfile Worker: huey': expected Procfile process names of 1-30"),
    ("worker: huey\n", {"processes": {"worker": "other"}}, "expected no command for 'worker': the Procfile gives it"),
    (None, {"processes": ["huey"]}, "flask-droplet:processes = ['huey']: expected a map of process names"),
    (None, {"processes": {"web": "gunicorn"}}, "none of web, release"),
    (None, {"processes": {"Bad Name": "x"}}, "flask-droplet:processes = {'Bad Name': 'x'}: expected a map"),
    (None, {"processes": {"w": {"command": "x", "restart": "no"}}}, "expected a map of process names"),
    (None, {"processes": {"w": ""}}, "expected a one-line command for 'w'"),
    (None, {"processes": {"w": "a\nb"}}, "expected a one-line command for 'w'"),
    (None, {"processes": {"w": {"command": "x", "stopSignal": "KILL"}}}, "expected stopSignal one of SIGTERM"),
    (None, {"processes": {"w": {"command": "x", "droplets": "two"}}}, "expected droplets all (every droplet) or first"),
    (
        None,
        {"processes": {"w": {"command": "x", "stopTimeoutSeconds": 0}}},
        "flask-droplet:processes.w.stopTimeoutSeconds = 0: expected a whole number from 1 to 3600",
    ),
    (None, {"schedules": "nightly"}, "flask-droplet:schedules = 'nightly': expected a map of job names"),
    (None, {"schedules": {"n": "0 3 * * *"}}, "expected a map of job names to {command, when, randomDelaySeconds}"),
    (None, {"schedules": {"n": {"when": "daily"}}}, "expected a one-line command for 'n'"),
    (None, {"schedules": {"n": {"command": "x"}}}, "expected when for 'n'"),
    (
        None,
        {"schedules": {"n": {"command": "x", "when": "61 * * * *"}}},
        "flask-droplet:schedules.n.when = '61 * * * *': expected a systemd calendar event ('*-*-* 03:00:00', "
        "'Mon..Fri 09:00', daily) or a cron expression ('0 3 * * *'): the minute field's 61 is not from 0 to 59",
    ),
    (
        None,
        {"schedules": {"n": {"command": "x", "when": "daily", "randomDelaySeconds": -1}}},
        "flask-droplet:schedules.n.randomDelaySeconds = -1: expected a whole number from 0 to 86400",
    ),
]


@pytest.mark.parametrize(("procfile", "change", "message"), REFUSALS)
def test_each_refusal_names_the_setting_the_value_and_what_is_accepted(
    tmp_path: Path, good_config: dict[str, Any], procfile: str | None, change: dict[str, Any], message: str
) -> None:
    app = app_with(tmp_path, procfile) if procfile is not None else None

    problems = refusals(good_config, app, **change)

    assert any(message in problem for problem in problems), problems


def test_the_release_s_units_run_from_the_live_release_in_the_web_service_s_sandbox(
    good_config: dict[str, Any],
) -> None:
    settings = settings_with(
        good_config,
        processes={"worker": {"command": "huey_consumer tasks.huey", "stopSignal": "SIGINT", "droplets": "first"}},
        schedules={"nightly": {"command": "flask report", "when": "0 0 13 * 5"}},
    )

    rendered = json.loads(render_processes(settings))

    assert rendered["processes"] == [
        {
            "name": "worker",
            "unit": "weather-process-worker.service",
            "command": "huey_consumer tasks.huey",
            "stop_timeout": 30,
            "stop_signal": "SIGINT",
            "droplets": "first",
        }
    ]
    assert rendered["schedules"][0]["calendar"] == ["Fri *-*-* 00:00:00", "*-*-13 00:00:00"]
    web = (PROJECT_DIR / "cloud-init/gunicorn.service.j2").read_text()
    service = rendered["units"]["weather-process-worker.service"]
    job = rendered["units"]["weather-schedule-nightly.service"]
    timer = rendered["units"]["weather-schedule-nightly.timer"]
    for unit in (service, job):
        assert "User=weather\n" in unit and "WorkingDirectory=/srv/weather/current/app\n" in unit
        assert "EnvironmentFile=/srv/weather/current/release.env\n" in unit
        assert "ProtectSystem=strict\n" in unit and "SystemCallFilter=~@privileged @resources\n" in unit
    assert "{% for key, value in sandbox %}" in web
    assert "Restart=on-failure\n" in service and "KillSignal=SIGINT\n" in service
    assert "Type=oneshot\n" in job
    assert "OnCalendar=Fri *-*-* 00:00:00\nOnCalendar=*-*-13 00:00:00\n" in timer
    assert "Persistent=true\n" in timer and "RandomizedDelaySec" not in timer


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine")
def test_systemd_reads_the_units_without_a_complaint(tmp_path: Path, good_config: dict[str, Any]) -> None:
    settings = settings_with(
        good_config,
        processes={"worker": 'huey_consumer tasks.huey --name "100%" $HOME'},
        schedules={"nightly": {"command": "flask report", "when": "0 3 * * *", "randomDelaySeconds": 60}},
    )
    for name, text in json.loads(render_processes(settings))["units"].items():
        (tmp_path / name).write_text(text)
    worker = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "weather-process-worker.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # verify names what it cannot find on this machine (the app's user, /srv/weather); never a syntax error.
    assert "Failed to parse" not in worker.stderr and "Unknown key" not in worker.stderr, worker.stderr
