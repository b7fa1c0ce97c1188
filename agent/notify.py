"""Notifications: what went wrong on the server, told to the stack's webhooks (notifyWebhooks).

    deploy.sh notify unit-failed UNIT     (the notify unit, from a unit's OnFailure=)
    deploy.sh notify test                 (a message that says the webhooks are reached)

The deploy tells them when it refuses a release or rolls one back (with the check that
failed) and, with notifyOnLive, when a release goes live. The webhooks' addresses are
secrets: they arrive on the deploy's stdin (`inputs.DeployInput`), and
live in a file only root reads (`ServerLayout.notify_file`); no message, log line or command
line holds them. Each webhook is tried once, for `TIMEOUT_SECONDS`; one that cannot be
reached is logged, and never fails what it reports on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from agent.context import Agent
from agent.inputs import DeployInput, Webhook
from agent.strict import read

TIMEOUT_SECONDS = 5
#: Discord refuses a message of more characters than this.
DISCORD_LIMIT = 2000
UNIT_NAME = re.compile(r"[A-Za-z0-9@._:\\-]{1,200}")
USAGE = "usage: deploy.sh notify unit-failed UNIT | deploy.sh notify test"

#: What each event is called, in the plain JSON body's "event" and in the text of the others.
DEPLOY_REFUSED = "deploy-refused"
DEPLOY_ROLLED_BACK = "deploy-rolled-back"
DEPLOY_LIVE = "deploy-live"
CERTIFICATE_NOT_RENEWED = "certificate-not-renewed"
BACKUP_FAILED = "backup-failed"
OFFSITE_FAILED = "offsite-upload-failed"
UNIT_FAILED = "unit-failed"
TEST = "test"


@dataclass(frozen=True)
class Event:
    kind: str
    summary: str
    """One line: what happened."""
    detail: str = ""
    """Why (the check that failed), and where to look."""
    release: str = ""
    unit: str = ""


def webhooks(agent: Agent) -> list[Webhook]:
    """The webhooks the last deploy gave; none without the file (or with one that does not read)."""
    path = agent.config.layout.notify_file
    text = agent.system.read_text(path) if path else None
    if text is None:
        return []
    try:
        return [read(Webhook, item, "a webhook") for item in json.loads(text)["webhooks"]]
    except (ValueError, KeyError, TypeError):
        agent.log(f"notify: {path} does not read as the deploy writes it; nobody is told")
        return []


def install(agent: Agent, given: DeployInput) -> None:
    """The webhooks from the deploy's stdin, or none: the file root's alone."""
    path = agent.config.layout.notify_file
    if not path:
        return
    if not given.webhooks:
        agent.system.remove(path)
        return
    text = given.notify_file()
    if agent.system.read_text(path) != text:
        agent.system.write_file(path, text, "root:root", 0o600)


def where(agent: Agent) -> str:
    """The site, as its visitors reach it."""
    config = agent.config
    address = (agent.system.read_text(config.layout.public_ipv4_file) or "").strip()
    return config.domain or address or "(no address yet)"


def text(agent: Agent, event: Event, bold: str = "*") -> str:
    lines = [f"{bold}{agent.config.app_name}{bold} on {where(agent)}: {event.summary}"]
    if event.detail:
        lines.append(event.detail)
    return "\n".join(lines)


def body(agent: Agent, form: str, event: Event) -> bytes:
    """The message as the webhook's form takes it: Slack's `text`, Discord's `content`, or the event's fields."""
    if form == "slack":
        message: dict[str, object] = {"text": text(agent, event)}
    elif form == "discord":
        content = text(agent, event, "**")
        if len(content) > DISCORD_LIMIT:
            content = content[: DISCORD_LIMIT - 1] + "…"
        # No @everyone or role pings from a failure's text.
        message = {"content": content, "username": "flask-droplet", "allowed_mentions": {"parse": []}}
    else:
        message = {
            "source": "flask-droplet",
            "app": agent.config.app_name,
            "site": where(agent),
            "event": event.kind,
            "summary": event.summary,
            "detail": event.detail,
            "release": event.release,
            "unit": event.unit,
        }
    return json.dumps(message).encode()


def tell(agent: Agent, event: Event) -> int:
    """Each webhook told once; one that does not take it is logged. Never raises: it reports, it does not
    decide. The number of webhooks that were not told."""
    untold = 0
    try:
        hooks = webhooks(agent)
        for place, hook in enumerate(hooks, 1):
            failure = agent.system.post(hook.url, body(agent, hook.form, event), TIMEOUT_SECONDS)
            if failure:
                untold += 1
                agent.log(f"notify: webhook {place} of {len(hooks)} ({hook.form}) {failure}; not told {event.kind}")
    # Whatever goes wrong here must not change the outcome it reports.
    except Exception as error:
        agent.log(f"notify: telling the webhooks failed ({type(error).__name__}); nobody was told {event.kind}")
        return max(untold, 1)
    return untold


def deploy_failed(agent: Agent, release_id: str, message: str, rolled_back: bool) -> None:
    live = agent.live_release().rsplit("/", 1)[-1]
    serving = f"release {live} serves" if live else "no release serves yet"
    if rolled_back:
        event = Event(DEPLOY_ROLLED_BACK, f"release {release_id} was rolled back; {serving}", message, release_id)
    else:
        event = Event(DEPLOY_REFUSED, f"release {release_id} was refused; {serving}", message, release_id)
    tell(agent, event)


def deploy_live(agent: Agent, release_id: str, url: str) -> None:
    if agent.config.notify_on_live:
        tell(agent, Event(DEPLOY_LIVE, f"release {release_id} is live", url, release_id))


def certificate_not_issued(agent: Agent, message: str) -> None:
    tell(agent, Event(CERTIFICATE_NOT_RENEWED, "no new certificate", message))


def unit_failed(agent: Agent, unit: str) -> Event:
    """The event for a unit that failed: the renewal's and the backup's by name, any other as itself."""
    config = agent.config
    result = agent.system.run(["systemctl", "show", "--property=Result", "--value", unit]).stdout.strip()
    logs = f"journalctl -u {unit} -n 50 (or deploy.sh logs)"
    why = f"result: {result}; {logs}" if result else logs
    if unit == f"{config.layout.renew_unit}.service":
        return Event(CERTIFICATE_NOT_RENEWED, "the certificate could not be renewed", why, unit=unit)
    if unit == f"{config.layout.backup_unit}.service":
        return Event(BACKUP_FAILED, f"the backup of {config.layout.state_dir} failed", why, unit=unit)
    if config.layout.offsite_unit and unit == f"{config.layout.offsite_unit}.service":
        summary = f"the off-site copy of a backup failed; the backup stays in {config.layout.backups}"
        return Event(OFFSITE_FAILED, summary, why, unit=unit)
    return Event(UNIT_FAILED, f"{unit} failed", why, unit=unit)


def main(agent: Agent, words: list[str]) -> int:
    """The notify verb; always 0 when its words are right: it reports, it does not fail."""
    if words[:1] == ["unit-failed"] and len(words) == 2 and UNIT_NAME.fullmatch(words[1]):
        tell(agent, unit_failed(agent, words[1]))
        return 0
    if words == ["test"]:
        hooks = webhooks(agent)
        if not hooks:
            agent.system.say("no webhooks: set notifyWebhooks and deploy")
            return 0
        untold = tell(agent, Event(TEST, "a test message: this webhook is reached"))
        agent.system.say(f"told {len(hooks) - untold} of {len(hooks)} webhook(s)")
        return 0
    agent.fail(USAGE)
