"""The checks before anything changes: the lock, memory, disk, DNS and the certificate.

Each one either passes or stops the deploy with a message that names the figures and
says that the live release keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import APT_WAIT_SECONDS, DISK_MARGIN_MIB, LOCK_WAIT_SECONDS, MEMORY_MARGIN_MIB, NEW_VENV_MIB
from agent.context import Agent

#: apt and dpkg hold fcntl locks on these while they run.
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")
#: No cgroup limit at all reads as "max", or as a number this large (cgroup v1).
NO_LIMIT = 1 << 50


def take_lock(agent: Agent) -> None:
    """One deploy at a time; a second one waits for the first."""
    system, waited = agent.system, 0
    while not system.try_lock(agent.config.layout.lock_file):
        if waited >= LOCK_WAIT_SECONDS:
            agent.fail("another deploy has held the lock for 10 minutes")
        system.sleep(1)
        waited += 1


# Memory


def available_memory_mib(agent: Agent) -> int:
    """MemAvailable, or less where a cgroup limit holds this machine (a container)."""
    system = agent.system
    meminfo = system.read_text("/proc/meminfo") or ""
    available = next(
        (int(line.split()[1]) // 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")), 0
    )
    for directory, limit_file, usage_file, inactive_key in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit_text = system.read_text(f"{directory}/{limit_file}")
        usage_text = system.read_text(f"{directory}/{usage_file}")
        if limit_text is None or usage_text is None or not limit_text.strip().isdigit():
            continue
        limit = int(limit_text)
        if limit >= NO_LIMIT:
            continue
        stat = system.read_text(f"{directory}/memory.stat") or ""
        inactive = next((int(line.split()[1]) for line in stat.splitlines() if line.split()[:1] == [inactive_key]), 0)
        available = min(available, (limit - int(usage_text) + inactive) // 1048576)
    return available


def unit_rss_kib(agent: Agent, unit: str) -> list[int]:
    """The resident memory of a unit's main process and its children, in KiB; none when it does not run."""
    main = agent.system.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
    if main in ("", "0"):
        return []
    listing = agent.system.run(["ps", "-o", "rss=", "-p", main, "--ppid", main]).stdout.split()
    return [int(kib) for kib in listing if kib.isdigit()]


