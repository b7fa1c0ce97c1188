"""The `pulumi` CLI, run in a project directory: its output shown as it comes, and kept."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: What the CLI says when another update holds the stack: a file backend's lock, Pulumi Cloud's 409.
LOCKED = ("the stack is currently locked", "Another update is currently in progress")
#: How long an update waits for another one on the same stack to finish, and how often it tries again.
LOCK_WAIT_SECONDS = 45 * 60
LOCK_RETRY_SECONDS = 2.0
#: At most how many lines the CLI prints before it says the stack is locked.
LOCK_LINES = 8


class PulumiError(Exception):
    """A `pulumi` command that failed; its message is the command and the end of what it printed."""


@dataclass(frozen=True)
class Done:
    """A finished command: its exit status and what it printed (stdout, then stderr when kept apart)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    @property
    def locked(self) -> bool:
        """Refused because another update holds the stack (nothing of this one ran)."""
        return self.returncode != 0 and any(words in self.text for words in LOCKED)


@dataclass
class Pulumi:
    """`pulumi` in PROJECT, on one stack at a time, never interactive."""

    project: Path
    echo: Callable[[str], None] = field(default=lambda line: print(line, end="", file=sys.stderr, flush=True))

    def run(
        self, *args: str, stack: str | None = None, show: bool = True, json_out: bool = False, hold: int = 0
    ) -> Done:
        """`pulumi ARGS`; SHOW echoes its output line by line; JSON_OUT keeps stdout apart (it is data).

        HOLD keeps the first lines back until there are more of them, so that a refusal of a few lines
        (a locked stack) is shown only if the caller shows it.
        """
        argv = ["pulumi", *args, "--non-interactive", "--color", "never"]
        if stack is not None:
            argv += ["--stack", stack]
        process = subprocess.Popen(
            argv,
            cwd=self.project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if json_out else subprocess.STDOUT,
            text=True,
        )
        if json_out:
            stdout, stderr = process.communicate()
            if show:
                self.echo(stderr)
            return Done(process.returncode, stdout, stderr)
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if show and len(lines) == hold + 1:
                self.echo("".join(lines))
            elif show and len(lines) > hold:
                self.echo(line)
        done = Done(process.wait(), "".join(lines), "")
        if show and len(lines) <= hold and not done.locked:
            self.echo(done.stdout)
        return done

    def ok(self, *args: str, stack: str | None = None, show: bool = False) -> str:
        """`pulumi ARGS` that must succeed: its standard output, or PulumiError."""
        done = self.run(*args, stack=stack, show=show, json_out=True)
        if done.returncode != 0:
            raise PulumiError(f"pulumi {' '.join(args)} failed:\n{tail(done.text)}")
        return done.stdout

    def update(self, *args: str, stack: str, wait_seconds: float = LOCK_WAIT_SECONDS) -> Done:
        """`pulumi ARGS` that changes the stack (up, destroy), waiting while another update holds it."""
        deadline = time.monotonic() + wait_seconds
        attempts = 0
        while True:
            done = self.run(*args, stack=stack, hold=LOCK_LINES)
            attempts += 1
            if not done.locked:
                return done
            if time.monotonic() >= deadline:
                self.echo(done.text)
                self.echo(f"The stack {stack} stayed locked for {wait_seconds:.0f} s: giving up.\n")
                return done
            if attempts == 1:
                self.echo(done.text)
                self.echo(f"Another update holds the stack {stack}: waiting for it to finish.\n")
            time.sleep(LOCK_RETRY_SECONDS)

    def stacks(self) -> list[str]:
        """The names of the project's stacks in the backend (`pulumi stack ls`)."""
        listed = json.loads(self.ok("stack", "ls", "--json"))
        return [str(entry["name"]).rsplit("/", 1)[-1] for entry in listed]


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
