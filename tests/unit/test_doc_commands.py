"""The commands the docs give for the server are those the program renders: its paths, the deploy script's
command line, and the stack's outputs that print them. A doc that names a path the program does not
render, or a command that is not the output's, fails here rather than at a user's `No such file`."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

import agent.cli
import core.layout
from core.layout import DEPLOY_USER, ServerLayout
from core.plan import deploy_script_command, logs_line, restore_offsite_command, restore_offsite_line
from core.settings import Settings, parse_settings

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
#: The docs whose commands are held to the program, and the app's name and server address they write.
DOCS = ("docs/offsite.md", "docs/operating.md")
APP, ADDRESS = "APP", "IP"
#: Paths the docs may name that the program does not render: the system's own.
SYSTEMS_PATHS = {f"/home/{DEPLOY_USER}/.ssh/authorized_keys": "sshd's, which cloud-init writes"}
#: A name the reader fills in: STAMP, RELEASE_ID, [STAMP].
PLACEHOLDER = re.compile(r"\[?[A-Z][A-Z_]*\]?")


@pytest.fixture
def settings(good_config: dict[str, Any]) -> Settings:
    # The docs write the app's name as APP; the program derives every path from the name alone.
    settings = parse_settings(good_config, PROJECT_DIR)
    return dataclasses.replace(settings, app=dataclasses.replace(settings.app, name=APP))


def code_of(doc: str) -> tuple[list[str], list[str]]:
    """The lines of a doc's shell blocks (comments dropped) and its inline code spans (whitespace joined)."""
    text = (PROJECT_DIR / doc).read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    lines = [" ".join(re.sub(r"(^|\s)#.*", "", line).split()) for block in blocks for line in block.splitlines()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return [line for line in lines if line], spans


def as_written(doc: str) -> list[str]:
    """The doc's commands as a reader copies them: the block's lines and the spans that run something."""
    lines, spans = code_of(doc)
    return lines + [span for span in spans if span.split()[0] in ("ssh", "ls", "sudo", "pulumi", "$(pulumi")]


def server_paths(settings: Settings) -> set[str]:
    """Every path on the server the program renders: the layout's, the fixed ones, a release's bundle and
    those of the deploy script's command line."""
    layout = settings.layout
    values = [value for value in dataclasses.asdict(layout).values() if isinstance(value, str)]
    values += [getattr(layout, name) for name, member in vars(ServerLayout).items() if isinstance(member, property)]
    values += [value for name, value in vars(core.layout).items() if name.isupper() and isinstance(value, str)]
    values += [layout.bundle("RELEASE_ID"), *shlex.split(deploy_script_command(settings))]
    return {value for value in values if isinstance(value, str) and value.startswith("/")}


def rendered(path: str, known: set[str]) -> bool:
    """A path the program renders, a directory that holds one, or one of its directories' entries named by a
    placeholder (`/var/backups/APP/STAMP.tar.gz`)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return (
        path in known
        or any(other.startswith(path.rstrip("/") + "/") for other in known)
        or (parent in known and PLACEHOLDER.match(name) is not None)
    )


def ssh_parts(command: str) -> tuple[str, list[str]] | None:
    """The login and what `ssh [-t] LOGIN REMOTE...` runs on the server, in a command line or a pipeline."""
    for part in command.split("|"):
        words = shlex.split(part)
        logins = [i for i, word in enumerate(words) if i > 0 and not word.startswith("-")]
        if words[:1] == ["ssh"] and logins:
            return words[logins[0]], words[logins[0] + 1 :]
    return None


def deploy_script_verbs() -> set[str]:
    """The verbs `deploy.sh` takes, as the agent's command line lists them."""
    usage = [line.split() for line in (agent.cli.__doc__ or "").splitlines() if line.strip().startswith("deploy.sh")]
    return {words[1] for words in usage if not words[1].startswith(("[", "RELEASE_ID"))}


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_the_docs_name_on_the_server_is_one_the_program_renders(doc: str, settings: Settings) -> None:
    known = server_paths(settings) | set(SYSTEMS_PATHS)
    # The commands, and the spans that are a path (not `GET /v2/account`, a request to DigitalOcean's API).
    _, spans = code_of(doc)
    named = {
        word.rstrip(".,;:)")
        for code in as_written(doc) + [span for span in spans if span.startswith("/")]
        for word in re.split(r"[\s'\"=]+", code)
        if word.startswith("/") and len(word) > 1
    }
    assert named, f"{doc} names no path on the server: is this test reading it?"
    assert sorted(path for path in named if not rendered(path, known)) == []


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_run_over_ssh_is_the_one_the_program_renders(doc: str, settings: Settings) -> None:
    checked = 0
    for command in as_written(doc):
        found = ssh_parts(command)
        if found is None:
            continue
        login, remote = found
        assert login in (f"{DEPLOY_USER}@{ADDRESS}", f"{DEPLOY_USER}@ADDRESS"), command
        if any(word.endswith("deploy.sh") for word in remote):
            words = remote[3:]
            # The deploy script's own command line, with the reader's placeholders as its arguments.
            assert shlex.join(remote[:3]) == deploy_script_command(settings), command
            assert shlex.join(remote) == deploy_script_command(settings, *words), command
            assert words and words[0] in deploy_script_verbs(), command
            checked += 1
    assert checked, f"{doc} runs no deploy.sh: is this test reading it?"


def test_the_docs_give_the_outputs_own_lines(settings: Settings) -> None:
    # The outputs, as __main__.py exports them, for the address the docs write.
    commands = {doc: as_written(doc) for doc in DOCS}
    restore = restore_offsite_line(settings, ADDRESS)
    assert any(line == restore or line.startswith(restore + " ") for line in commands["docs/offsite.md"])
    assert logs_line(settings, ADDRESS) in commands["docs/operating.md"]


def test_the_outputs_the_docs_name_are_the_stacks() -> None:
    exported = set(re.findall(r'pulumi\.export\(\s*"(\w+)"', (PROJECT_DIR / "__main__.py").read_text()))
    assert {"restore_offsite", "logs", "known_hosts"} <= exported
    for doc in DOCS:
        lines, spans = code_of(doc)
        named = re.findall(r"pulumi stack output (\w+)", "\n".join(lines + spans))
        assert sorted(set(named) - exported) == [], doc


def test_the_docs_run_the_restore_offsite_output_as_the_pipeline_it_is(settings: Settings, tmp_path: Path) -> None:
    # `pulumi` answers as the stack would, `ssh` keeps what it was given: the docs' way to run the output
    # must reach the server with the deploy script's command line and the identity on its stdin.
    tools = tmp_path / "bin"
    tools.mkdir()
    output = shlex.quote(restore_offsite_line(settings, ADDRESS))
    (tools / "pulumi").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  "stack output restore_offsite") printf "%s\\n" {output} ;;\n'
        '  "config get offsiteIdentity") echo AGE-SECRET-KEY-1EXAMPLE ;;\n'
        '  *) echo "not the stack\'s command: pulumi $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    (tools / "ssh").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SSH_ARGV"\ncat > "$SSH_STDIN"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    lines, spans = code_of("docs/offsite.md")
    runs = [code for code in lines + spans if "pulumi stack output restore_offsite" in code]
    assert runs
    for code in runs:
        argv, stdin = tmp_path / "argv", tmp_path / "stdin"
        env = {"PATH": f"{tools}:/usr/bin:/bin", "SSH_ARGV": str(argv), "SSH_STDIN": str(stdin)}
        ran = subprocess.run(["bash", "-c", code], env=env, capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, (code, ran.stderr)
        assert argv.read_text().splitlines() == [
            f"{DEPLOY_USER}@{ADDRESS}",
            *shlex.split(restore_offsite_command(settings)),
        ]
        assert stdin.read_text() == "AGE-SECRET-KEY-1EXAMPLE\n"
