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

from agent import admin, checks, notify
from agent.config import Config
from agent.context import Agent, Failed
from agent.deploy import DeployRequest, deploy
from agent.system import System

DEPLOY_USAGE = (
    "usage: deploy.sh [--skip-release-command] [--secondary] RELEASE_ID BUNDLE [PUBLIC_IPV4], "
    "or deploy.sh rollback [RELEASE_ID]"
)


def parse_logs(agent: Agent, words: list[str]) -> tuple[bool, int]:
    usage = "usage: deploy.sh logs [-f] [-n LINES]"
    follow, lines = False, 50
    while words:
        word = words.pop(0)
        if word in ("-f", "--follow"):
            follow = True
        elif word in ("-n", "--lines") and words and words[0].isdigit():
            lines = int(words.pop(0))
        else:
            agent.fail(usage)
    return follow, lines


def dispatch(agent: Agent, argv: list[str]) -> int:
    verb, rest = (argv[0], argv[1:]) if argv else ("", [])
    if verb == "logs":
        admin.logs(agent, *parse_logs(agent, rest))
        return 0
    if verb == "backup":
        if rest:
            agent.fail("usage: deploy.sh backup")
        admin.backup(agent)
        return 0
    if verb == "notify":
        return notify.main(agent, rest)
    if verb == "run":
        if rest[:1] == ["--"]:
            rest = rest[1:]
        if not rest:
            agent.fail("usage: deploy.sh run [--] COMMAND [ARGS...]")
        return admin.run(agent, rest)
    checks.take_lock(agent)
    if verb == "restore":
        offsite = rest[:1] == ["--offsite"]
        rest = rest[1:] if offsite else rest
        if len(rest) > 1:
            agent.fail("usage: deploy.sh restore [--offsite] [BACKUP]")
        (admin.restore_offsite if offsite else admin.restore)(agent, rest[0] if rest else None)
        return 0
    if verb == "rollback":
        if len(rest) > 1:
            agent.fail("usage: deploy.sh rollback [RELEASE_ID]")
        admin.rollback(agent, rest[0] if rest else None)
        return 0
    words = list(argv)
    skip = words[:1] == ["--skip-release-command"]
    words = words[1:] if skip else words
    secondary = words[:1] == ["--secondary"]
    words = words[1:] if secondary else words
    if len(words) not in (2, 3):
        agent.fail(DEPLOY_USAGE)
    try:
        deploy(agent, DeployRequest(words[0], words[1], words[2] if len(words) == 3 else "", skip, secondary))
    except Failed as failure:
        notify.deploy_failed(agent, words[0], str(failure), failure.rolled_back)
        raise
    return 0


def main(argv: list[str], system: System, config: Config) -> int:
    agent = Agent(system, config)
    try:
        return dispatch(agent, argv)
    except Failed as failure:
        agent.report_failure(failure)
        return 1
