"""What the server receives from the program, typed once: `core/` builds these and serialises them to JSON,
the agent reads them back into the same types.

    Process       one of the app's processes beside Gunicorn (processes, the Procfile's)
    Schedule      one of the app's scheduled jobs (schedules)
    Webhook       one of the stack's notifyWebhooks (a secret)
    OffsiteBucket the off-site bucket and the key that reaches it (a secret)
    DeployInput   the deploy's stdin: the app's environment file, the webhooks, the off-site bucket

Each reads back strictly (`agent/strict.py`): so that the two ends cannot drift apart unseen.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from agent.strict import InputError, read

#: What the off-site bucket is called in what is refused of it.
OFFSITE = "the off-site bucket on the deploy's stdin"


@dataclass(frozen=True)
class Process:
    name: str
    command: str
    """A shell command line, run as `sh -c 'exec COMMAND'` (as a Procfile's are run by a shell)."""
    stop_timeout: int = 30
    """Seconds the process has to finish after its stop signal, before it is killed."""
    stop_signal: str = "SIGTERM"
    droplets: str = "all"
    """With several droplets, where it runs: all, or first (the one that runs releaseCommand)."""
    unit: str = ""
    """Its systemd service, once rendered into a release (`processes.json`)."""

    @property
    def first_only(self) -> bool:
        return self.droplets == "first"


@dataclass(frozen=True)
class Schedule:
    name: str
    command: str
    when: str
    """As the user wrote it: a systemd calendar expression, or a cron expression."""
    calendar: tuple[str, ...]
    """systemd `OnCalendar=` expressions; the job runs at each (cron's day-of-month OR day-of-week takes two)."""
    random_delay: int = 0
    """Seconds each run may start late, at random (`RandomizedDelaySec=`)."""
    unit: str = ""
    """Its service and timer, without `.service` and `.timer`, once rendered into a release."""


@dataclass(frozen=True)
class Webhook:
    """One address the droplet posts its notifications to, and the body it takes."""

    form: str
    """slack, discord or json: the body it takes."""
    url: str = field(repr=False)
    """The address, a secret: whoever holds it may post to the channel."""


@dataclass(frozen=True)
class OffsiteBucket:
    """Where the off-site copies go, and the key that reaches them (offsiteRegion)."""

    endpoint: str
    region: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class DeployInput:
    """The deploy's stdin, one JSON object: secrets all, so it travels on stdin alone."""

    environment: str
    """The app's environment file, as the release's units read it."""
    webhooks: tuple[Webhook, ...] = ()
    """The stack's notifyWebhooks; none, no notifications."""
    offsite: OffsiteBucket | None = None
    """With offsiteRegion, the off-site bucket and its key; None without."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    def notify_file(self) -> str:
        """The notify file (`notify_file`): the webhooks, root's alone on the server."""
        return json.dumps({"webhooks": [dataclasses.asdict(hook) for hook in self.webhooks]}, indent=1) + "\n"

    def offsite_file(self) -> str:
        """The off-site file (`offsite_file`): the bucket and its key, root's alone; "" without one."""
        return json.dumps(dataclasses.asdict(self.offsite), indent=1, sort_keys=True) + "\n" if self.offsite else ""

    @classmethod
    def from_stdin(cls, text: str) -> DeployInput:
        """What a deploy reads on stdin: the JSON document `to_json` writes, or an environment file alone (as
        `deploy.sh RELEASE BUNDLE < /etc/APP/env` gives it), with no webhooks and no bucket."""
        return cls.from_json(text) if text.lstrip().startswith("{") else cls(text)

    @classmethod
    def from_json(cls, text: str) -> DeployInput:
        """The document `to_json` writes; `InputError` for anything else."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise InputError(f"the deploy's stdin is not JSON ({error})") from error
        # Its secret parts read first, each to an error that names it.
        if isinstance(data, dict):
            hooks, bucket = data.get("webhooks"), data.get("offsite")
            try:
                for item in hooks if isinstance(hooks, list) else []:
                    read(Webhook, item, "a webhook")
            except InputError as error:
                shape = "[{form, url}, ...]"
                raise InputError(f"the webhooks on the deploy's stdin do not read as JSON {shape}: {error}") from error
            if bucket is not None:
                read(OffsiteBucket, bucket, OFFSITE)
        return read(cls, data, "the deploy's stdin")
