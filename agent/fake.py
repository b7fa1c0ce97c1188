"""A server made of facts, for the agent's tests: files in a dict, programs answered by rules.

Every call is recorded: `commands` holds each program run (argument lists), `written`
each file written, in order. A program with no rule succeeds and prints nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Unpack

from agent.system import Completed, RunOptions

Answer = Completed | Callable[[list[str]], Completed]


@dataclass
class FakeSystem:
    files: dict[str, str | bytes] = field(default_factory=dict)
    """Regular files by path."""
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[tuple[str, ...], Answer]] = field(default_factory=list)
    """(argv prefix, answer): the first rule whose prefix the command starts with answers it."""
    stdin: str | None = None
    terminal: bool = False
    locked_for: int = 0
    """How many tries of the deploy lock find it held by another deploy."""
    dpkg_busy_for: int = 0
    mtimes: dict[str, float] = field(default_factory=dict)
    executable: set[str] = field(default_factory=set)
    commands: list[list[str]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modes: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Each file written: its owner and mode."""
    slept: float = 0.0
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    posts: list[tuple[str, bytes]] = field(default_factory=list)
    """Each POST asked for: (address, body)."""
    post_answer: str = ""
    """What every POST answers: "" taken, else the reason it was not."""
    events: list[str] = field(default_factory=list)
    """Commands and writes in one order: "run: ARGV", "write: PATH", "remove: PATH", "link: LINK -> TARGET"."""

    def answer(self, *prefix: str, returncode: int = 0, stdout: str = "") -> None:
        self.answers.insert(0, (prefix, Completed(returncode, stdout)))

    def answer_with(self, prefix: Sequence[str], answer: Callable[[list[str]], Completed]) -> None:
        self.answers.insert(0, (tuple(prefix), answer))

    def ran(self, *prefix: str) -> list[list[str]]:
        """The commands run that start with `prefix`."""
        return [argv for argv in self.commands if tuple(argv[: len(prefix)]) == prefix]

    # System

    def run(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Completed:
        command = list(argv)
        self.commands.append(command)
        self.events.append("run: " + " ".join(command))
        for prefix, answer in self.answers:
            if tuple(command[: len(prefix)]) == prefix:
                result = answer(command) if callable(answer) else answer
                break
        else:
            result = Completed(0)
        if options.get("output", "capture") != "capture":
            return Completed(result.returncode)
        return result

    def read_text(self, path: str) -> str | None:
        content = self.files.get(self._resolve(path))
        return content.decode() if isinstance(content, bytes) else content

    def read_bytes(self, path: str) -> bytes | None:
        content = self.files.get(self._resolve(path))
        return content.encode() if isinstance(content, str) else content

    def write_file(self, path: str, content: str | bytes, owner: str = "root:root", mode: int = 0o644) -> None:
        self.files[path] = content
        self.modes[path] = (owner, mode)
        self._parents(path)
        self.written.append(path)
        self.events.append(f"write: {path}")

    def exists(self, path: str) -> bool:
        resolved = self._resolve(path)
        return resolved in self.files or resolved in self.dirs or path in self.links

    def is_dir(self, path: str) -> bool:
        return self._resolve(path) in self.dirs

    def listdir(self, path: str) -> list[str]:
        path = self._resolve(path).rstrip("/")
        names = {
            entry[len(path) + 1 :].split("/", 1)[0]
            for entry in [*self.files, *self.dirs, *self.links]
            if entry.startswith(path + "/")
        }
        return sorted(names)

    def mtime(self, path: str) -> float:
        return self.mtimes.get(path, 0.0)

    def is_executable(self, path: str) -> bool:
        return self._resolve(path) in self.executable

    def link(self, source: str, target: str) -> None:
        self.files[target] = self.files.get(source, "")
        self.events.append(f"hardlink: {target} -> {source}")

    def background(self, argv: Sequence[str], prefix: str) -> None:
        self.commands.append(list(argv))
        self.events.append("background: " + " ".join(argv))

    def make_dirs(self, path: str, mode: int = 0o755, owner: str = "root:root") -> None:
        self.dirs.add(path)
        self._parents(path)

    def remove(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        gone = [p for p in [*self.files, *self.dirs, *self.links] if p == path or p.startswith(prefix)]
        for name in gone:
            self.files.pop(name, None)
            self.dirs.discard(name)
            self.links.pop(name, None)
        if gone:
            self.removed.append(path)
            self.events.append(f"remove: {path}")

    def rename(self, source: str, target: str) -> None:
        prefix = source.rstrip("/") + "/"
        for name in [p for p in self.files if p == source or p.startswith(prefix)]:
            self.files[target + name[len(source) :]] = self.files.pop(name)
        for name in [p for p in self.links if p == source or p.startswith(prefix)]:
            self.links[target + name[len(source) :]] = self.links.pop(name)
        for name in [p for p in self.dirs if p == source or p.startswith(prefix)]:
            self.dirs.discard(name)
            self.dirs.add(target + name[len(source) :])
        self.events.append(f"rename: {source} -> {target}")

    def symlink(self, target: str, link: str) -> None:
        self.links[link] = target
        self.events.append(f"link: {link} -> {target}")

    def readlink(self, path: str) -> str | None:
        parent, name = posixpath.split(path)
        return self.links.get(posixpath.join(self._resolve(parent), name))

    def stdin_text(self) -> str | None:
        return self.stdin

    def stdio_is_terminal(self) -> bool:
        return self.terminal

    def try_lock(self, path: str) -> bool:
        if self.locked_for > 0:
            self.locked_for -= 1
            return False
        self.events.append(f"lock: {path}")
        return True

    def held_by_another(self, path: str) -> bool:
        if self.dpkg_busy_for > 0:
            self.dpkg_busy_for -= 1
            return True
        return False

    def now(self) -> float:
        return self.slept

    def sleep(self, seconds: float) -> None:
        self.slept += seconds

    def clock(self) -> str:
        return "12:00:00"

    def log(self, line: str) -> None:
        self.stderr.append(line)

    def say(self, line: str) -> None:
        self.stdout.append(line)

    def post(self, url: str, body: bytes, timeout: float) -> str:
        self.posts.append((url, body))
        self.events.append("post")
        return self.post_answer

    # Helpers

    def _resolve(self, path: str) -> str:
        """The path with its linked directories followed, as the kernel would."""
        for _ in range(8):
            for link, target in self.links.items():
                if path == link or path.startswith(link + "/"):
                    path = posixpath.normpath(target + path[len(link) :])
                    break
            else:
                return path
        return path

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent not in ("", "/"):
            self.dirs.add(parent)
            parent = posixpath.dirname(parent)
