"""The agent's command line: the contract that `core/plan.py` and the rehearsal use.

    deploy.sh [--skip-release-command] [--secondary] RELEASE_ID BUNDLE [PUBLIC_IPV4] < app-environment
    deploy.sh rollback [RELEASE_ID]
    deploy.sh run [--] COMMAND [ARGS...]
    deploy.sh logs [-f] [-n LINES]
    deploy.sh backup
    deploy.sh restore [BACKUP]
    deploy.sh restore --offsite [BACKUP] < age-identity
    deploy.sh notify unit-failed UNIT | notify test

On success a deploy prints the release id, the site's URL, a line "process: ..." for each of
the app's processes and "schedule: ..." for each scheduled job, and a line "warning: ..." for
each hardening extra that is not running; everything else it says goes to stderr.
`--secondary` marks a droplet that is not its fleet's first: it runs no scheduled jobs. The
verbs that change the server (deploy, rollback, restore) take turns on one lock.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from agent import admin, checks, notify
from agent.config import Config
from agent.context import Agent, Failed
from agent.deploy import DeployRequest, deploy
from agent.system import System


class UsageError(Exception):
    """Words the command line does not take; the agent fails with the verb's usage."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting: the agent reports a usage error as any failure."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Verb:
    """One of the agent's verbs: its usage, its arguments, what runs it, and whether it takes the deploy lock."""

    name: str
    usage: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Agent, argparse.Namespace], int]
    locked: bool = False
    """Changes the server: deploy, rollback and restore take turns on one lock."""


def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-release-command", action="store_true")
    parser.add_argument("--secondary", action="store_true")
    parser.add_argument("release_id")
    parser.add_argument("bundle")
    parser.add_argument("public_ipv4", nargs="?", default="")


def _deploy(agent: Agent, args: argparse.Namespace) -> int:
    request = DeployRequest(args.release_id, args.bundle, args.public_ipv4, args.skip_release_command, args.secondary)
    try:
        deploy(agent, request)
    except Failed as failure:
        notify.deploy_failed(agent, args.release_id, str(failure), failure.rolled_back)
        raise
    return 0


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("-n", "--lines", type=int, default=50)


def _release_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release_id", nargs="?")


def _nothing(parser: argparse.ArgumentParser) -> None:
    """A verb that takes no words."""


def _restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offsite", action="store_true")
    parser.add_argument("backup", nargs="?")


def _rest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("words", nargs=argparse.REMAINDER)


def _run(agent: Agent, args: argparse.Namespace) -> int:
    command = args.words[1:] if args.words[:1] == ["--"] else args.words
    if not command:
        raise UsageError("a command is required")
    return admin.run(agent, command)


def _restore(agent: Agent, args: argparse.Namespace) -> int:
    (admin.restore_offsite if args.offsite else admin.restore)(agent, args.backup)
    return 0


def _done(action: Callable[[], None]) -> int:
    action()
    return 0


VERBS = (
    Verb(
        "deploy",
        "usage: deploy.sh [--skip-release-command] [--secondary] RELEASE_ID BUNDLE [PUBLIC_IPV4], "
        "or deploy.sh rollback [RELEASE_ID]",
        _deploy_arguments,
        _deploy,
        locked=True,
    ),
    Verb(
        "rollback",
        "usage: deploy.sh rollback [RELEASE_ID]",
        _release_id,
        lambda agent, args: _done(lambda: admin.rollback(agent, args.release_id)),
        locked=True,
    ),
    Verb(
        "restore",
        "usage: deploy.sh restore [--offsite] [BACKUP]",
        _restore_arguments,
        _restore,
        locked=True,
    ),
    Verb("run", "usage: deploy.sh run [--] COMMAND [ARGS...]", _rest, _run),
    Verb(
        "logs",
        "usage: deploy.sh logs [-f] [-n LINES]",
        _logs_arguments,
        lambda agent, args: _done(lambda: admin.logs(agent, args.follow, args.lines)),
    ),
    Verb("backup", "usage: deploy.sh backup", _nothing, lambda agent, args: _done(lambda: admin.backup(agent))),
    # notify reads its own words (unit-failed UNIT, test) and says its own usage.
    Verb("notify", notify.USAGE, _rest, lambda agent, args: notify.main(agent, args.words)),
)


def parser() -> argparse.ArgumentParser:
    """The command line, one sub-command a verb; `deploy` is also what words without a verb mean."""
    top = _Parser(prog="deploy.sh", add_help=False)
    verbs = top.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        verb.arguments(verbs.add_parser(verb.name, add_help=False))
    return top


def dispatch(agent: Agent, argv: list[str]) -> int:
    by_name = {verb.name: verb for verb in VERBS}
    words = argv if argv[:1] and argv[0] in by_name else ["deploy", *argv]
    verb = by_name[words[0]]
    try:
        args = parser().parse_args(words)
    except UsageError:
        agent.fail(verb.usage)
    if verb.locked:
        checks.take_lock(agent)
    try:
        return verb.run(agent, args)
    except UsageError:
        agent.fail(verb.usage)


def main(argv: list[str], system: System, config: Config) -> int:
    agent = Agent(system, config)
    try:
        return dispatch(agent, argv)
    except Failed as failure:
        agent.report_failure(failure)
        return 1
