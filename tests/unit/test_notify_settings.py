"""notifyWebhooks and notifyOnLive: validated without showing the addresses, and delivered only on the secret stdin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.inputs import DeployInput
from core.cloudinit import render_user_data
from core.plan import build_deploy_plan
from core.render import render_agent_settings, render_processes, server_manifest
from core.settings import SettingsError, parse_settings, webhook_form
from tests.pulumi_harness import PROJECT_DIR, TEST_HOST_KEYS, is_secret, reveal, run_program

SLACK = "https://hooks.slack.com/services/T000/B000/sl4ck-t0ken"
DISCORD = "https://discord.com/api/webhooks/123/d1sc0rd-t0ken"
PLAIN = "https://ops.example.org/hooks/pl41n-t0ken"


@pytest.mark.parametrize(
    ("url", "form"),
    [
        (SLACK, "slack"),
        ("https://HOOKS.slack.com/services/x", "slack"),
        (DISCORD, "discord"),
        ("https://discordapp.com/api/webhooks/1/x", "discord"),
        ("https://discord.com/channels/1", "json"),
        (PLAIN, "json"),
        ("https://hooks.slack.com.example.org/services/x", "json"),
    ],
)
def test_the_body_follows_the_host(url: str, form: str) -> None:
    assert webhook_form(url) == form


def test_one_address_or_a_list_with_forms_named_or_found(good_config: dict[str, Any]) -> None:
    one = parse_settings({**good_config, "notifyWebhooks": SLACK}, PROJECT_DIR)
    many = parse_settings(
        {
            **good_config,
            "notifyWebhooks": [DISCORD, "slack+http://10.0.0.2:8080/in", f"json+{SLACK}", DISCORD],
            "notifyOnLive": "true",
        },
        PROJECT_DIR,
    )

    assert [(hook.form, hook.url) for hook in one.notifications.webhooks] == [("slack", SLACK)]
    assert [(hook.form, hook.url) for hook in many.notifications.webhooks] == [
        ("discord", DISCORD),
        ("slack", "http://10.0.0.2:8080/in"),
        ("json", SLACK),
    ]
    assert many.notifications.on_live
    assert "t0ken" not in repr(many)
    assert not parse_settings(good_config, PROJECT_DIR).notifications.webhooks


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (["ftp://example.org/sl4ck-t0ken"], "flask-droplet:notifyWebhooks[0] = ********"),
        ([PLAIN, "teams+https://example.org/t0ken"], "flask-droplet:notifyWebhooks[1] = ********"),
        (["slack+hooks.slack.com/t0ken"], "flask-droplet:notifyWebhooks[0] = slack+********"),
        ({"url": PLAIN}, "flask-droplet:notifyWebhooks = ********"),
        ([PLAIN + str(n) for n in range(6)], "flask-droplet:notifyWebhooks = ******** (6 addresses)"),
    ],
)
def test_a_bad_address_is_named_by_its_place_never_shown(good_config: dict[str, Any], value: Any, shown: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({**good_config, "notifyWebhooks": value}, PROJECT_DIR)

    (problem,) = caught.value.problems
    assert problem.startswith(shown + ": expected up to 5 webhook addresses")
    assert "slack+https://..., discord+https://..., json+https://..." in problem
    assert "t0ken" not in problem


def test_notify_on_live_takes_a_boolean(good_config: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({**good_config, "notifyOnLive": "often"}, PROJECT_DIR)

    assert caught.value.problems == ["flask-droplet:notifyOnLive = 'often': expected true or false"]


def test_the_addresses_travel_on_the_deploys_stdin_only(good_config: dict[str, Any], tmp_path: Path) -> None:
    settings = parse_settings({**good_config, "notifyWebhooks": [SLACK, PLAIN]}, PROJECT_DIR)
    plan = build_deploy_plan(settings, tmp_path)

    given = DeployInput.from_json(plan.stdin)
    assert 'SECRET_KEY="' in given.environment
    assert json.loads(given.notify_file()) == {
        "webhooks": [{"form": "slack", "url": SLACK}, {"form": "json", "url": PLAIN}]
    }
    rendered = [render_agent_settings(settings), render_user_data(settings, TEST_HOST_KEYS[0])]
    rendered += [entry.content or "" for entry in server_manifest(settings)]
    rendered += [path.read_bytes().decode("latin-1") for path in tmp_path.rglob("*") if path.is_file()]
    rendered += [step.command if hasattr(step, "command") else str(step) for step in plan.steps]
    assert not [text for text in rendered if "t0ken" in text]


def test_without_addresses_the_stdin_is_the_environment_alone(good_config: dict[str, Any], tmp_path: Path) -> None:
    plan = build_deploy_plan(parse_settings(good_config, PROJECT_DIR), tmp_path)

    given = DeployInput.from_json(plan.stdin)
    assert given.webhooks == () and given.offsite is None and 'SECRET_KEY="' in given.environment


def test_every_unit_that_may_fail_for_good_tells_the_webhooks(good_config: dict[str, Any]) -> None:
    settings = parse_settings(good_config, PROJECT_DIR)
    units = {entry.path.rsplit("/", 1)[-1]: entry.content or "" for entry in server_manifest(settings)}

    for unit in ("weather.service", "weather-backup.service", "flaskdroplet-certbot-renew.service"):
        assert "\nOnFailure=weather-notify@%n.service\n" in units[unit], unit
    notify_unit = units["weather-notify@.service"]
    assert "ExecStart=/bin/bash /home/deploy/flaskdroplet/deploy.sh notify unit-failed %i\n" in notify_unit
    assert "ConditionPathExists=/etc/weather/notify.json\n" in notify_unit
    assert "\nOnFailure=" not in notify_unit


def test_worker_processes_and_scheduled_jobs_tell_the_webhooks_when_they_fail_for_good(
    good_config: dict[str, Any],
) -> None:
    config = {
        **good_config,
        "processes": {"worker": "huey_consumer weather.tasks.huey"},
        "schedules": {"nightly": {"command": "flask --app weather report", "when": "0 3 * * *"}},
    }
    units = json.loads(render_processes(parse_settings(config, PROJECT_DIR)))["units"]

    for unit in ("weather-process-worker.service", "weather-schedule-nightly.service"):
        assert "\nOnFailure=weather-notify@%n.service\n" in units[unit], unit
    assert "OnFailure=" not in units["weather-schedule-nightly.timer"]


def test_under_mocks_the_addresses_are_secret_and_in_no_other_input_or_output(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "notifyWebhooks": [SLACK, DISCORD]})
    assert run.error is None, run.error
    deploy = run.named("app-deploy")

    assert is_secret(deploy.inputs["stdin"])
    assert SLACK in reveal(deploy.inputs["stdin"])
    assert is_secret(deploy.inputs["triggers"])
    for resource in run.resources:
        inputs = {
            key: value for key, value in resource.inputs.items() if resource.name != "app-deploy" or key != "stdin"
        }
        assert "t0ken" not in repr(inputs), resource.name
    assert "t0ken" not in repr(run.outputs)


def test_changed_addresses_rerun_the_deploy_alone(good_config: dict[str, Any]) -> None:
    def triggers(config: dict[str, Any]) -> dict[str, Any]:
        run = run_program(config)
        assert run.error is None, run.error
        return {
            resource.name: reveal(resource.inputs["triggers"])
            for resource in run.resources
            if "triggers" in resource.inputs
        }

    before = triggers(good_config)
    after = triggers({**good_config, "notifyWebhooks": [PLAIN]})

    assert {name for name in before if before[name] != after[name]} == {"app-deploy"}
