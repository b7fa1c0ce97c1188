"""The app's processes beside Gunicorn, and its scheduled jobs: pure parsing, no Pulumi.

A process is a long-running command (a task queue's worker), named as in a Heroku
`Procfile`; a schedule is a command run at calendar times (systemd's `OnCalendar=`
syntax, or a five-field cron expression translated to it). `core/settings.py`
reads the stack's `processes` and `schedules` keys with these; `core/render.py`
makes their systemd units.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from agent.inputs import Process as Process
from agent.inputs import Schedule as Schedule

#: A process's or job's name: it names its systemd unit, so letters, digits, '-' and '_'.
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,29}$")
#: Names a Procfile gives a meaning of its own: `web` is Gunicorn (and the commands before it), `release` is
#: releaseCommand.
PROCFILE_WEB, PROCFILE_RELEASE = "web", "release"
#: Gunicorn's options that take no value (Gunicorn 27.0.1's `config.py`, its store_true and store_const
#: settings, with --help and --version): every other option takes the next word unless written `--name=value`.
GUNICORN_FLAGS = frozenset(
    {
        "--capture-output",
        "--casefold-http-method",
        "--check-config",
        "--daemon",
        "--disable-redirect-access-to-syslog",
        "--do-handshake-on-connect",
        "--enable-backlog-metric",
        "--enable-stdio-inheritance",
        "--help",
        "--initgroups",
        "--log-syslog",
        "--no-control-socket",
        "--no-sendfile",
        "--permit-obsolete-folding",
        "--permit-unconventional-http-method",
        "--permit-unconventional-http-version",
        "--preload",
        "--print-config",
        "--proxy-protocol",
        "--reload",
        "--reuse-port",
        "--spew",
        "--strip-header-spaces",
        "--suppress-ragged-eofs",
        "--version",
        "-D",
        "-R",
        "-h",
        "-v",
    }
)
#: What joins the commands of a web line, as a shell reads them: each runs after the one before.
_SEQUENCE = (";", "&&")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: Signals a process may be stopped with (huey finishes its running task on SIGINT, Celery and RQ on SIGTERM).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2")
STOP_TIMEOUT_MIN, STOP_TIMEOUT_MAX, STOP_TIMEOUT_DEFAULT = 1, 3600, 30
RANDOM_DELAY_MAX = 86400
#: Where a process runs with several droplets: every one, or the first (the one that runs releaseCommand).
DROPLETS = ("all", "first")


@dataclass(frozen=True)
class WebLine:
    """A Procfile's `web:` line: the commands it runs first, then the server it starts.

    `web: flask db upgrade; flask translate compile; gunicorn microblog:app` runs two commands before
    Gunicorn: the deploy runs those once for each release, before it goes live, and runs Gunicorn itself.
    """

    before: tuple[tuple[str, ...], ...]
    """The commands before the server, each as its words (an assignment `NAME=value` first becomes `env`'s)."""
    server: str
    """The program that serves: `gunicorn`, or what else the line starts (`waitress-serve`, `flask`, ...)."""
    app_target: str | None
    """Gunicorn's APP_MODULE (`module:callable`), when the server is Gunicorn and the line names it."""

    @property
    def is_gunicorn(self) -> bool:
        return self.server == "gunicorn"


class ProcfileError(ValueError):
    """A Procfile line that is not `NAME: COMMAND`."""


def parse_procfile(text: str) -> dict[str, str]:
    """A Procfile's processes, the Heroku way: a line `NAME: COMMAND` each; blank lines and `#` comments skipped.

    Raises `ProcfileError` naming the line number for a line of another shape or a name given twice.
    """
    processes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(.*)", stripped)
        if not match or not match[2].strip():
            raise ProcfileError(f"line {number} {stripped!r} is not NAME: COMMAND")
        name, command = match[1], match[2].strip()
        if name in processes:
            raise ProcfileError(f"line {number} names the process {name!r} a second time")
        processes[name] = command
    return processes


def parse_web_line(command: str) -> WebLine:
    """The commands of a `web:` line and the server it starts last, read as `sh` would split them.

    Commands are joined by `;` or `&&`; a pipe, a redirection, a background `&` or a subshell is more than a
    sequence of commands and raises `ProcfileError`, as does a line with unbalanced quotes.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as err:
        raise ProcfileError(f"web: {command!r} does not split as a shell line ({err})") from None
    commands: list[list[str]] = [[]]
    for word in words:
        if word in _SEQUENCE:
            commands.append([])
        elif word and set(word) <= set("();<>|&"):
            raise ProcfileError(
                f"web: {command!r} uses {word!r}; a web line is commands joined by ';' or '&&', the server last"
            )
        else:
            commands[-1].append(word)
    commands = [words for words in commands if words]
    if not commands:
        raise ProcfileError(f"web: {command!r} runs no command")
    *before, last = commands
    server_words = _program_words(last)
    server = _server_name(server_words)
    target = _gunicorn_app(server_words[_arguments_start(server_words) :]) if server == "gunicorn" else None
    return WebLine(before=tuple(_as_argv(words) for words in before), server=server, app_target=target)


def _program_words(words: list[str]) -> list[str]:
    """The words of a command from its program on: `exec` and assignments before it left out."""
    start = 0
    while start < len(words) and (words[start] == "exec" or _ASSIGNMENT.match(words[start])):
        start += 1
    return words[start:] or words


def _server_name(words: list[str]) -> str:
    """The server a command starts: its program's name, or the module of `python -m MODULE`."""
    program = words[0].rsplit("/", 1)[-1]
    if re.fullmatch(r"python[0-9.]*", program) and len(words) > 2 and words[1] == "-m":
        return words[2]
    return program


def _arguments_start(words: list[str]) -> int:
    """Where the server's own arguments begin: after its program, or after `python -m MODULE`."""
    return 3 if words[1:2] == ["-m"] else 1


def _gunicorn_app(arguments: list[str]) -> str | None:
    """The APP_MODULE of Gunicorn's arguments: the last word that is neither an option nor an option's value."""
    found = None
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word.startswith("-") and word != "-":
            skip = "=" not in word and word not in GUNICORN_FLAGS and not (word[1:2] != "-" and len(word) > 2)
        else:
            found = word
    if found is None:
        return None
    return found if ":" in found else f"{found}:application"


def _as_argv(words: list[str]) -> tuple[str, ...]:
    """A command's words as a program runs them: `NAME=value ... program` becomes `env NAME=value ... program`."""
    if words[0] == "exec":
        words = words[1:] or words
    return ("env", *words) if _ASSIGNMENT.match(words[0]) else tuple(words)


# Calendars

#: systemd's shorthands for calendar events (systemd.time(7)).
CALENDAR_SHORTHANDS = frozenset(
    {"minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually", "quarterly", "semiannually"}
)
CRON_SHORTHANDS = {
    "@hourly": "hourly",
    "@daily": "daily",
    "@midnight": "daily",
    "@weekly": "weekly",
    "@monthly": "monthly",
    "@yearly": "yearly",
    "@annually": "yearly",
}
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: Each cron field: its name, lowest and highest value, and the names it takes.
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, tuple(day.lower() for day in _DAYS)),
)


