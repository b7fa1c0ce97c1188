"""The admin verbs: rollback, run, logs, backup and restore (from this server's backups, or from off-site)."""

from __future__ import annotations

from agent import processes, publish
from agent.context import Agent
from agent.release import run_in_release


def rollback(agent: Agent, release_id: str | None) -> None:
    """Back to the release that was live before (or `release_id`), through the same candidate checks."""
    config, system = agent.config, agent.system
    if release_id:
        target = f"{config.layout.releases}/{release_id}"
    else:
        previous = system.read_text(config.layout.previous)
        if previous is None:
            agent.fail("no previous release is recorded")
        target = previous.strip()
    name = target.rsplit("/", 1)[-1]
    if not system.is_dir(target):
        agent.fail(
            f"release {name} is not on this server; releases: {chr(10).join(system.listdir(config.layout.releases))}"
        )
    try:
        publish.activate(agent, target)
    finally:
        publish.end_drain(agent)
    agent.log(f"rolled back to release {name}")
    system.say(name)


def run(agent: Agent, argv: list[str]) -> int:
    """A one-off command as the app's user in the live release, with its environment and sandbox."""
    live = agent.live_release()
    if not live:
        agent.fail("no release is live yet: deploy one first")
    return run_in_release(agent, live, argv, interactive=True)


def logs(agent: Agent, follow: bool, lines: int) -> None:
    """The site's requests (with their ids) and nginx's errors, then the journal of the app, nginx and
    the deploy's own units; `follow` keeps showing them."""
    config, system = agent.config, agent.system
    files = [config.layout.access_log, "/var/log/nginx/error.log"]
    units: list[str] = []
    for unit in (
        config.layout.service_unit,
        config.layout.socket_unit,
        f"{config.layout.candidate_unit}.service",
        "nginx.service",
        f"{config.layout.backup_unit}.service",
        f"{config.layout.renew_unit}.service",
        # The app's processes and scheduled jobs, and their candidates: journalctl matches these patterns.
        f"{config.app_name}-process-*.service",
        f"{config.app_name}-schedule-*.service",
        f"{config.app_name}-candidate-*.service",
    ):
        units += ["-u", unit]
    journal = ["journalctl", "--no-pager", "--output=short-iso", f"--lines={lines}"]
    if follow:
        # All at once, each file's lines saying where they come from; nginx writes its access log every 2 s.
        for file in files:
            system.background(["tail", "-n", str(lines), "-F", file], f"{file}: ")
        system.run([*journal, "--follow", *units], output="inherit")
        return
    system.say(
        f"== {config.layout.access_log}: the last {lines} requests (id= is the request id the app gets as X-Request-ID)"
    )
    show_tail(agent, config.layout.access_log, lines)
    system.say(f"== /var/log/nginx/error.log: the last {lines} lines")
    show_tail(agent, "/var/log/nginx/error.log", lines)
    system.say(
        f"== the journal of {config.layout.service_unit}, its processes and jobs, nginx and the deploy's units: "
        f"the last {lines} lines "
        f"(journalctl {' '.join(units)})"
    )
    system.run([*journal, *units], output="inherit")


def show_tail(agent: Agent, path: str, lines: int) -> None:
    shown = agent.system.run(["tail", "-n", str(lines), path])
    if not shown.ok:
        agent.system.say("(none yet)")
    elif shown.stdout:
        agent.system.say(shown.stdout.removesuffix("\n"))


def newest_backup(agent: Agent) -> str:
    """The newest backup's name (without .tar.gz), or ""."""
    names = [name for name in agent.system.listdir(agent.config.layout.backups) if name.endswith(".tar.gz")]
    return names[-1].removesuffix(".tar.gz") if names else ""


def take_backup(agent: Agent) -> str:
    """The state directory backed up now, by the timer's own service; the backup's name."""
    config = agent.config
    unit = f"{config.layout.backup_unit}.service"
    if not agent.system.exists(f"/etc/systemd/system/{unit}"):
        agent.fail("backups are off on this server (backupDays is 0, or no release has been deployed)")
    if not agent.systemctl("start", unit):
        agent.system.run(["journalctl", "-u", unit, "-n", "20", "--no-pager"], output="stderr")
        agent.fail(f"the backup of {config.layout.state_dir} failed (output above)")
    return newest_backup(agent)


def backup(agent: Agent) -> None:
    agent.system.say(take_backup(agent))


