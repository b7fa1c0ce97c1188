"""The deploy plan: the ordered steps that bring a booted server to serving a release.

Two executors run it unchanged: `AppDeployment` (one pulumi-command resource per
step, chained) and the local rehearsal (scp and ssh). Secrets only ever travel
in a step's `stdin`.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.inputs import OFFSITE, DeployInput, OffsiteBucket, Webhook
from agent.strict import read
from core.bundle import Bundle, build_agent_archive, build_bundle
from core.droplets import Member, members
from core.layout import DEPLOY_USER
from core.render import render_env_file, render_server_files, sha256_text
from core.settings import Settings

#: How long the first step waits for cloud-init; a cold Ubuntu droplet takes a few minutes.
CLOUD_INIT_TIMEOUT_SECONDS = 900


def wait_for_cloud_init_command(timeout_seconds: int = CLOUD_INIT_TIMEOUT_SECONDS) -> str:
    """`cloud-init status --wait`, bounded; exit status 1 is an error, 2 a recoverable one (warnings)."""
    return f"""\
set -u
end=$((SECONDS + {timeout_seconds}))
# cloud-init's status can report an error (a unit that failed) before its final stage has finished,
# and that stage writes boot-finished last: wait for it as well, within the same bound.
until [ -e /var/lib/cloud/instance/boot-finished ] || [ "$SECONDS" -ge "$end" ]; do sleep 2; done
out=$(timeout $((end > SECONDS ? end - SECONDS : 1)) cloud-init status --wait --long 2>&1); rc=$?
printf '%s\\n' "$out"
case $rc in
  0) exit 0 ;;
  2) echo 'cloud-init finished with recoverable errors (see above)' >&2; exit 0 ;;
  124) echo 'cloud-init did not finish within {timeout_seconds} s' >&2; exit 1 ;;
  *) echo 'cloud-init reported errors; details: sudo cloud-init status --long; /var/log/cloud-init.log' >&2
     # Its status may name only the systemd unit that failed; its result names the modules.
     cat /run/cloud-init/result.json 2>/dev/null
     exit 1 ;;
esac
"""


WAIT_FOR_CLOUD_INIT = wait_for_cloud_init_command()


@dataclass(frozen=True)
class Upload:
    """Copy a local file to the server, as the deploy user."""

    name: str
    local_path: Path
    remote_path: str
    content_hash: str


@dataclass(frozen=True)
class RemoteCommand:
    """Run a shell command on the server, as the deploy user."""

    name: str
    command: str
    content_hash: str
    stdin_is_secret: bool = False
    takes_public_address: bool = False
    """The command ends with the server's public IPv4 address, which only the executor knows."""

    def command_for(self, public_ipv4: str) -> str:
        """The command line to run, given the address the site is reached at."""
        return f"{self.command} {shlex.quote(public_ipv4)}" if self.takes_public_address else self.command


Step = Upload | RemoteCommand


@dataclass(frozen=True)
class DeployReport:
    """What the deploy prints on stdout: the release id, the URL the site answers at, a line for each warning."""

    url: str
    """`https://...` once the site has its certificate, else `http://...`; empty when the deploy printed none."""
    warnings: tuple[str, ...]
    """Hardening extras that are not running (fail2ban, say), each without its `warning: ` prefix."""


def parse_deploy_output(stdout: str) -> DeployReport:
    lines = stdout.splitlines()
    return DeployReport(
        url=lines[1] if len(lines) > 1 else "",
        warnings=tuple(line.removeprefix("warning: ") for line in lines[2:] if line.startswith("warning: ")),
    )


@dataclass(frozen=True)
class DeployPlan:
    release_id: str
    steps: tuple[Step, ...]
    app_env: Mapping[str, str] = field(default_factory=dict)
    """The stack's appEnv: what the secret step's environment file holds, before `stdin_with` adds to it."""
    login_user: str = DEPLOY_USER
    webhooks: tuple[Webhook, ...] = ()
    """The stack's notifyWebhooks: secrets, which reach the server only on the secret step's stdin."""

    @property
    def stdin(self) -> str:
        """What the secret step reads on stdin: the app's environment file (and the webhooks)."""
        return self.stdin_with({})

    def stdin_with(self, extra_env: Mapping[str, str], offsite: Mapping[str, str] | None = None) -> str:
        """The deploy's input as JSON (`DeployInput`): the environment file with `extra_env` added (what only
        exists once resources do: DATABASE_URL), the webhooks, and `offsite` (the off-site bucket and its key,
        which exist once the bucket does)."""
        return DeployInput(
            environment=render_env_file({**self.app_env, **extra_env}),
            webhooks=self.webhooks,
            offsite=read(OffsiteBucket, dict(offsite), OFFSITE) if offsite else None,
        ).to_json()


