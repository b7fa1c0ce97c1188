"""The rehearsal machine: a Debian 13 system booted with systemd-nspawn, the droplet's stand-in.

It boots with systemd as PID 1 in a network namespace of its own (a veth pair,
a /30 subnet, masquerade for apt and pip), and cloud-init reads the real
user-data from a NoCloud seed. Everything it creates on the host is written to a
state file first, so `down` (from any process) undoes exactly that. Several
droplets are several machines, each in a `Slot` of its own: a name, a subnet and a
state directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from core.ssh_host_keys import HostKeys, known_hosts_line, make_host_keys

Progress = Callable[[str], None]

SUITE = "trixie"
#: What a DigitalOcean Ubuntu image has that matters here: systemd, sshd, cloud-init, a network renderer.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "dbus",
    "openssh-server",
    "cloud-init",
    "iproute2",
    "sudo",
    "python3",
    "curl",
    "ca-certificates",
    "netplan.io",
    # mkfs.ext4 and resize2fs, for the state Volume.
    "e2fsprogs",
)
#: Extra certificate authorities the host trusts (a proxy in front of the package registries, say).
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")

NAME = "flaskdroplet"
PREFIX = 30
#: Every address the rehearsal gives out: its machines' subnets, and its database's.
NETWORK = "10.213.0.0/16"
#: The machines' subnets, one /30 each, in this range.
MACHINES_NETWORK = "10.213.7.0/24"
#: Machines booted at once, at most: each takes a droplet's memory.
MAX_MACHINES = 4

STATE_DIR = Path(os.environ.get("REHEARSAL_STATE_DIR", "/var/lib/flask-droplet-rehearsal"))


@dataclass(frozen=True)
class Slot:
    """Where one machine lives on the host: its name, its /30 subnet and its state directory.

    Slot 0 is the one machine of a single-droplet rehearsal; a fleet's machines take slots 0 to N-1.
    """

    index: int = 0

    @property
    def name(self) -> str:
        # ve-NAME is the host's side of its veth pair: at most 15 characters, the kernel's limit.
        return NAME if self.index == 0 else f"flaskdrop-{self.index + 1}"

    @property
    def veth(self) -> str:
        return f"ve-{self.name}"

    @property
    def subnet(self) -> str:
        return f"10.213.7.{4 * self.index}/{PREFIX}"

    @property
    def host_address(self) -> str:
        return f"10.213.7.{4 * self.index + 1}"

    @property
    def guest_address(self) -> str:
        return f"10.213.7.{4 * self.index + 2}"

    @property
    def directory(self) -> Path:
        """The machine's state: its state file, root file system, console log and deploy state."""
        return STATE_DIR if self.index == 0 else STATE_DIR / "machines" / self.name


FIRST = Slot(0)
HOST_VETH = FIRST.veth
HOST_ADDRESS = FIRST.host_address
GUEST_ADDRESS = FIRST.guest_address
SUBNET = FIRST.subnet
#: The machines' Volumes: sparse files, each given to the machine as a loop device.
VOLUME_DIR = STATE_DIR / "volumes"
CACHE_DIR = Path(os.environ.get("REHEARSAL_CACHE_DIR", "/var/cache/flask-droplet-rehearsal"))

BOOT_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Size:
    """What a droplet size gives the machine: its vCPUs and its memory (no swap, as on a droplet)."""

    cpus: int
    memory_bytes: int


def droplet_size(slug: str) -> Size | None:
    """The CPUs and memory of a DigitalOcean size slug (s-1vcpu-1gb, s-1vcpu-512mb-10gb, s-2vcpu-4gb-intel)."""
    match = re.search(r"(\d+)vcpu-(\d+)(gb|mb)", slug)
    if match is None:
        return None
    unit = 1024**3 if match[3] == "gb" else 1024**2
    return Size(cpus=int(match[1]), memory_bytes=int(match[2]) * unit)


#: The memory cgroup files for the limit, the swap limit and the peak: cgroup v2, then v1.
_CGROUP_FILES = {
    2: ("memory.max", "memory.swap.max", "memory.peak"),
    1: ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max_usage_in_bytes"),
}


