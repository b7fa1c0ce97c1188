"""Run a `DeployPlan` over real SSH, with the same trigger rules as `AppDeployment`.

A step runs when its trigger (server identity, content hash and, for the secret
step, the hash of its stdin) differs from the last run recorded for the server,
exactly as pulumi-command reruns a resource whose `triggers` changed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.plan import DeployPlan, RemoteCommand, Upload
from core.render import sha256_text

Progress = Callable[[str], None]

#: Bounds for one SSH command; the deploy step installs packages and may take minutes.
SSH_CONNECT_TIMEOUT_SECONDS = 10
STEP_TIMEOUT_SECONDS = 900
SSH_ATTEMPTS = 3
SSH_RETRY_SECONDS = 3


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    private_key: Path
    known_hosts: Path
    """Pins the server's host key, made for it before it booted: a server that shows another is refused."""

    def options(self) -> list[str]:
        return [
            "-i",
            str(self.private_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            # The pinned key is the Ed25519 one: ask for it, not whichever type the server prefers.
            "-o",
            "HostKeyAlgorithms=ssh-ed25519",
            "-o",
            "LogLevel=ERROR",
            "-o",
            f"ConnectTimeout={SSH_CONNECT_TIMEOUT_SECONDS}",
        ]

    def ssh(
        self, command: str, stdin: str = "", timeout: float = STEP_TIMEOUT_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` through the login shell on the server, as pulumi-command does.

        As pulumi-command dials again when a connection fails, ssh's own failure (exit 255) is
        tried again, `SSH_ATTEMPTS` times in all: every step the deploy runs may run twice.
        """
        for attempt in range(1, SSH_ATTEMPTS + 1):
            result = subprocess.run(
                ["ssh", *self.options(), f"{self.user}@{self.host}", command],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if result.returncode != 255 or attempt == SSH_ATTEMPTS:
                break
            reason = result.stderr.strip() or "exit 255"
            print(f"rehearse: ssh to {self.host} failed ({reason}); trying again", file=sys.stderr)
            time.sleep(SSH_RETRY_SECONDS)
        return result

    def stream(self, command: str, timeout: float | None = None) -> int:
        """Run `command` with this process's stdin, stdout and stderr (a terminal too, when there is one).

        No time limit by default: a one-off command (a migration, a shell) takes what it takes.
        """
        tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        return subprocess.run(
            ["ssh", *self.options(), *tty, f"{self.user}@{self.host}", command], timeout=timeout, check=False
        ).returncode

    def upload(self, local: Path, remote: str) -> None:
        """Copy a file, creating its parent directories, as CopyToRemote does."""
        parent = remote.rsplit("/", 1)[0]
        made = self.ssh(f"mkdir -p {shlex.quote(parent)}", timeout=60)
        if made.returncode != 0:
            raise DeployError(f"mkdir {parent} on {self.host} failed: {made.stderr.strip()}")
        copied = subprocess.run(
            ["scp", "-q", *self.options(), str(local), f"{self.user}@{self.host}:{remote}"],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_SECONDS,
            check=False,
        )
        if copied.returncode != 0:
            raise DeployError(f"upload of {local} to {remote} failed: {copied.stderr.strip()}")


class DeployError(RuntimeError):
    """A deploy step failed; the message carries the step's own output."""


def step_trigger(step: Upload | RemoteCommand, server_id: str, public_ipv4: str, stdin: str) -> str:
    parts = [server_id, step.content_hash]
    if isinstance(step, RemoteCommand) and step.stdin_is_secret:
        parts.append(sha256_text(stdin))
    if isinstance(step, RemoteCommand) and step.takes_public_address:
        parts.append(public_ipv4)
    return sha256_text("\0".join(parts))


def run_plan(
    plan: DeployPlan,
    target: SshTarget,
    server_id: str,
    state_file: Path,
    progress: Progress,
    public_ipv4: str,
    extra_env: Mapping[str, str] | None = None,
    offsite: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Run the steps whose triggers changed; returns each step that ran with its standard output.

    `extra_env` joins the app's environment on the secret step's stdin, and so does `offsite` (the
    off-site bucket and its key), as `AppDeployment`'s do.
    """
    done: dict[str, str] = json.loads(state_file.read_text()) if state_file.exists() else {}
    ran: dict[str, str] = {}
    stdin = plan.stdin_with(extra_env or {}, offsite)
    for step in plan.steps:
        trigger = step_trigger(step, server_id, public_ipv4, stdin)
        if done.get(step.name) == trigger:
            progress(f"{step.name}: unchanged")
            continue
        progress(f"{step.name}: running")
        output = ""
        if isinstance(step, Upload):
            target.upload(step.local_path, step.remote_path)
        else:
            command = step.command_for(public_ipv4)
            result = target.ssh(command, stdin=stdin if step.stdin_is_secret else "")
            # What the step said on stderr, kept as pulumi-command shows it in `pulumi up`'s log.
            (state_file.parent / f"{step.name}.log").write_text(result.stderr)
            if result.returncode != 0:
                raise DeployError(
                    f"step {step.name} exited {result.returncode}:\n{result.stderr.strip()}\n{result.stdout.strip()}"
                )
            output = result.stdout
        done[step.name] = trigger
        state_file.write_text(json.dumps(done, indent=2))
        ran[step.name] = output
    return ran