def build_deploy_plan(settings: Settings, build_dir: Path) -> DeployPlan:
    """Render, archive and order everything a deploy does; writes the bundle, the agent and deploy.sh
    under `build_dir`."""
    layout = settings.layout
    # The server's files, rendered once: the bundle, the agent's archive and the deploy's hash share them.
    server = render_server_files(settings)
    bundle: Bundle = build_bundle(settings, build_dir / "bundles", server)
    agent = build_agent_archive(settings, build_dir, server)
    script = server.deploy_script
    script_path = build_dir / f"deploy-{settings.app.name}.sh"
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(script)
    script_path.chmod(0o755)
    steps: tuple[Step, ...] = (
        RemoteCommand("wait-for-cloud-init", WAIT_FOR_CLOUD_INIT, sha256_text(WAIT_FOR_CLOUD_INIT)),
        Upload("deploy-script", script_path, layout.deploy_script, sha256_text(script)),
        Upload("agent", agent.path, layout.agent_archive, agent.sha256),
        Upload("bundle", bundle.path, layout.bundle(bundle.release_id), bundle.sha256),
        RemoteCommand(
            "deploy",
            release_deploy_command(settings, bundle.release_id),
            # The release id covers the app and the server config; the script is hashed separately.
            sha256_text(bundle.sha256 + server.config_hash),
            stdin_is_secret=True,
            takes_public_address=True,
        ),
    )
    return DeployPlan(
        release_id=bundle.release_id,
        steps=steps,
        app_env=dict(settings.app.env),
        webhooks=settings.notifications.webhooks,
    )


def rollout_plans(settings: Settings, build_dir: Path) -> list[DeployPlan]:
    """One deploy plan for each of the stack's droplets (`members`), in rollout order, from one bundle.

    The first droplet runs `releaseCommand` (migrations, once per release); every one after
    it deploys the same release with its `deploy_options` (no release command, no scheduled
    jobs, nor the processes marked for the first droplet only), its plan's only difference.
    """
    first = build_deploy_plan(settings, build_dir)
    *before, deploy = first.steps
    assert isinstance(deploy, RemoteCommand), "a deploy plan ends with the deploy command"

    def plan_for(member: Member) -> DeployPlan:
        if member.first:
            return first
        command = release_deploy_command(settings, first.release_id, *member.deploy_options)
        return dataclasses.replace(first, steps=(*before, dataclasses.replace(deploy, command=command)))

    return [plan_for(member) for member in members(settings)]


def release_deploy_command(settings: Settings, release_id: str, *options: str) -> str:
    """The deploy of `release_id` from its uploaded bundle; `options` (`--skip-release-command`) come first."""
    return deploy_script_command(settings, *options, release_id, settings.layout.bundle(release_id))


def deploy_script_command(settings: Settings, *words: str) -> str:
    """The deploy script with `words` (`logs -f`, `restore 20261201T020000Z`), run over SSH as the deploy user."""
    layout = settings.layout
    return shlex.join(["sudo", "/bin/bash", layout.deploy_script, *words])


def run_command(settings: Settings, argv: list[str] | tuple[str, ...]) -> str:
    """A one-off command, run over SSH as the deploy user: ARGV runs as the app's user in the live release."""
    return deploy_script_command(settings, "run", "--", *argv)


def rollback_command(settings: Settings, release_id: str | None = None) -> str:
    """The admin's rollback, run over SSH as the deploy user: back to the previous release, or to `release_id`."""
    return deploy_script_command(settings, "rollback", *([release_id] if release_id else []))


def restore_offsite_command(settings: Settings) -> str:
    """The restore of the newest off-site backup, run over SSH as the deploy user, the age identity on its stdin."""
    return deploy_script_command(settings, "restore", "--offsite")


def logs_command(settings: Settings, follow: bool = False, lines: int | None = None) -> str:
    """The site's recent requests and the journal of the app and nginx; `follow` keeps showing new lines."""
    words = ["logs", *(["-f"] if follow else []), *(["-n", str(lines)] if lines is not None else [])]
    return deploy_script_command(settings, *words)


# The admin's lines, typed on the machine that holds the stack: the stack's outputs, and the docs' commands
# (tests/unit/test_doc_commands.py holds the docs to these).


def over_ssh(address: str, command: str, *, terminal: bool = False) -> str:
    """`command` (one of the above, quoted already) run on the server at `address` as the deploy user;
    `terminal` for one that runs until Ctrl-C (`logs -f`)."""
    return f"{shlex.join(['ssh', *(['-t'] if terminal else []), f'{DEPLOY_USER}@{address}'])} {command}"


def logs_line(settings: Settings, address: str) -> str:
    """The `logs` output: the site's logs, followed."""
    return over_ssh(address, logs_command(settings, follow=True), terminal=True)


def restore_offsite_line(settings: Settings, address: str) -> str:
    """The `restore_offsite` output: the newest off-site backup restored, the stack's age identity on stdin."""
    return f"pulumi config get offsiteIdentity | {over_ssh(address, restore_offsite_command(settings))}"