def memory_cgroup_path(name: str = NAME) -> tuple[Path, int] | None:
    """A memory cgroup for the machine: under cgroup v2's root, or beside this process in cgroup v1's hierarchy."""
    root = Path("/sys/fs/cgroup")
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return root / f"{name}-rehearsal", 2
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "memory" in names.split(",") and (root / "memory").is_dir():
            return root / "memory" / path.lstrip("/") / f"{name}-rehearsal", 1
    return None


#: The guest's list of its online CPUs, and the unit that mounts it over the host's.
CPU_ONLINE = "/etc/flask-droplet-rehearsal/cpu-online"
CPU_ONLINE_UNIT = "sys-devices-system-cpu-online.mount"

#: systemd-nspawn processes this process started, kept so that they are reaped, not left as zombies.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


class RehearsalError(RuntimeError):
    """Something about the rehearsal machine failed; the message says what and where to look."""


@dataclass
class MachineState:
    """What `up` created on the host, so that `down` can remove exactly that."""

    instance_id: str
    root: str
    nspawn_pid: int | None = None
    memory_cgroup: str | None = None
    """The cgroup that holds the machine to its droplet size's memory, and its version."""
    cgroup_version: int = 0
    cpus: int | None = None
    volume_loop: str | None = None
    """The loop device backing the machine's Volume, and where the guest sees it."""
    volume_device: str | None = None
    undo: list[list[str]] = field(default_factory=list)
    """Each change `up` (and what serves the machine) made on the host, as the step that undoes it (`UNDO`),
    in the order made: `down` undoes them last first. Recorded before the change, so a crash between the two
    leaves a step that finds nothing to undo, never a change nobody undoes."""


@dataclass(frozen=True)
class Volume:
    """A DigitalOcean Volume as the machine gets it: a block device at the path DigitalOcean gives it."""

    name: str
    gib: int

    @property
    def image(self) -> Path:
        return VOLUME_DIR / f"{self.name}.img"

    @property
    def guest_device(self) -> str:
        return f"/dev/disk/by-id/scsi-0DO_Volume_{self.name}"


@dataclass(frozen=True)
class CloudInitResult:
    status: str
    errors: list[str]
    recoverable_errors: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return self.status == "done" and not self.errors