class CalendarError(ValueError):
    """An expression that is neither a systemd calendar event nor a five-field cron expression."""


def looks_like_cron(when: str) -> bool:
    """Five fields of digits, names, `*`, `,`, `-` and `/` (a calendar event has `:` or `-`s between numbers
    in fewer words), or one of cron's `@` shorthands."""
    if when.startswith("@"):
        return True
    fields = when.split()
    return len(fields) == 5 and all(re.fullmatch(r"[0-9A-Za-z*,/-]+", field) for field in fields)


def _cron_values(text: str, index: int) -> list[int] | None:
    """The values a cron field matches, sorted; None for `*` (every value)."""
    label, low, high, names = _CRON_FIELDS[index]
    if text == "*":
        return None
    values: set[int] = set()

    def number(word: str) -> int:
        if word.lower() in names:
            return names.index(word.lower()) + (1 if label == "month" else 0)
        if not word.isdigit():
            raise CalendarError(f"the {label} field's {word!r} is not a number from {low} to {high}")
        value = int(word)
        if not low <= value <= high:
            raise CalendarError(f"the {label} field's {value} is not from {low} to {high}")
        return value

    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CalendarError(f"the {label} field's step {step_text!r} is not a whole number above 0")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = number(start), number(end)
            if first > last:
                raise CalendarError(f"the {label} field's range {body!r} runs backwards")
        else:
            first = number(body)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    if label == "day of week" and 7 in values:
        values.discard(7)
        values.add(0)  # cron's 7 is Sunday, as 0 is
    return sorted(values)