def restore_offsite(agent: Agent, wanted: str | None) -> None:
    """The newest off-site copy, or `wanted`, fetched, checked, decrypted with the age identity on stdin,
    and restored as `restore` restores a backup of this server. The identity is written nowhere."""
    config, system = agent.config, agent.system
    if not (config.offsite and system.exists(config.layout.offsite_file)):
        agent.fail("off-site copies are off on this server (offsiteRegion is empty, or no release has been deployed)")
    identity = system.stdin_text() or ""
    if "AGE-SECRET-KEY-1" not in identity:
        agent.fail(
            "no age identity on stdin: run the stack's restore_offsite output, which pipes `pulumi config get "
            'offsiteIdentity` into this command: eval "$(pulumi stack output restore_offsite) [BACKUP]"'
        )
    offsite = [config.layout.offsite_python, config.layout.offsite_script]
    listed = system.run([*offsite, "list", config.layout.offsite_file])
    if not listed.ok:
        system.log(listed.stderr.rstrip())
        agent.fail("the off-site backups cannot be listed (above); nothing has changed")
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    agent.log(f"off-site backups: {' '.join(names) or 'none'}")
    if not names:
        agent.fail("the off-site bucket holds no backup to restore")
    name = (wanted or names[-1]).removesuffix(".tar.gz")
    if name not in names:
        agent.fail(f"no off-site backup '{wanted}'; off-site backups: {' '.join(names)}")
    system.make_dirs(config.layout.backups, 0o710, f"root:{config.layout.app_user}")
    archive = f"{config.layout.backups}/{name}.tar.gz"
    encrypted = f"{config.layout.backups}/.{name}.tar.gz.age"
    if not system.run([*offsite, "fetch", config.layout.offsite_file, name, encrypted], output="stderr").ok:
        agent.fail(f"the off-site backup {name} could not be fetched whole (above); nothing has changed")
    decrypt = ["age", "--decrypt", "--identity", "-", "--output", f"{archive}.partial", encrypted]
    decrypted = system.run(decrypt, stdin=identity, umask=0o077)
    system.remove(encrypted)
    if not decrypted.ok:
        system.remove(f"{archive}.partial")
        agent.fail(
            f"the off-site backup {name} does not decrypt with the identity given ({decrypted.stderr.strip()}); "
            "is it the stack's offsiteIdentity? Nothing has changed"
        )
    system.rename(f"{archive}.partial", archive)
    # Its off-site copy is the one it came from: not uploaded again.
    system.write_file(
        f"{config.layout.backups}/{name}.tar.gz.offsite", f"{name}.tar.gz.age (restored from it)\n", mode=0o600
    )
    agent.log(f"fetched the off-site backup {name}, checked and decrypted")
    restore(agent, name)


def restore(agent: Agent, wanted: str | None) -> None:
    """The newest backup, or `wanted` (a name that `ls BACKUPS` shows), back into the state directory,
    with the app stopped meanwhile, after backing up the state as it is."""
    config, system = agent.config, agent.system
    if not wanted:
        name = newest_backup(agent)
        if not name:
            agent.fail(f"no backup in {config.layout.backups} to restore")
    else:
        name = wanted.removesuffix(".tar.gz")
        if "/" in wanted or not system.exists(f"{config.layout.backups}/{name}.tar.gz"):
            listed = "".join(f"{n} " for n in system.listdir(config.layout.backups) if n.endswith(".tar.gz"))
            agent.fail(f"no backup '{wanted}' in {config.layout.backups}; backups: {listed}")
    archive = f"{config.layout.backups}/{name}.tar.gz"
    if not system.run(["tar", "-tzf", archive]).ok:
        agent.fail(f"the backup {archive} cannot be read; nothing has changed")
    agent.log("backing up the state as it is now, before restoring")
    before = take_backup(agent)
    agent.log(f"restoring {name} into {config.layout.state_dir}; the app stops meanwhile")
    publish.stop_candidate(agent)
    agent.systemctl("stop", config.layout.socket_unit, config.layout.service_unit)
    # The processes and jobs write the state too.
    stopped = processes.stop_all(agent)
    for entry in system.listdir(config.layout.state_dir):
        if entry != "lost+found":
            system.remove(f"{config.layout.state_dir}/{entry}")
    system.run(["tar", "-xzf", archive, "-C", config.layout.state_dir, "--no-same-owner"], output="stderr")
    owner = f"{config.layout.app_user}:{config.layout.app_user}"
    restored = [
        f"{config.layout.state_dir}/{entry}"
        for entry in system.listdir(config.layout.state_dir)
        if entry != "lost+found"
    ]
    if restored:
        system.run(["chown", "-R", "-h", owner, *restored])
    system.run(["chown", owner, config.layout.state_dir])
    system.run(["chmod", "0750", config.layout.state_dir])
    agent.systemctl("start", config.layout.socket_unit)
    processes.start_all(agent, stopped)
    if not publish.wait_healthy(agent):
        agent.fail(
            f"after restoring {name}, GET {config.health_path} does not answer 2xx; "
            f"the state as it was before the restore is the backup {before}"
        )
    agent.log(f"restored {name}; the state before it is the backup {before}")
    system.say(name)
