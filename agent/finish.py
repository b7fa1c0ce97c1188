"""The finish phase: prune what no kept release uses, and report the outcome on stdout."""

from __future__ import annotations

from agent import processes, volume
from agent.context import Agent


def prune(agent: Agent) -> None:
    """Keep the newest releases (and the live and the previous one); drop static files and virtualenvs
    that no kept release uses."""
    config, system = agent.config, agent.system
    keep = {agent.live_release(), (system.read_text(config.layout.previous) or "").strip()}
    releases = [
        f"{config.layout.releases}/{name}"
        for name in system.listdir(config.layout.releases)
        if not name.startswith(".")
    ]
    releases = [path for path in releases if system.is_dir(path)]
    newest_first = sorted(releases, key=system.mtime, reverse=True)
    for old in newest_first[config.releases_to_keep :]:
        if old not in keep:
            system.remove(old)
    kept = [
        f"{config.layout.releases}/{name}"
        for name in system.listdir(config.layout.releases)
        if not name.startswith(".")
    ]
    # A page of any kept release finds its static files.
    digests = {
        line.split(" ", 1)[0]
        for release in kept
        for line in (system.read_text(f"{release}/server/static-manifest") or "").splitlines()
    }
    for stored in system.listdir(config.layout.assets):
        if stored not in digests and system.is_dir(f"{config.layout.assets}/{stored}"):
            system.remove(f"{config.layout.assets}/{stored}")
    used = {system.readlink(f"{release}/app/.venv") for release in kept}
    for venv in system.listdir(config.layout.venvs):
        path = f"{config.layout.root}/venvs/{venv}"
        if path not in used and system.is_dir(path):
            system.remove(path)


def public_ipv4(agent: Agent) -> str:
    return (agent.system.read_text(agent.config.layout.public_ipv4_file) or "").strip()


def public_url(agent: Agent, https: bool) -> str:
    return f"{'https' if https else 'http'}://{agent.config.domain or public_ipv4(agent)}/"


def warnings(agent: Agent) -> list[str]:
    """What serves but needs a hand."""
    found = []
    if not agent.system.run(["systemctl", "is-active", "--quiet", "fail2ban"]).ok:
        found.append("fail2ban is not running (journalctl -u fail2ban): failed SSH logins are not banned")
    unused = volume.unused_mib(agent)
    if unused > 0:
        found.append(
            f"the Volume has {unused} MiB its file system does not use: growing it online failed"
            f" (the deploy's log); sudo resize2fs {agent.config.state_device}"
        )
    return found


def report_outcome(agent: Agent, release_id: str, https: bool, spec: processes.Spec | None = None) -> None:
    """Stdout, read by `parse_deploy_output`: the release id, the URL, a line for each process and
    scheduled job, a line for each warning."""
    agent.system.say(release_id)
    agent.system.say(public_url(agent, https))
    for line in processes.summary(agent, spec or processes.Spec()):
        agent.log(line)
        agent.system.say(line)
    for warning in warnings(agent):
        agent.log(f"WARNING: {warning}")
        agent.system.say(f"warning: {warning}")
