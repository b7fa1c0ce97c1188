"""What the program hands the agent reads back into the agent's own types, field for field, and nothing else does:
the golden settings.json, a release's processes.json, the deploy's stdin."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.config import Config
from agent.inputs import DeployInput, OffsiteBucket, Process, Schedule, Webhook
from agent.layout import ServerLayout
from agent.processes import Spec
from agent.strict import InputError, read
from core.layout import server_layout
from core.plan import build_deploy_plan
from core.render import render_agent_settings, render_processes
from core.settings import parse_settings
from tests.conftest import PROJECT_DIR
from tests.unit.agent_server import ENVIRONMENT, PUBLIC_IPV4, live_server
from tests.unit.test_render import GOLDEN, GOLDEN_CONFIGS, golden_settings

BUCKET = {
    "endpoint": "https://fra1.digitaloceanspaces.com",
    "region": "fra1",
    "bucket": "offsite-bucket",
    "access_key_id": "DO00",
    "secret_access_key": "s3cret",
}


def golden(variant: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / variant / "settings.json").read_text())
    return data


@pytest.mark.parametrize("variant", sorted(GOLDEN_CONFIGS))
def test_each_golden_settings_json_reads_as_the_agents_config_and_writes_back_the_same(variant: str) -> None:
    text = (GOLDEN / variant / "settings.json").read_text()

    config = Config.from_json_object(json.loads(text))

    assert config.to_json() == text
    assert config.layout == golden_settings(variant).layout
    assert render_agent_settings(golden_settings(variant)) == text


@pytest.mark.parametrize("variant", sorted(GOLDEN_CONFIGS))
def test_a_field_unknown_or_missing_in_settings_json_is_refused_by_name(variant: str) -> None:
    with pytest.raises(InputError, match=r"unknown field.* extra_setting"):
        Config.from_json_object({**golden(variant), "extra_setting": 1})
    without = {key: value for key, value in golden(variant).items() if key != "workers"}
    with pytest.raises(InputError, match="missing workers"):
        Config.from_json_object(without)
    data = golden(variant)
    data["layout"] = {**data["layout"], "spare_dir": "/srv/spare"}
    with pytest.raises(InputError, match=r"settings.json: layout .*unknown field.* spare_dir"):
        Config.from_json_object(data)
    data["layout"] = {key: value for key, value in golden(variant)["layout"].items() if key != "env_file"}
    with pytest.raises(InputError, match=r"settings.json: layout .*missing env_file"):
        Config.from_json_object(data)


def test_a_field_of_another_type_in_settings_json_is_refused_by_name() -> None:
    with pytest.raises(InputError, match="workers = '3' is not a whole number"):
        Config.from_json_object({**golden("ip"), "workers": "3"})
    with pytest.raises(InputError, match="https = 1 is not true or false"):
        Config.from_json_object({**golden("ip"), "https": 1})
    with pytest.raises(InputError, match="host_names = 'a' is not a list of that shape"):
        Config.from_json_object({**golden("ip"), "host_names": "a"})
    with pytest.raises(InputError, match="sandbox"):
        Config.from_json_object({**golden("ip"), "sandbox": [["UMask"]]})
    data = golden("ip")
    data["layout"] = {**data["layout"], "candidate_port": "8081"}
    with pytest.raises(InputError, match="candidate_port = '8081' is not a whole number"):
        Config.from_json_object(data)


def test_the_layout_holds_every_path_the_agent_uses_derived_from_the_apps_name() -> None:
    layout = server_layout("weather", uv_version="1.0", certbot_version="2.0", boto3_version="3.0")

    assert layout.uv == "/opt/flaskdroplet/uv-1.0/bin/uv"
    assert layout.certbot == "/opt/flaskdroplet/certbot-2.0/bin/certbot"
    assert layout.offsite_python == "/opt/flaskdroplet/boto3-3.0/bin/python"
    assert layout.lock_file == "/run/lock/weather-deploy.lock"
    assert layout.on_failure == "weather-notify@%n.service"
    assert read(ServerLayout, json.loads(json.dumps(dataclasses.asdict(layout))), "a layout") == layout


def test_a_releases_processes_read_back_as_the_settings_processes(good_config: dict[str, Any]) -> None:
    settings = parse_settings(
        {
            **good_config,
            "processes": {"worker": {"command": "huey_consumer tasks.huey", "droplets": "first"}},
            "schedules": {"nightly": {"command": "flask report", "when": "0 3 * * *"}},
        },
        PROJECT_DIR,
    )

    spec = Spec.loads(render_processes(settings))

    assert spec.processes == tuple(
        dataclasses.replace(process, unit=settings.layout.process_unit(process.name))
        for process in settings.app.processes
    )
    assert spec.schedules == tuple(
        dataclasses.replace(job, unit=settings.layout.schedule_unit(job.name)) for job in settings.app.schedules
    )
    assert spec.processes[0].first_only and spec.for_droplet(False).processes == ()


def test_an_entry_of_processes_json_of_another_shape_is_refused() -> None:
    entry = {"name": "w", "command": "c", "stop_timeout": 30, "stop_signal": "SIGTERM", "droplets": "all", "unit": "u"}
    assert read(Process, entry, "a process") == Process("w", "c", unit="u")
    with pytest.raises(InputError, match=r"unknown field.* colour"):
        read(Process, {**entry, "colour": "red"}, "a process")
    with pytest.raises(InputError, match="stop_timeout = '30' is not a whole number"):
        read(Process, {**entry, "stop_timeout": "30"}, "a process")
    with pytest.raises(InputError, match="missing when"):
        read(Schedule, {"name": "n", "command": "c", "calendar": ["daily"], "random_delay": 0, "unit": "u"}, "a job")


def test_the_deploys_stdin_reads_back_as_what_the_plan_wrote(good_config: dict[str, Any], tmp_path: Path) -> None:
    settings = parse_settings({**good_config, "notifyWebhooks": "https://hooks.slack.com/services/T/B/x"}, PROJECT_DIR)
    plan = build_deploy_plan(settings, tmp_path)

    given = DeployInput.from_json(plan.stdin_with({"DATABASE_URL": "postgresql://db"}, BUCKET))

    assert given.webhooks == (Webhook("slack", "https://hooks.slack.com/services/T/B/x"),)
    assert given.offsite == OffsiteBucket(**BUCKET)
    assert 'DATABASE_URL="postgresql://db"\n' in given.environment
    assert "s3cret" not in repr(given) and "hooks.slack.com" not in repr(given)
    # The same input, the same text: the step's trigger changes only when a secret does.
    assert plan.stdin_with({"DATABASE_URL": "postgresql://db"}, BUCKET) == given.to_json()


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("SECRET_KEY=x\n", "the deploy's stdin is not JSON"),
        ('{"environment": "", "webhooks": []}', "missing offsite"),
        ('{"environment": "", "webhooks": [], "offsite": null, "more": 1}', "unknown field.* more"),
        ('{"environment": 1, "webhooks": [], "offsite": null}', "environment = 1 is not text"),
        ('{"environment": "", "webhooks": [{"url": "u"}], "offsite": null}', "the webhooks .* missing form"),
        ('{"environment": "", "webhooks": [], "offsite": {"bucket": "b"}}', "the off-site bucket .* missing endpoint"),
        ('{"environment": "", "webhooks": [{"form": 1, "url": "u"}], "offsite": null}', "form = 1 is not text"),
    ],
)
def test_a_deploy_input_of_another_shape_is_refused(text: str, refusal: str) -> None:
    with pytest.raises(InputError, match=refusal):
        DeployInput.from_json(text)


def test_an_environment_file_alone_on_stdin_reads_as_the_environment_without_webhooks_or_bucket() -> None:
    environment = '# The app\'s environment.\nSECRET_KEY="s3cret"\n'

    assert DeployInput.from_stdin(environment) == DeployInput(environment)
    assert DeployInput.from_stdin(DeployInput(environment, (Webhook("json", "https://x"),)).to_json()).webhooks


def test_a_deploy_given_the_environment_file_alone_installs_it_and_keeps_no_webhooks() -> None:
    server, config, release = live_server()
    server.files[config.layout.notify_file] = DeployInput("", (Webhook("json", "https://x"),)).notify_file()
    server.files[release.path] = release.data
    server.stdin = ENVIRONMENT.replace("s3cret", "n3w")

    assert main([release.release_id, release.path, PUBLIC_IPV4], server, config) == 0, server.stderr

    assert server.read_text(config.layout.env_file) == ENVIRONMENT.replace("s3cret", "n3w")
    assert not server.exists(config.layout.notify_file)