def _calendar_list(values: list[int] | None, width: int = 2) -> str:
    if values is None:
        return "*"
    return ",".join(f"{value:0{width}d}" for value in values)


def cron_to_calendar(when: str) -> tuple[str, ...]:
    """systemd calendar events for a cron expression, in the server's time zone (UTC on a droplet), as cron reads it.

    Cron runs a job whose day of month and day of week are both restricted on either day; systemd's
    event needs both, so that case takes two events, one for each.
    """
    if when.startswith("@"):
        if when not in CRON_SHORTHANDS:
            raise CalendarError(f"{when!r} is not one of cron's {', '.join(CRON_SHORTHANDS)}")
        return (CRON_SHORTHANDS[when],)
    fields = when.split()
    if len(fields) != 5:
        raise CalendarError("a cron expression has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, weekday = (_cron_values(text, index) for index, text in enumerate(fields))
    time = f"{_calendar_list(hour)}:{_calendar_list(minute)}:00"
    month_text = _calendar_list(month)
    days = ",".join(_DAYS[value] for value in weekday) if weekday is not None else ""
    if weekday is not None and day is not None:
        return (f"{days} *-{month_text}-* {time}", f"*-{month_text}-{_calendar_list(day)} {time}")
    prefix = f"{days} " if days else ""
    return (f"{prefix}*-{month_text}-{_calendar_list(day)} {time}",)


_CALENDAR_WORD = re.compile(r"[0-9A-Za-z*,./:~+_-]+")


def check_calendar_shape(event: str) -> None:
    """What this module can tell of a systemd calendar event without systemd: one to four words of its
    characters. `check_calendar` leaves the rest to `systemd-analyze calendar` when it is there."""
    words = event.split()
    if not 1 <= len(words) <= 4 or not all(_CALENDAR_WORD.fullmatch(word) for word in words):
        raise CalendarError("expected a systemd calendar event such as '*-*-* 03:00:00', 'Mon..Fri 09:00' or daily")
    if len(words) == 1 and not (words[0].lower() in CALENDAR_SHORTHANDS or re.search(r"[0-9*]", words[0])):
        raise CalendarError(f"{words[0]!r} is not one of systemd's {', '.join(sorted(CALENDAR_SHORTHANDS))}")


def systemd_analyze_calendar(events: tuple[str, ...]) -> str | None:
    """What `systemd-analyze calendar` says against the events (None: it accepts them, or is not there)."""
    program = shutil.which("systemd-analyze")
    if program is None:
        return None
    try:
        result = subprocess.run(
            [program, "calendar", "--iterations=1", *events], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode == 0:
        return None
    return " ".join(result.stderr.split()) or f"systemd-analyze calendar exited {result.returncode}"


def to_calendar(when: str) -> tuple[str, ...]:
    """The systemd calendar events for `when` (cron translated); raises `CalendarError` saying what is wrong."""
    if any(c in when for c in "\n\r\0\"'\\%$;"):
        raise CalendarError("expected one line without quotes, '\\', '%', '$' or ';'")
    when = " ".join(when.split())
    events = cron_to_calendar(when) if looks_like_cron(when) else (when,)
    for event in events:
        check_calendar_shape(event)
    refused = systemd_analyze_calendar(events)
    if refused:
        raise CalendarError(f"systemd-analyze calendar refuses {' | '.join(events)}: {refused}")
    return events
