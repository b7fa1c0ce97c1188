"""What the server receives from the program, typed once: `core/` builds these and serialises them to JSON,
the agent reads them back into the same types.

    Process       one of the app's processes beside Gunicorn (processes, the Procfile's)
    Schedule      one of the app's scheduled jobs (schedules)
    Webhook       one of the stack's notifyWebhooks (a secret)
    OffsiteBucket the off-site bucket and the key that reaches it (a secret)
    DeployInput   the deploy's stdin: the app's environment file, the webhooks, the off-site bucket

`from_json_object` reads a dataclass strictly: a field the type lacks, or one it has that the data lacks, is
refused with both named, so that the two ends cannot drift apart unseen.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: JSON as `json.loads` returns it.
JsonValue = object


class InputError(ValueError):
    """Data that does not read as the type it is meant to be."""


def frozen(value: JsonValue) -> JsonValue:
    """JSON's lists as tuples, at any depth: what the frozen dataclasses hold."""
    if isinstance(value, list):
        return tuple(frozen(item) for item in value)
    return value


def checked_fields(cls: type[DataclassInstance], data: JsonValue, what: str) -> dict[str, JsonValue]:
    """`data`'s items, when they are exactly `cls`'s fields; otherwise `InputError` naming the difference."""
    if not isinstance(data, dict):
        raise InputError(f"{what} is not a JSON object")
    names = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [name for name in names if name not in data]
    if unknown or missing:
        parts = ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise InputError(f"{what} does not read as JSON with {', '.join(names)}: {'; '.join(parts)}")
    return {str(name): frozen(value) for name, value in data.items()}


def text(values: dict[str, JsonValue], name: str, what: str) -> str:
    value = values[name]
    if not isinstance(value, str):
        raise InputError(f"{what}: {name} = {value!r} is not text")
    return value


def whole(values: dict[str, JsonValue], name: str, what: str) -> int:
    value = values[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{what}: {name} = {value!r} is not a whole number")
    return value


def texts(values: dict[str, JsonValue], name: str, what: str) -> tuple[str, ...]:
    value = values[name]
    if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{what}: {name} = {value!r} is not a list of text")
    return cast("tuple[str, ...]", value)


def _strings(cls: type[DataclassInstance], data: JsonValue, what: str) -> dict[str, str]:
    values = checked_fields(cls, data, what)
    wrong = sorted(name for name, value in values.items() if not isinstance(value, str))
    if wrong:
        raise InputError(f"{what}: {', '.join(wrong)} must be text")
    return cast("dict[str, str]", values)


_PROCESS_TEXTS = ("name", "command", "stop_signal", "droplets", "unit")


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

    @classmethod
    def from_json_object(cls, data: JsonValue) -> Process:
        what = "a process"
        values = checked_fields(cls, data, what)
        name, command, signal, droplets, unit = (text(values, key, what) for key in _PROCESS_TEXTS)
        return cls(name, command, whole(values, "stop_timeout", what), signal, droplets, unit)


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

    @classmethod
    def from_json_object(cls, data: JsonValue) -> Schedule:
        what = "a scheduled job"
        values = checked_fields(cls, data, what)
        name, command, when, unit = (text(values, key, what) for key in ("name", "command", "when", "unit"))
        return cls(name, command, when, texts(values, "calendar", what), whole(values, "random_delay", what), unit)


@dataclass(frozen=True)
class Webhook:
    """One address the droplet posts its notifications to, and the body it takes."""

    form: str
    """slack, discord or json: the body it takes."""
    url: str = field(repr=False)
    """The address, a secret: whoever holds it may post to the channel."""

    @classmethod
    def from_json_object(cls, data: JsonValue) -> Webhook:
        return cls(**_strings(cls, data, "a webhook"))


@dataclass(frozen=True)
class OffsiteBucket:
    """Where the off-site copies go, and the key that reaches them (offsiteRegion)."""

    endpoint: str
    region: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    @classmethod
    def from_json_object(cls, data: JsonValue) -> OffsiteBucket:
        return cls(**_strings(cls, data, "the off-site bucket on the deploy's stdin"))


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
    def from_json(cls, text: str) -> DeployInput:
        """The document `to_json` writes; `InputError` for anything else."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise InputError(f"the deploy's stdin is not JSON ({error})") from error
        values = checked_fields(cls, data, "the deploy's stdin")
        environment, webhooks, offsite = values["environment"], values["webhooks"], values["offsite"]
        if not isinstance(environment, str) or not isinstance(webhooks, tuple):
            raise InputError("the deploy's stdin: environment must be text and webhooks a list")
        try:
            hooks = tuple(Webhook.from_json_object(item) for item in webhooks)
        except InputError as error:
            shape = "[{form, url}, ...]"
            raise InputError(f"the webhooks on the deploy's stdin do not read as JSON {shape}: {error}") from error
        return cls(environment, hooks, None if offsite is None else OffsiteBucket.from_json_object(offsite))