def run(argv: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RehearsalError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def host_ca_certificates() -> list[Path]:
    return sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []


def image_key() -> str:
    """Changes when the image would: suite, packages or the host's extra CAs."""
    digest = hashlib.sha256(f"{SUITE}\n{','.join(PACKAGES)}\n".encode())
    for cert in host_ca_certificates():
        digest.update(cert.read_bytes())
    return digest.hexdigest()[:16]


def build_image(progress: Progress) -> Path:
    """The cached root filesystem, built with mmdebstrap the first time (about a minute)."""
    image = CACHE_DIR / f"rootfs-{SUITE}-{image_key()}"
    if image.is_dir():
        progress(f"image: cached at {image}")
        return image
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    building = CACHE_DIR / f".{image.name}.building"
    shutil.rmtree(building, ignore_errors=True)
    progress(f"image: building Debian {SUITE} with mmdebstrap (about a minute)")
    run(
        ["mmdebstrap", "--variant=apt", f"--include={','.join(PACKAGES)}", SUITE, str(building)],
        timeout=1200,
    )
    # cloud-init looks only at the NoCloud seed, as a droplet looks only at DigitalOcean's.
    (building / "etc/cloud/cloud.cfg.d/90-rehearsal.cfg").write_text("datasource_list: [ NoCloud, None ]\n")
    for cert in host_ca_certificates():
        shutil.copy2(cert, building / "usr/local/share/ca-certificates" / cert.name)
    run(["chroot", str(building), "update-ca-certificates"], timeout=120)
    # Every boot is a new machine: cloud-init makes the host keys, systemd the machine id.
    for key in (building / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (building / "etc/machine-id").write_text("")
    building.rename(image)
    return image


def _read_state(slot: Slot) -> MachineState | None:
    path = slot.directory / "machine.json"
    return MachineState(**json.loads(path.read_text())) if path.exists() else None


def _write_state(slot: Slot, state: MachineState) -> None:
    slot.directory.mkdir(parents=True, exist_ok=True)
    path = slot.directory / "machine.json"
    # Whole or not at all: another process (`scripts/rehearse down`, a test) may read it at any moment.
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(asdict(state), indent=2))
    partial.replace(path)


def machines_up() -> list[Slot]:
    """The slots that hold a machine's state now, whatever process booted them; the first slot first."""
    return [slot for slot in map(Slot, range(MAX_MACHINES)) if (slot.directory / "machine.json").exists()]


def _host_nameservers() -> list[str]:
    servers = []
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
            servers.append(parts[1])
    return servers or ["1.1.1.1"]


def _guest_pid(nspawn_pid: int) -> int | None:
    """The guest's systemd: the child of the systemd-nspawn process."""
    children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children")
    try:
        pids = children.read_text().split()
    except OSError:
        return None
    return int(pids[0]) if pids else None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Machine:
    """One rehearsal machine on this host: the one droplet, or one of several in their own slots."""

    def __init__(self, slot: Slot = FIRST) -> None:
        self.slot = slot
        self.state = _read_state(slot)

    @property
    def address(self) -> str:
        return self.slot.guest_address

    @property
    def host_address(self) -> str:
        """The host's address on the machine's subnet: where the machine's traffic to the host comes from."""
        return self.slot.host_address

    @property
    def private_key(self) -> Path:
        """The key every machine of the rehearsal lets the deploy user in with (their user-data is the same)."""
        return STATE_DIR / "id_ed25519"

    @property
    def instance_id(self) -> str:
        if self.state is None:
            raise RehearsalError("no rehearsal machine is up; run scripts/rehearse")
        return self.state.instance_id

    @property
    def known_hosts(self) -> Path:
        """The `known_hosts` file that pins this machine's host key for its address (every SSH to it reads it)."""
        return self.slot.directory / "known_hosts"

    def new_host_keys(self) -> HostKeys:
        """Host keys made for a new machine, as the program makes a droplet's: kept (root only) and pinned."""
        keys = make_host_keys()
        self.slot.directory.mkdir(parents=True, exist_ok=True)
        path = self.slot.directory / "host-keys.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(keys.as_dict()))
        self.known_hosts.write_text(known_hosts_line(self.address, keys.ed25519_public) + "\n")
        return keys

    def host_keys(self) -> HostKeys:
        """The host keys this machine was made with."""
        return HostKeys(**json.loads((self.slot.directory / "host-keys.json").read_text()))

    def public_key(self) -> str:
        """The key pair the rehearsal logs in with, made on first use."""
        if not self.private_key.exists():
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rehearsal", "-f", str(self.private_key)])
        return self.private_key.with_suffix(".pub").read_text().strip()

    def is_up(self) -> bool:
        return self.state is not None and _alive(self.state.nspawn_pid)

    def up(
        self,
        image: Path,
        user_data: str,
        progress: Progress,
        trusted_ca: Path | None = None,
        hosts: dict[str, str] | None = None,
        vendor_data: str | None = None,
        size: Size | None = None,
        volume: Volume | None = None,
    ) -> None:
        """Boot a fresh machine from `image` with this user-data; any previous machine goes first.

        `trusted_ca` joins the machine's certificate authorities and `hosts` its /etc/hosts: what
        the rehearsal's own ACME server and test names need, which a droplet gets from the world.
        `vendor_data` is what a cloud adds to a first boot (DigitalOcean's metrics agent, say).
        `size` holds the machine to a droplet's CPUs and memory, where this host's cgroups allow.
        `volume` is attached from the first boot; a Volume kept by `down(keep_volumes=True)` comes
        back with its data, as it does for a droplet that replaces another.
        """
        self.down(progress, keep_volumes=True)
        instance_id = f"rehearsal-{uuid.uuid4().hex[:12]}"
        root = self.slot.directory / "machine" / "rootfs"
        self.state = MachineState(instance_id=instance_id, root=str(root))
        _write_state(self.slot, self.state)
        if size is not None:
            self._limit(size, progress)
        # The machine writes to an overlay, so the cached image stays clean and nothing is copied.
        machine_dir = root.parent
        self._will_undo("remove-tree", str(machine_dir))
        for directory in ("rootfs", "upper", "work"):
            (machine_dir / directory).mkdir(parents=True, exist_ok=True)
        self._will_undo("unmount", str(root))
        options = f"lowerdir={image},upperdir={machine_dir / 'upper'},workdir={machine_dir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", options, str(root)])
        self._seed(root, instance_id, user_data, vendor_data)
        if trusted_ca is not None:
            shutil.copy(trusted_ca, root / "usr/local/share/ca-certificates/flask-droplet-rehearsal-acme.crt")
            run(["chroot", str(root), "update-ca-certificates"], timeout=120)
        if hosts:
            with (root / "etc/hosts").open("a") as etc_hosts:
                etc_hosts.writelines(f"{address} {name}\n" for name, address in hosts.items())
        if volume is not None:
            self._attach(volume, progress)
        self._network_up()
        self._start(root, progress)

    def _attach(self, volume: Volume, progress: Progress) -> None:
        assert self.state is not None
        VOLUME_DIR.mkdir(parents=True, exist_ok=True)
        if volume.image.exists():
            progress(f"boot: attaching the Volume {volume.name}, as it was")
        else:
            progress(f"boot: attaching a new, empty Volume {volume.name} of {volume.gib} GiB")
        self.grow_volume(volume)
        self._will_undo("detach-volume")
        self.state.volume_loop = run(["losetup", "--find", "--show", str(volume.image)]).stdout.strip()
        self.state.volume_device = volume.guest_device
        _write_state(self.slot, self.state)

    def grow_volume(self, volume: Volume) -> bool:
        """Make the Volume `volume.gib` if it is smaller, as DigitalOcean resizes one; True if it grew."""
        size = volume.gib * 1024**3
        if volume.image.exists() and volume.image.stat().st_size >= size:
            return False
        with volume.image.open("ab") as image:  # sparse: the file takes only what the guest writes
            image.truncate(size)
        if self.state is not None and self.state.volume_loop is not None:
            run(["losetup", "--set-capacity", self.state.volume_loop])
        return True

    def _limit(self, size: Size, progress: Progress) -> None:
        assert self.state is not None
        self.state.cpus = min(size.cpus, os.cpu_count() or 1)
        found = memory_cgroup_path(self.slot.name)
        if found is None:
            progress("boot: no memory cgroup to limit the machine with; it may use all of this host's memory")
            _write_state(self.slot, self.state)
            return
        path, version = found
        self.state.memory_cgroup, self.state.cgroup_version = str(path), version
        self._will_undo("remove-cgroup", str(path))
        path.mkdir(exist_ok=True)
        limit, swap, _ = _CGROUP_FILES[version]
        (path / limit).write_text(str(size.memory_bytes))
        if (path / swap).exists():
            (path / swap).write_text("0" if version == 2 else str(size.memory_bytes))
        progress(f"boot: the machine has {self.state.cpus} CPU and {size.memory_bytes // 1024**2} MiB, as its droplet")

    def memory_peak(self) -> int | None:
        """The most memory the machine has used since it booted (or since `reset_memory_peak`), in bytes."""
        if self.state is None or self.state.memory_cgroup is None:
            return None
        peak = Path(self.state.memory_cgroup) / _CGROUP_FILES[self.state.cgroup_version][2]
        return int(peak.read_text()) if peak.exists() else None

    def reset_memory_peak(self) -> None:
        if self.state is not None and self.state.memory_cgroup is not None:
            peak = Path(self.state.memory_cgroup) / _CGROUP_FILES[self.state.cgroup_version][2]
            with contextlib.suppress(OSError):
                peak.write_text("0")

    def _start(self, root: Path, progress: Progress) -> None:
        progress("boot: starting systemd-nspawn")
        assert self.state is not None
        cgroup = self.state.memory_cgroup

        def join_cgroup() -> None:  # in the child, before systemd-nspawn starts: the machine is born inside
            if cgroup is not None:
                Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))

        self._will_undo("delete-link", self.slot.veth)
        self._will_undo("stop-machine")
        with (self.slot.directory / "console.log").open("a") as log:
            process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    f"--directory={root}",
                    "--boot",
                    "--network-veth",
                    f"--machine={self.slot.name}",
                    "--register=no",
                    "--keep-unit",
                    *(self._cpu_options(root, self.state.cpus) if self.state.cpus else []),
                    # The Volume at DigitalOcean's path, and under its own name as the kernel knows it.
                    *(
                        [
                            f"--bind={self.state.volume_loop}:{self.state.volume_device}",
                            f"--bind={self.state.volume_loop}",
                            # Growing its file system online takes CAP_SYS_RESOURCE, which a droplet's root has.
                            "--capability=CAP_SYS_RESOURCE",
                        ]
                        if self.state.volume_loop
                        else []
                    ),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=join_cgroup,  # only writes its own pid to a file
            )
        _STARTED[process.pid] = process
        self.state.nspawn_pid = process.pid
        _write_state(self.slot, self.state)
        deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
        veth = self.slot.veth
        while run(["ip", "link", "show", veth], check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RehearsalError(f"systemd-nspawn did not bring up {veth}; see {self.slot.directory}/console.log")
            time.sleep(0.2)
        run(["ip", "address", "add", f"{self.host_address}/{PREFIX}", "dev", veth])
        run(["ip", "link", "set", veth, "up"])

    def _cpu_options(self, root: Path, cpus: int) -> list[str]:
        """The machine runs on its droplet's CPUs only, and counts only those as online, as a droplet does:
        programs that size themselves by the online CPUs (nginx's `worker_processes auto`) see the droplet's.
        systemd-nspawn mounts /sys over its own binds, so a unit of the guest's puts the count in place."""
        first, last = self._cpu_range(cpus).split("-")
        online = root / CPU_ONLINE.lstrip("/")
        online.parent.mkdir(parents=True, exist_ok=True)
        online.write_text(f"{first}\n" if first == last else f"{first}-{last}\n")
        units = root / "etc/systemd/system"
        (units / CPU_ONLINE_UNIT).write_text(
            "[Unit]\n"
            "Description=Only the droplet's CPUs online (the rehearsal's machine)\n"
            "DefaultDependencies=no\n"
            "Before=sysinit.target\n"
            "[Mount]\n"
            f"What={CPU_ONLINE}\n"
            "Where=/sys/devices/system/cpu/online\n"
            "Type=none\n"
            "Options=bind,ro\n"
        )
        wants = units / "sysinit.target.wants"
        wants.mkdir(exist_ok=True)
        link = wants / CPU_ONLINE_UNIT
        if not link.is_symlink():
            link.symlink_to(f"../{CPU_ONLINE_UNIT}")
        return [f"--cpu-affinity={first}-{last}"]

    def host_cpus(self) -> set[int]:
        """The host CPUs the machine runs on (all of them if its size does not hold it to fewer)."""
        if self.state is None or not self.state.cpus:
            return set(range(os.cpu_count() or 1))
        first, last = self._cpu_range(self.state.cpus).split("-")
        return set(range(int(first), int(last) + 1))

    def host_pids(self) -> list[int]:
        """The host's ids of every process of the machine, from its cgroup (not systemd-nspawn, which runs it
        from the host); none without a cgroup."""
        if self.state is None or self.state.memory_cgroup is None:
            return []
        cgroups = Path(self.state.memory_cgroup).rglob("cgroup.procs")
        pids = (int(pid) for procs in cgroups for pid in procs.read_text().split())
        return [pid for pid in pids if pid != self.state.nspawn_pid]

    def _cpu_range(self, cpus: int) -> str:
        """The host CPUs the machine runs on: as many as its droplet has, each slot on the next ones."""
        host = os.cpu_count() or 1
        first = (self.slot.index * cpus) % host
        return f"{first}-{min(first + cpus, host) - 1}"

    def start_helper(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        """Start a host process that serves the machine, recorded so that `down` stops it."""
        assert self.state is not None, "start the machine first"
        pid = start_process(argv, log, env)
        self._will_undo("stop-process", str(pid))

    def reboot(self, progress: Progress, volume: Volume | Literal["keep"] | None = "keep") -> None:
        """Power the machine off and boot it again from the same disk, as a droplet reboots.

        systemd-nspawn ends when its guest shuts down, so the host starts it again. `volume`
        None boots it without its Volume (as if detached); a `Volume` is attached in its place.
        """
        self.power_off(progress, "reboot")
        assert self.state is not None
        if volume != "keep" and self.state.volume_loop is not None:
            progress("reboot: detaching the Volume")
            run(["losetup", "--detach", self.state.volume_loop])
            self.state.volume_loop = self.state.volume_device = None
            _write_state(self.slot, self.state)
        if isinstance(volume, Volume):
            self._attach(volume, progress)
        self.power_on(progress, "reboot")

    def power_off(self, progress: Progress, why: str = "power") -> None:
        """Shut the machine down and leave it off, its disk and state kept, as a droplet powered off."""
        if self.state is None or not self.is_up():
            raise RehearsalError("no rehearsal machine is up")
        pid = self.state.nspawn_pid
        assert pid is not None
        progress(f"{why}: powering off")
        self.guest(["systemctl", "poweroff"], timeout=10)
        if not _wait_gone(pid, STOP_TIMEOUT_SECONDS):
            raise RehearsalError(f"the machine did not power off within {STOP_TIMEOUT_SECONDS} s")

    def power_on(self, progress: Progress, why: str = "power") -> None:
        """Boot a machine that `power_off` left off, from the same disk."""
        assert self.state is not None, "a machine that was up before"
        progress(f"{why}: booting again")
        self._start(Path(self.state.root), progress)

    def _seed(self, root: Path, instance_id: str, user_data: str, vendor_data: str | None = None) -> None:
        seed = root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        if vendor_data is not None:
            (seed / "vendor-data").write_text(vendor_data)
        (seed / "meta-data").write_text(yaml.safe_dump({"instance-id": instance_id, "local-hostname": self.slot.name}))
        (seed / "user-data").write_text(user_data)
        network = {
            "version": 2,
            "ethernets": {
                "host0": {
                    "addresses": [f"{self.address}/{PREFIX}"],
                    "routes": [{"to": "default", "via": self.host_address}],
                    "nameservers": {"addresses": _host_nameservers()},
                }
            },
        }
        (seed / "network-config").write_text(yaml.safe_dump(network, sort_keys=False))

    def _network_up(self) -> None:
        """Forwarding and masquerade for the guest's subnet, each rule recorded before it is added."""
        assert self.state is not None
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        self._will_undo("ip-forward", forward.read_text().strip())
        forward.write_text("1\n")
        # Each rule carries a comment, so a rule is recognisable as the rehearsal's even without the state file.
        tag = ["-m", "comment", "--comment", f"{self.slot.name}-rehearsal"]
        subnet = self.slot.subnet
        # Traffic inside the rehearsal's own network (to another machine, to its database) keeps its
        # source address, as inside a VPC: the database's firewall trusts machines by their address.
        rules = [
            ["-t", "nat", "POSTROUTING", "-s", subnet, "!", "-d", NETWORK, *tag, "-j", "MASQUERADE"],
            ["-t", "filter", "FORWARD", "-s", subnet, *tag, "-j", "ACCEPT"],
            ["-t", "filter", "FORWARD", "-d", subnet, *tag, "-j", "ACCEPT"],
        ]
        for rule in rules:
            self._will_undo("iptables", *rule)
            table, chain, spec = rule[:2], rule[2], rule[3:]
            run(["iptables", *table, "-I", chain, *spec])

    def _will_undo(self, kind: str, *words: str) -> None:
        """Record, before making a change on the host, the step of `UNDO` that `down` takes back for it."""
        assert self.state is not None
        step = [kind, *words]
        if step not in self.state.undo:  # a machine powered on again starts the same way
            self.state.undo.append(step)
            _write_state(self.slot, self.state)

    def _stop_machine(self, progress: Progress, words: list[str]) -> None:
        pid = self.state.nspawn_pid if self.state else None
        if pid is None or not _alive(pid):
            return
        progress("down: stopping the machine")
        self.guest(["systemctl", "poweroff"], timeout=10)
        if not _wait_gone(pid, STOP_TIMEOUT_SECONDS):
            os.killpg(pid, signal.SIGTERM)
            if not _wait_gone(pid, 10):
                os.killpg(pid, signal.SIGKILL)
                _wait_gone(pid, 10)

    def _detach_volume(self, progress: Progress, words: list[str]) -> None:
        if self.state is not None and self.state.volume_loop is not None:
            run(["losetup", "--detach", self.state.volume_loop], check=False)

    def path(self, guest_path: str) -> Path:
        """A path inside the running machine as the host reaches it, through the machine's own mounts (its Volume)."""
        pid = _guest_pid(self.state.nspawn_pid) if self.state and self.state.nspawn_pid else None
        if pid is None:
            raise RehearsalError("the rehearsal machine is not running")
        return Path(f"/proc/{pid}/root") / guest_path.lstrip("/")

    def guest(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the guest, as root, without SSH."""
        pid = _guest_pid(self.state.nspawn_pid) if self.state and self.state.nspawn_pid else None
        if pid is None:
            raise RehearsalError("the rehearsal machine is not running")
        return run(["nsenter", "-t", str(pid), "-a", *argv], timeout=timeout, check=False)

    def wait_for_boot(self, timeout: float = BOOT_TIMEOUT_SECONDS * 2) -> str:
        """Wait until systemd in the guest has finished booting; its state (`running`, `degraded`, ...).

        Right after a start, the guest's systemd may not listen yet: that is retried, within `timeout`.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = max(deadline - time.monotonic(), 1)
            with contextlib.suppress(RehearsalError, subprocess.TimeoutExpired):  # not started yet, or still booting
                state = self.guest(["systemctl", "is-system-running", "--wait"], timeout=left).stdout.strip()
                if state:
                    return state
            time.sleep(0.5)
        raise RehearsalError(f"the machine did not finish booting within {timeout:.0f} s")

    def wait_for_cloud_init(self, timeout: float, progress: Progress) -> CloudInitResult:
        """Poll `cloud-init status` inside the guest until it is done or reports an error."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.is_up():
                raise RehearsalError(f"the machine stopped while booting; see {self.slot.directory}/console.log")
            if _guest_pid(self.state.nspawn_pid or 0) is not None:  # type: ignore[union-attr]
                result = self.guest(["cloud-init", "status", "--format", "json"], timeout=30)
                try:
                    status = json.loads(result.stdout)
                except json.JSONDecodeError:
                    status = {}
                state = status.get("extended_status") or status.get("status", "")
                if state and state != last:
                    progress(f"cloud-init: {state}")
                    last = state
                if status.get("status") in ("done", "error") or state.startswith(("done", "error", "degraded")):
                    return CloudInitResult(
                        status=status.get("status", "error"),
                        errors=list(status.get("errors", [])),
                        recoverable_errors=dict(status.get("recoverable_errors", {})),
                    )
            time.sleep(1)
        raise RehearsalError(f"cloud-init did not finish within {timeout:.0f} s")

    def cloud_init_output(self, lines: int = 40) -> str:
        log = Path(self.state.root if self.state else "") / "var/log/cloud-init-output.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def failed_units_report(self, lines: int = 30) -> str:
        """The guest's failed units, each with the end of its journal (systemd's own words on why included)."""
        failed = self.guest(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
        units = [line.split()[0] for line in failed.stdout.splitlines() if line.strip()]
        if not units:
            return "no failed units"
        parts = [f"failed units: {' '.join(units)}"]
        for unit in units:
            journal = self.guest(["journalctl", "-b", "--no-pager", "-n", str(lines), "-u", unit])
            parts.append(f"--- journalctl -u {unit} (end)\n{journal.stdout.rstrip()}")
        return "\n".join(parts)

    def down(self, progress: Progress, keep_volumes: bool = False) -> None:
        """Stop the machine and remove everything `up` created. Safe when nothing is up.

        `keep_volumes` keeps the Volumes' data (and the app's secret) for the next machine, as
        DigitalOcean keeps a Volume when its droplet is destroyed.
        """
        state = self.state or _read_state(self.slot)
        if state is None:
            if not keep_volumes:
                shutil.rmtree(VOLUME_DIR, ignore_errors=True)
            return
        self.state = state
        for step in reversed(state.undo):
            UNDO[step[0]](self, progress, step[1:])
        if not keep_volumes:
            shutil.rmtree(VOLUME_DIR, ignore_errors=True)
        directory = self.slot.directory
        leftovers: tuple[str, ...] = ("machine.json", "machine.json.partial", "deploy-state.json", "console.log")
        leftovers += ("wait-for-cloud-init.log", "deploy.log")
        for leftover in (*leftovers, "host-keys.json", "known_hosts"):
            (directory / leftover).unlink(missing_ok=True)
        if self.slot != FIRST:
            with contextlib.suppress(OSError):
                directory.rmdir()
                directory.parent.rmdir()
        # What the machines share goes with the first: the last to go, as a fleet goes down.
        else:
            shutil.rmtree(STATE_DIR / "build", ignore_errors=True)
            shutil.rmtree(STATE_DIR / "pebble", ignore_errors=True)
            # A machine that replaces this one keeps the stack's key and secret, as a droplet keeps the stack's
            # keys: the deploy user's authorized keys, and so the release, are the same on the new machine.
            for leftover in () if keep_volumes else ("id_ed25519", "id_ed25519.pub", "app-secret"):
                (STATE_DIR / leftover).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                STATE_DIR.rmdir()
        self.state = None


def _delete_link(machine: Machine, progress: Progress, words: list[str]) -> None:
    if run(["ip", "link", "show", words[0]], check=False).returncode == 0:
        run(["ip", "link", "delete", words[0]], check=False)


def _delete_rule(machine: Machine, progress: Progress, words: list[str]) -> None:
    table, chain, spec = words[:2], words[2], words[3:]
    run(["iptables", *table, "-D", chain, *spec], check=False)


def _remove_cgroup(machine: Machine, progress: Progress, words: list[str]) -> None:
    for _ in range(50):  # the kernel frees a cgroup a moment after its last process ends
        try:
            Path(words[0]).rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.2)


def _restore_ip_forward(machine: Machine, progress: Progress, words: list[str]) -> None:
    Path("/proc/sys/net/ipv4/ip_forward").write_text(words[0] + "\n")


def _unmount(machine: Machine, progress: Progress, words: list[str]) -> None:
    if os.path.ismount(words[0]):
        run(["umount", words[0]], timeout=60)


#: How `down` undoes each kind of change `up` records (`MachineState.undo`), by the words recorded with it.
UNDO: dict[str, Callable[[Machine, Progress, list[str]], None]] = {
    "stop-machine": Machine._stop_machine,
    "stop-process": lambda machine, progress, words: stop_process(int(words[0])),
    "iptables": _delete_rule,
    "ip-forward": _restore_ip_forward,
    "delete-link": _delete_link,
    "remove-cgroup": _remove_cgroup,
    "detach-volume": Machine._detach_volume,
    "unmount": _unmount,
    "remove-tree": lambda machine, progress, words: shutil.rmtree(words[0], ignore_errors=True),
}


def start_process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """A host process for the rehearsal, in a process group of its own, its output appended to `log`; its pid.

    `stop_process` stops it (from any process); this one keeps it, so that it is reaped.
    """
    with log.open("a") as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _STARTED[process.pid] = process
    return process.pid


def stop_process(pid: int, first_signal: signal.Signals = signal.SIGTERM, seconds: float = 10) -> None:
    """Signal the process group `start_process` made; SIGKILL once it has had `seconds` to end."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, first_signal)
    if not _wait_gone(pid, seconds):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _wait_gone(pid, seconds)


def kept_secret(name: str, length: int = 32) -> str:
    """A random secret in the state directory (mode 0600), made on first use and the same until `down`."""
    path = STATE_DIR / name
    if not path.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(length))
    return path.read_text()


def _wait_gone(pid: int, seconds: float) -> bool:
    process = _STARTED.get(pid)
    if process is not None:
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        del _STARTED[pid]
        return True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False
