"""The server's files, one list for first boot and every deploy, and the handlers their changes notify.

`core/render.py` renders the manifest (`server/manifest.json` in each release's
bundle); cloud-init writes the entries marked for first boot, and each deploy puts every
entry it keeps back as rendered. A file that changed notifies its handlers, as Ansible's
do: each handler runs once, after all files are in place, and nothing runs when nothing
changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.system import System

DAEMON_RELOAD = "daemon-reload"
RESTART_JOURNALD = "restart journald"
RESTART_NGINX = "restart nginx"
RELOAD_NGINX = "reload nginx"
RESTART_APP = "restart app"
"""The app's units or what runs it changed: the release goes live again, through its candidate."""

#: The handlers in the order they run, each as the command it runs (none for `restart app`,
#: which the publish phase answers).
HANDLERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (DAEMON_RELOAD, ("systemctl", "daemon-reload")),
    (RESTART_JOURNALD, ("systemctl", "restart", "systemd-journald")),
    (RESTART_NGINX, ("systemctl", "restart", "nginx")),
    (RELOAD_NGINX, ("systemctl", "reload", "nginx")),
)


@dataclass(frozen=True)
class Entry:
    path: str
    content: str | None
    """None: the file must not be there (a feature turned off)."""
    owner: str = "root:root"
    mode: str = "0644"
    notify: tuple[str, ...] = ()
    https_content: str | None = None
    """What the file holds once the site has its certificate (the HTTPS site), if that differs."""
    first_boot: str = ""
    """"early" or "deferred" (after the packages): cloud-init writes it at first boot; "" it does not."""
    deploy: bool = False
    """Every deploy puts it back as rendered."""
    group: str = ""
    """"volume": the state Volume's units, put in place before anything else."""
    check: tuple[str, ...] = ()
    """A program that must accept the new file; if it does not, the file before it is put back."""
    enable: str = ""
    """A unit enabled and started once the file is in place, and stopped and disabled before it goes."""

    def content_for(self, https: bool) -> str | None:
        return self.https_content if https and self.https_content is not None else self.content

    @property
    def file_mode(self) -> int:
        return int(self.mode, 8)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"path": self.path, "content": self.content, "owner": self.owner, "mode": self.mode}
        optional: dict[str, object] = {
            "notify": list(self.notify),
            "https_content": self.https_content,
            "first_boot": self.first_boot,
            "deploy": self.deploy,
            "group": self.group,
            "check": list(self.check),
            "enable": self.enable,
        }
        data.update({key: value for key, value in optional.items() if value})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Entry:
        def text(key: str) -> str:
            value = data.get(key, "")
            return value if isinstance(value, str) else ""

        def words(key: str) -> tuple[str, ...]:
            value = data.get(key, [])
            return tuple(str(item) for item in value) if isinstance(value, list) else ()

        content, https_content = data.get("content"), data.get("https_content")
        return cls(
            path=text("path"),
            content=content if isinstance(content, str) else None,
            owner=text("owner") or "root:root",
            mode=text("mode") or "0644",
            notify=words("notify"),
            https_content=https_content if isinstance(https_content, str) else None,
            first_boot=text("first_boot"),
            deploy=data.get("deploy") is True,
            group=text("group"),
            check=words("check"),
            enable=text("enable"),
        )


def dumps(entries: Iterable[Entry]) -> str:
    return json.dumps([entry.to_dict() for entry in entries], indent=1) + "\n"


def loads(text: str) -> list[Entry]:
    return [Entry.from_dict(item) for item in json.loads(text)]


class Rejected(Exception):
    """A file's check refused it; the file before it is back in place."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(entry.path)
        self.entry = entry


@dataclass
class Applied:
    """What one application of the manifest changed: the files before it, and the handlers notified."""

    before: dict[str, str | None] = field(default_factory=dict)
    notified: set[str] = field(default_factory=set)
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.before)

    def merge(self, other: Applied) -> None:
        for path, text in other.before.items():
            self.before.setdefault(path, text)
        self.notified |= other.notified
        self.entries.update(other.entries)


def apply(system: System, entries: Sequence[Entry], https: bool = False) -> Applied:
    """Each entry's file as rendered; returns what changed. Handlers are left to `run_handlers`."""
    applied = Applied()
    for entry in entries:
        wanted = entry.content_for(https)
        current = system.read_text(entry.path)
        if wanted == current:
            continue
        if wanted is None:
            if entry.enable and system.exists(entry.path):
                system.run(["systemctl", "disable", "--quiet", "--now", entry.enable])
            system.remove(entry.path)
        else:
            system.write_file(entry.path, wanted, entry.owner, entry.file_mode)
            if entry.check and not system.run(list(entry.check)).ok:
                _put_back(system, entry, current)
                for path, text in applied.before.items():
                    _put_back(system, applied.entries[path], text)
                raise Rejected(entry)
        applied.before[entry.path] = current
        applied.notified.update(entry.notify)
        applied.entries[entry.path] = entry
    return applied


def run_handlers(system: System, notified: set[str]) -> None:
    """Each notified handler once, in their order; a restart of nginx makes its reload needless."""
    for name, command in HANDLERS:
        if name not in notified or (name == RELOAD_NGINX and RESTART_NGINX in notified):
            continue
        system.run(list(command), output="stderr")


def enable_units(system: System, entries: Sequence[Entry], https: bool = False) -> None:
    """The units that come with files now in place, enabled and started (a no-op when they are)."""
    for entry in entries:
        if entry.enable and entry.content_for(https) is not None:
            system.run(["systemctl", "enable", "--quiet", "--now", entry.enable], output="stderr")


def revert(system: System, applied: Applied) -> None:
    """Every file as it was before `applied`, and the handlers that this change of mind notifies."""
    for path, text in applied.before.items():
        entry = applied.entries[path]
        if text is None and entry.enable:
            system.run(["systemctl", "disable", "--quiet", "--now", entry.enable])
        _put_back(system, entry, text)
    run_handlers(system, applied.notified)


def _put_back(system: System, entry: Entry, text: str | None) -> None:
    if text is None:
        system.remove(entry.path)
    else:
        system.write_file(entry.path, text, entry.owner, entry.file_mode)
