"""The state directory on its DigitalOcean Volume: mounted, as large as the Volume, moved there once."""

from __future__ import annotations

from collections.abc import Sequence

from agent import manifest
from agent.context import Agent
from agent.manifest import Entry

#: How long a deploy waits for the Volume's device to appear, in seconds.
ATTACH_WAIT_SECONDS = 30


def holds_data(agent: Agent, directory: str) -> bool:
    """Anything in it but the file system's lost+found."""
    return agent.system.is_dir(directory) and any(name != "lost+found" for name in agent.system.listdir(directory))


def is_mounted(agent: Agent) -> bool:
    return agent.system.run(["mountpoint", "-q", agent.config.layout.state_dir]).ok


def unused_mib(agent: Agent) -> int:
    """MiB of the Volume that its file system does not cover yet; 0 without a mounted Volume."""
    device = agent.config.state_device
    if not device or not is_mounted(agent):
        return 0
    size = agent.system.run(["blockdev", "--getsize64", device]).stdout.strip()
    header = agent.system.run(["dumpe2fs", "-h", device]).stdout
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    try:
        covered = int(fields["Block count"]) * int(fields["Block size"])
        return (int(size) - covered) // 1048576
    except (KeyError, ValueError):
        return 0


def ensure_state_volume(agent: Agent, units: Sequence[Entry]) -> None:
    """The state directory is the Volume's file system, mounted and as large as the Volume."""
    config, system = agent.config, agent.system
    device = config.state_device
    if not device:
        return
    waited = 0
    while not system.run(["test", "-b", device]).ok:
        if waited >= ATTACH_WAIT_SECONDS:
            agent.fail(
                f"the Volume is not attached: {device} does not exist after 30 s. "
                "Attach it (pulumi up does), or set volumeSize to 0; nothing has changed"
            )
        system.sleep(2)
        waited += 2
    # The units come with the release: a droplet that predates its Volume gets them here.
    applied = manifest.apply(system, units)
    manifest.run_handlers(system, applied.notified)
    mount, formatting = config.layout.state_mount_unit, config.layout.state_format_unit
    why = f"the Volume did not mount at {config.layout.state_dir} (journalctl -u {mount} -u {formatting})"
    if not is_mounted(agent):
        if holds_data(agent, config.layout.state_dir):
            move_state_to_volume(agent, f"{config.layout.state_dir}.before-volume", why)
        elif not agent.systemctl("enable", "--quiet", "--now", mount):
            agent.fail(why)
    mounted_from = system.run(["stat", "-c", "%Hd:%Ld", config.layout.state_dir]).stdout.strip()
    device_number = system.run(["stat", "-L", "-c", "%Hr:%Lr", device]).stdout.strip()
    if mounted_from != device_number:
        agent.fail(f"{config.layout.state_dir} is mounted, but not from the Volume {device}")
    # A Volume made larger (volumeSize) takes its file system along, online; a failure is reported, not fatal.
    if unused_mib(agent) > 0:
        agent.log(f"growing the file system on the Volume to {config.state_volume_gib} GiB")
        system.run(["/usr/lib/systemd/systemd-growfs", config.layout.state_dir], output="stderr")
    size = system.run(["df", "-h", "--output=size", config.layout.state_dir]).stdout.split()
    agent.log(f"state: {config.layout.state_dir} on the Volume ({size[-1] if size else '?'})")


def move_state_to_volume(agent: Agent, aside: str, why_not_mounted: str) -> None:
    """A droplet that kept its state on its own disk moves it to the Volume, once."""
    config, system = agent.config, agent.system
    if system.exists(aside):
        agent.fail(f"{aside} exists from an earlier move to the Volume; move it away first")
    agent.log(f"moving the state in {config.layout.state_dir} onto the Volume; the app stops meanwhile")
    agent.systemctl("stop", config.layout.socket_unit, config.layout.service_unit)
    system.rename(config.layout.state_dir, aside)
    if not agent.systemctl("enable", "--quiet", "--now", config.layout.state_mount_unit):
        problem = why_not_mounted
    elif holds_data(agent, config.layout.state_dir):
        problem = (
            f"the Volume already holds data and so does {config.layout.state_dir} on the droplet's disk; keep one "
            "(copy what you need onto the Volume), then deploy again"
        )
    else:
        system.run(["cp", "-a", f"{aside}/.", f"{config.layout.state_dir}/"], output="stderr")
        agent.systemctl("start", config.layout.socket_unit)
        agent.log(f"the state is on the Volume now; the copy on the droplet's disk stays in {aside}")
        return
    # Back as it was, and the Volume's units gone, so that nothing mounts it over the state.
    agent.systemctl("disable", "--quiet", "--now", config.layout.state_mount_unit)
    system.remove(f"/etc/systemd/system/{config.layout.state_mount_unit}")
    system.remove(f"/etc/systemd/system/{config.layout.state_format_unit}")
    agent.systemctl("daemon-reload")
    system.rename(aside, config.layout.state_dir)
    agent.systemctl("start", config.layout.socket_unit)
    agent.fail(f"{problem}. The app serves {config.layout.state_dir} as it was")
