"""Notifications under the fake boundary: each event, the body each form takes, and a webhook that is down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent import notify
from agent.cli import main
from agent.config import Config
from agent.context import Agent
from agent.fake import FakeSystem
from agent.inputs import DeployInput, Webhook
from core.settings import SecretStr
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

SLACK = "https://hooks.slack.com/services/T000/B000/sl4ck-t0ken"
DISCORD = "https://discord.com/api/webhooks/123/d1sc0rd-t0ken"
PLAIN = "https://ops.example.org/hooks/pl41n-t0ken"
GIVEN = DeployInput(
    ENVIRONMENT,
    (Webhook("slack", SecretStr(SLACK)), Webhook("discord", SecretStr(DISCORD)), Webhook("json", SecretStr(PLAIN))),
)
WEBHOOKS = GIVEN.notify_file()
NOTIFY_FILE = "/etc/weather/notify.json"


def told(server: FakeSystem) -> dict[str, dict[str, Any]]:
    """What each webhook was sent, by its form, from the one event the server told."""
    forms = {SLACK: "slack", DISCORD: "discord", PLAIN: "json"}
    sent = {forms[url]: json.loads(body) for url, body in server.posts}
    assert len(sent) == len(server.posts), "one message for each webhook"
    return sent


def notifying(variant: str = "ip", **overrides: Any) -> tuple[FakeSystem, Config]:
    """A live server whose deploys carry the three webhooks; what it took forgotten."""
    server, config, _ = live_server(variant, **overrides)
    server.files[NOTIFY_FILE] = WEBHOOKS
    return server, config


def deploy_with_webhooks(server: FakeSystem, config: Config, variant: str = "ip", **overrides: Any) -> int:
    release = bundle_of(variant, **overrides)
    server.files[release.path] = release.data
    server.stdin = GIVEN.to_json()
    return main([release.release_id, release.path, PUBLIC_IPV4], server, config)


def assert_no_address_in_output(server: FakeSystem) -> None:
    for url in (SLACK, DISCORD, PLAIN):
        for line in server.stderr + server.stdout + [" ".join(argv) for argv in server.commands]:
            assert url not in line
            assert "t0ken" not in line


def test_the_first_deploy_installs_the_webhooks_root_only_and_keeps_them_out_of_the_environment() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    with_certificate(server, config)

    assert deploy_with_webhooks(server, config) == 0, server.stderr

    assert server.read_text(NOTIFY_FILE) == WEBHOOKS
    assert server.modes[NOTIFY_FILE] == ("root:root", 0o600)
    assert server.read_text(config.layout.env_file) == ENVIRONMENT
    assert server.posts == []  # notifyOnLive is off
    assert_no_address_in_output(server)


def test_a_deploy_with_the_same_webhooks_does_not_write_them_again() -> None:
    server, config = notifying()

    assert deploy_with_webhooks(server, config) == 0

    assert NOTIFY_FILE not in server.written


def test_a_deploy_without_webhooks_removes_them_and_empty_stdin_keeps_them() -> None:
    server, config = notifying()
    release = bundle_of("ip")
    server.files[release.path] = release.data
    server.stdin = ""

    assert main([release.release_id, release.path], server, config) == 0
    assert server.read_text(NOTIFY_FILE) == WEBHOOKS

    assert deploy(server, config, release) == 0
    assert server.read_text(NOTIFY_FILE) is None


def test_webhooks_that_do_not_read_refuse_the_deploy_before_anything_changes() -> None:
    server, config, release = live_server()
    server.files[release.path] = release.data
    server.stdin = json.dumps({"environment": ENVIRONMENT, "webhooks": ["not json"], "offsite": None})

    assert main([release.release_id, release.path], server, config) == 1

    assert server.written == []
    assert "the webhooks on the deploy's stdin do not read as JSON" in server.stderr[0]


def test_a_refused_deploy_tells_each_webhook_which_check_failed() -> None:
    server, config = notifying()
    live = server.readlink(config.layout.current)
    server.answer("curl", "--silent", "--fail", "--max-time", "5", "-H", "Host: 127.0.0.1", returncode=22)
    broken = bundle_of("ip", workers=4, healthPath="/ready")

    assert deploy_with_webhooks(server, config, workers=4, healthPath="/ready") == 1

    sent = told(server)
    summary = f"release {broken.release_id} was refused; release {str(live).rsplit('/', 1)[-1]} serves"
    check = "GET /healthz did not answer 2xx within 30 s"
    assert sent["slack"]["text"].startswith(f"*weather* on {PUBLIC_IPV4}: {summary}\n")
    assert check in sent["slack"]["text"]
    assert sent["discord"]["content"].startswith(f"**weather** on {PUBLIC_IPV4}: {summary}\n")
    assert sent["discord"]["allowed_mentions"] == {"parse": []}
    assert sent["discord"]["username"] == "flask-droplet"
    plain = sent["json"]
    assert plain["event"] == "deploy-refused"
    assert plain["release"] == broken.release_id
    assert check in plain["detail"]
    assert {key: plain[key] for key in ("source", "app", "site", "summary", "unit")} == {
        "source": "flask-droplet",
        "app": "weather",
        "site": PUBLIC_IPV4,
        "summary": summary,
        "unit": "",
    }
    assert_no_address_in_output(server)


def test_a_check_before_the_release_is_told_too() -> None:
    server, config = notifying()
    release = bundle_of("ip")
    server.files[release.path] = b"not the bundle"
    server.stdin = GIVEN.to_json()

    assert main([release.release_id, release.path], server, config) == 1

    assert told(server)["json"]["detail"] == f"bundle {release.path} does not match release {release.release_id}"


def test_a_release_switched_back_once_live_is_told_as_rolled_back() -> None:
    server, config = notifying()
    server.answer("curl", "--silent", "--fail", "--max-time", "5", "--insecure", returncode=22)

    assert deploy_with_webhooks(server, config, workers=4) == 1

    plain = told(server)["json"]
    assert plain["event"] == "deploy-rolled-back"
    assert "was rolled back" in plain["summary"]
    assert "through nginx did not answer 2xx within 30 s once live" in plain["detail"]


def test_a_release_that_goes_live_is_told_with_notify_on_live() -> None:
    server, config = notifying(notifyOnLive=True)
    assert config.notify_on_live

    assert deploy_with_webhooks(server, config, notifyOnLive=True, workers=4) == 0

    plain = told(server)["json"]
    assert plain["event"] == "deploy-live"
    assert plain["detail"] == f"https://{PUBLIC_IPV4}/"
    assert plain["summary"] == f"release {server.stdout[0]} is live"


def test_with_every_webhook_down_the_deploy_succeeds_and_says_which_were_not_told() -> None:
    server, config = notifying(notifyOnLive=True)
    server.post_answer = "is unreachable (Connection refused)"

    assert deploy_with_webhooks(server, config, notifyOnLive=True, workers=4) == 0

    assert len(server.posts) == 3
    untold = [line for line in server.stderr if "notify: webhook" in line]
    assert untold[0].endswith(
        "notify: webhook 1 of 3 (slack) is unreachable (Connection refused); not told deploy-live"
    )
    assert len(untold) == 3
    assert_no_address_in_output(server)


def test_a_failure_while_telling_never_changes_the_outcome() -> None:
    server, config = notifying()

    def broken(url: str, body: bytes, timeout: float) -> str:
        raise RuntimeError("no")

    server.post = broken  # type: ignore[method-assign]

    assert notify.tell(Agent(server, config), notify.Event(notify.TEST, "x")) == 1
    assert "notify: telling the webhooks failed (RuntimeError); nobody was told test" in server.stderr[-1]


def test_a_webhooks_file_that_does_not_read_tells_nobody() -> None:
    server, config = notifying()
    server.files[NOTIFY_FILE] = "{"

    assert main(["notify", "test"], server, config) == 0

    assert server.posts == []
    assert "does not read as the deploy writes it" in server.stderr[0]


@pytest.mark.parametrize(
    ("unit", "event", "summary"),
    [
        ("flaskdroplet-certbot-renew.service", "certificate-not-renewed", "the certificate could not be renewed"),
        ("weather-backup.service", "backup-failed", "the backup of /var/lib/weather failed"),
        ("weather.service", "unit-failed", "weather.service failed"),
    ],
)
def test_a_unit_that_failed_is_told_by_what_it_does(unit: str, event: str, summary: str) -> None:
    server, config = notifying()
    server.answer("systemctl", "show", "--property=Result", "--value", unit, stdout="exit-code\n")

    assert main(["notify", "unit-failed", unit], server, config) == 0

    sent = told(server)
    assert sent["json"]["event"] == event
    assert sent["json"]["summary"] == summary
    assert sent["json"]["unit"] == unit
    assert sent["json"]["detail"] == f"result: exit-code; journalctl -u {unit} -n 50 (or deploy.sh logs)"
    assert sent["slack"]["text"] == f"*weather* on {PUBLIC_IPV4}: {summary}\n{sent['json']['detail']}"


def test_without_webhooks_nothing_is_sent_and_the_verb_succeeds() -> None:
    server, config, _ = live_server()

    assert main(["notify", "unit-failed", "weather.service"], server, config) == 0
    assert main(["notify", "test"], server, config) == 0

    assert server.posts == []
    assert server.stdout == ["no webhooks: set notifyWebhooks and deploy"]


def test_the_test_verb_counts_the_webhooks_told() -> None:
    server, config = notifying()

    assert main(["notify", "test"], server, config) == 0

    assert told(server)["json"]["event"] == "test"
    assert server.stdout == ["told 3 of 3 webhook(s)"]


@pytest.mark.parametrize("words", [[], ["unit-failed"], ["unit-failed", "a b"], ["other"]])
def test_notify_usage_errors_name_the_usage(words: list[str]) -> None:
    server, config = notifying()

    assert main(["notify", *words], server, config) == 1

    assert server.posts == []
    assert notify.USAGE in server.stderr[0]


def test_an_address_certificate_that_fails_is_told() -> None:
    config = config_of("ip")
    server = first_booted("ip")
    server.files[config.layout.certbot] = ""
    server.answer(config.layout.certbot, returncode=1)
    server.files[NOTIFY_FILE] = WEBHOOKS

    assert deploy_with_webhooks(server, config) == 0

    plain = told(server)["json"]
    assert plain["event"] == "certificate-not-renewed"
    assert plain["detail"].endswith("(the deploy's log); the site stays on plain HTTP and the next deploy tries again")


def test_a_long_failure_is_cut_to_what_discord_takes() -> None:
    server, config = notifying()
    forget(server)

    content = json.loads(notify.body(Agent(server, config), "discord", notify.Event("x", "y", "z" * 5000)))["content"]

    assert len(content) == notify.DISCORD_LIMIT
    assert content.endswith("…")


def test_the_site_is_its_domain_when_it_has_one() -> None:
    server, config = notifying("domain")

    assert notify.where(Agent(server, config)) == config.domain
    assert notify.where(Agent(FakeSystem(), config_of("ip"))) == "(no address yet)"