def check_memory(agent: Agent, release_id: str, process_units: list[str] | None = None) -> None:
    """The candidate and the release's processes as candidates, then `workers` new workers, fit beside what runs now."""
    config = agent.config
    listing = unit_rss_kib(agent, config.layout.service_unit)
    if not listing:
        return  # nothing live to measure a process by
    rss = sum(listing) // 1024
    each = rss // len(listing)
    available = available_memory_mib(agent)
    # The candidate (a master and a worker) runs beside the live release; after the switch,
    # `workers` workers and a master take the place of the live release's processes. Each of the
    # release's processes runs a while as a candidate beside its live one: as large as that one is
    # now, or as a web process when none runs yet.
    units = process_units or []
    measured = [sum(unit_rss_kib(agent, unit)) // 1024 for unit in units]
    processes = sum(size if size else each for size in measured)
    whole = each * (config.workers + 1)
    need = max(whole - rss, each * 2) + processes
    if need + MEMORY_MARGIN_MIB > available:
        also = f" and {len(units)} processes about {processes} MiB as candidates" if units else ""
        fewer = "Set workers lower, run fewer processes" if units else "Set workers lower"
        agent.fail(
            f"release {release_id}: {config.workers} workers need about {whole} MiB ({each} MiB a process, "
            f"as the live release uses){also}, {need} MiB more than now, and {available} MiB are free. "
            f"{fewer} or choose a larger size; the live release keeps serving."
        )


# Disk


@dataclass(frozen=True)
class DiskNeed:
    free: int
    release: int
    venv: int

    @property
    def total(self) -> int:
        return self.release + self.venv + DISK_MARGIN_MIB


def free_mib(agent: Agent, path: str) -> int:
    lines = agent.system.run(["df", "-m", "--output=avail", path]).stdout.split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def tree_mib(agent: Agent, path: str) -> int:
    words = agent.system.run(["du", "-sm", path]).stdout.split()
    return int(words[0]) if words and words[0].isdigit() else 0


def disk_need(agent: Agent, unpacked_bytes: int, venv_is_new: bool) -> DiskNeed:
    config = agent.config
    venv = 0
    if venv_is_new:
        # A new virtualenv takes about what the live one does.
        live_venv = agent.system.readlink(f"{config.layout.current}/app/.venv")
        venv = tree_mib(agent, live_venv) if live_venv and agent.system.is_dir(live_venv) else NEW_VENV_MIB
    return DiskNeed(free=free_mib(agent, config.layout.releases), release=unpacked_bytes // 1048576 + 1, venv=venv)


def check_disk(agent: Agent, release_id: str, unpacked_bytes: int, venv_is_new: bool) -> None:
    """Before unpacking: the release (and its virtualenv, when it must be made) fits on the disk."""
    config = agent.config
    need = disk_need(agent, unpacked_bytes, venv_is_new)
    if need.total > need.free:
        agent.fail(
            f"release {release_id}: the disk holding {config.layout.root} has {need.free} MiB free, and this release "
            f"needs about {need.total} MiB (the release {need.release} MiB, a new virtualenv {need.venv} MiB, "
            f"{DISK_MARGIN_MIB} MiB to spare). Free some space (sudo journalctl --vacuum-size=100M; old backups "
            f"in {config.layout.backups}) or choose a larger size; nothing was unpacked and the live release keeps "
            "serving"
        )


# DNS


def check_dns(agent: Agent, public_ipv4: str) -> None:
    """Every name resolves to the public address, or the deploy stops before any ACME order."""
    for name in agent.config.host_names:
        found = agent.system.run(["getent", "ahostsv4", name]).stdout.split("\n")
        addresses = sorted({line.split()[0] for line in found if line.strip()})
        if public_ipv4 not in addresses:
            zone = agent.config.dns_zone
            if zone:
                # The program wrote the record: what is missing is the zone's delegation, or time.
                fix = (
                    f"The stack's A record in {zone} points at it: the domain's registrar must name "
                    "DigitalOcean's nameservers (ns1, ns2 and ns3.digitalocean.com), and a new record can take "
                    "up to its TTL (300 s) to be seen; deploy again once it resolves."
                )
            else:
                fix = (
                    f"Point its A record at {public_ipv4} where the domain's DNS is (or set dnsZone to a zone "
                    "DigitalOcean holds), then deploy again."
                )
            agent.fail(
                f"https: {name} resolves to {' '.join(addresses) or 'nothing'}, not to this server's address "
                f"{public_ipv4}. {fix} No certificate was requested and the live site is unchanged."
            )


# apt, and the tools the deploy installs from PyPI


def wait_for_apt(agent: Agent) -> None:
    """Before installing: an apt or dpkg run (unattended-upgrades, say) finishes first, for up to 10 minutes."""
    system, waited = agent.system, 0
    while any(system.held_by_another(path) for path in DPKG_LOCKS):
        if waited % 30 == 0:
            agent.log("waiting for apt/dpkg to finish: it holds /var/lib/dpkg/lock-frontend")
        if waited >= APT_WAIT_SECONDS:
            agent.fail("apt/dpkg has held its lock for 10 minutes; deploy again once it is done")
        system.sleep(2)
        waited += 2
    if waited:
        agent.log(f"apt/dpkg finished after {waited} s")


def install_tool(agent: Agent, package: str, version: str, program: str) -> bool:
    """`package==version` from PyPI, in a virtualenv of its own that holds `program`."""
    system = agent.system
    if system.exists(program):
        return True
    venv = program.rsplit("/bin/", 1)[0]
    wait_for_apt(agent)
    agent.log(f"installing {package} {version}")
    system.remove(venv)
    if not system.run(["python3", "-m", "venv", venv], output="stderr").ok:
        return False
    pip = [f"{venv}/bin/pip", "install", "--quiet", "--no-cache-dir", "--disable-pip-version-check"]
    return system.run([*pip, f"{package}=={version}"], output="stderr").ok
