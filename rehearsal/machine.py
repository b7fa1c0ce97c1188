"""The rehearsal machine's lifecycle: a Debian 13 system booted with systemd-nspawn, the droplet's stand-in.

`build_rootfs` makes (once, then from a cache) a root filesystem with what a cloud
image has that matters here: systemd as PID 1, sshd, cloud-init with a network
renderer. `Machine.up` boots a fresh copy of it in a network namespace of its own
(a veth pair on a /30, masquerade so apt and pip inside reach the mirrors) with
the given user-data in a NoCloud seed, exactly as a droplet receives it.

Everything `up` creates on the host is written to a state file *before* it is
created, so `Machine(spec).down()` from any process undoes exactly that:

    machine = Machine(MachineSpec())
    key, public_key = machine.ssh_keypair()
    try:
        machine.up(render_user_data(public_key), progress=print)
        result = machine.wait_for_cloud_init(timeout=900)
        ...  # ssh -i key deploy@machine.address
    finally:
        machine.down()

Only the guest (inside the network namespace nspawn makes) and loopback are
ever targets of traffic from here; the guest itself talks to the package mirrors
through the host's masquerade.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]

#: The interface systemd-nspawn --network-veth gives the guest.
GUEST_INTERFACE = "host0"
#: Linux interface names are at most 15 characters; the host side is "ve-" + the machine name.
MAX_NAME_LENGTH = 12
#: Bump when the image's customisation below changes, so old caches are not reused.
IMAGE_FORMAT = 1
#: Extra certificate authorities the host trusts (an egress proxy in front of the registries, say):
#: the guest needs them too for HTTPS (pip) to work.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
#: Marks every iptables rule the rehearsal adds, so a sweep finds them even without a state file.
IPTABLES_TAG_PREFIX = "flask-droplet-rehearsal:"

#: What a DigitalOcean Ubuntu 24.04 image has that matters here: systemd (with resolved, as Ubuntu
#: uses), dbus, sshd, cloud-init with a network renderer (netplan; without one the guest gets no
#: address), sudo, python3, curl, CA certificates, and locales (cloud-init's locale module runs
#: locale-gen, as on Ubuntu).
DEFAULT_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "dbus",
    "openssh-server",
    "cloud-init",
    "netplan.io",
    "iproute2",
    "sudo",
    "python3",
    "curl",
    "ca-certificates",
    "locales",
)

#: Commands the host needs, and the Debian package each comes from.
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "systemd-nspawn": "systemd-container",
    "iptables": "iptables",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MachineError(RuntimeError):
    """The rehearsal machine could not do what was asked; the message says what and where to look."""


def print_progress(message: str) -> None:
    print(f"rehearsal: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class MachineSpec:
    """Where the machine lives and what it is; every field has a working default."""

    name: str = "flaskdroplet"
    #: Everything `up` creates lives in state_dir/name/ (state file, rootfs copy, console log, keys).
    state_dir: Path = Path("/var/lib/flask-droplet-rehearsal")
    #: Cached root filesystems, reused by later runs; `down` leaves them.
    cache_dir: Path = Path("/var/cache/flask-droplet-rehearsal")
    #: The veth pair's /30: the host side is the guest's gateway.
    host_cidr: str = "10.213.7.1/30"
    guest_cidr: str = "10.213.7.2/30"
    suite: str = "trixie"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    #: Bounds for the waits in `up` and `down`.
    boot_timeout: float = 60.0
    stop_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not re.fullmatch(rf"[a-z0-9][a-z0-9-]{{0,{MAX_NAME_LENGTH - 1}}}", self.name):
            raise ValueError(
                f"machine name {self.name!r}: use 1-{MAX_NAME_LENGTH} of a-z, 0-9 and '-' "
                f"(the host interface ve-NAME must fit the kernel's 15 characters)"
            )
        host = ipaddress.IPv4Interface(self.host_cidr)
        guest = ipaddress.IPv4Interface(self.guest_cidr)
        if host.network != guest.network or host.ip == guest.ip:
            raise ValueError(
                f"host_cidr {self.host_cidr} and guest_cidr {self.guest_cidr}: need two addresses of one subnet"
            )

    @property
    def host_veth(self) -> str:
        return f"ve-{self.name}"

    @property
    def subnet(self) -> str:
        return str(ipaddress.IPv4Interface(self.guest_cidr).network)

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Interface(self.host_cidr).ip)

    @property
    def guest_address(self) -> str:
        return str(ipaddress.IPv4Interface(self.guest_cidr).ip)

    @property
    def machine_dir(self) -> Path:
        return self.state_dir / self.name

    @property
    def state_file(self) -> Path:
        return self.machine_dir / "state.json"

    @property
    def iptables_tag(self) -> str:
        return f"{IPTABLES_TAG_PREFIX}{self.name}"


@dataclass(frozen=True)
class CloudInitResult:
    """What `cloud-init status --long --format json` said when it finished."""

    status: str  # done, error, disabled
    extended_status: str  # e.g. "done", "degraded done", "error - running"
    errors: list[str]
    recoverable_errors: dict[str, list[str]]  # level (WARNING, DEPRECATED, ...) -> messages
    detail: str
    seconds: float
    #: The end of /var/log/cloud-init-output.log when something went wrong, else "".
    output_tail: str = ""

    @property
    def ok(self) -> bool:
        """Done without errors (recoverable errors such as deprecation warnings allowed)."""
        return self.status == "done" and not self.errors

    @property
    def clean(self) -> bool:
        """Done without errors and without warnings."""
        return self.ok and not any(self.recoverable_errors.values())

    def describe(self) -> str:
        lines = [f"cloud-init: {self.extended_status or self.status} after {self.seconds:.1f} s"]
        lines += [f"  error: {error}" for error in self.errors]
        for level, messages in self.recoverable_errors.items():
            lines += [f"  {level.lower()}: {message}" for message in messages]
        if self.output_tail:
            lines += ["  --- end of /var/log/cloud-init-output.log ---", self.output_tail]
        return "\n".join(lines)


@dataclass
class MachineState:
    """What `up` created on the host; written before each thing is created."""

    name: str
    instance_id: str
    root: str
    console_log: str
    subnet: str
    host_veth: str
    nspawn_pid: int | None = None
    nspawn_start_time: int | None = None
    iptables_rules: list[list[str]] = field(default_factory=list)
    ip_forward_before: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> MachineState:
        data: dict[str, Any] = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


# --- host helpers ----------------------------------------------------------------------------


def _run(
    argv: Sequence[str], *, timeout: float = 60, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise MachineError(f"{shlex.join(argv)} did not finish within {timeout:.0f} s") from error
    if check and result.returncode != 0:
        raise MachineError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def ensure_host_tools(progress: Progress = print_progress) -> None:
    """Install (with apt, only what is missing) the host tools the rehearsal drives."""
    missing = sorted({package for command, package in HOST_TOOLS.items() if shutil.which(command) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise MachineError(f"the rehearsal needs root to install {', '.join(missing)} (and to boot machines)")
    progress(f"host: apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, env=env)
        if result.returncode != 0:
            raise MachineError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")


def generate_ssh_keypair(directory: Path, name: str = "id_ed25519", comment: str = "rehearsal") -> tuple[Path, str]:
    """A new ed25519 key pair without passphrase in `directory` (0700; key 0600): (private key, public line)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    private = directory / name
    for old in (private, private.with_name(f"{name}.pub")):
        old.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)])
    private.chmod(0o600)
    return private, private.with_name(f"{name}.pub").read_text().strip()


def host_ca_certificates() -> list[Path]:
    return sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []


def host_nameservers() -> list[str]:
    """The host's IPv4 resolvers that the guest can reach through the masquerade (not loopback ones)."""
    for source in (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")):
        try:
            lines = source.read_text().splitlines()
        except OSError:
            continue
        servers: list[str] = []
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or parts[0] != "nameserver":
                continue
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback and str(address) not in servers:
                servers.append(str(address))
        if servers:
            return servers
    raise MachineError("no non-loopback IPv4 nameserver in /etc/resolv.conf for the guest to use")


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (deepest first), from this process's mountinfo."""
    prefix = str(path.resolve()) if path.exists() else str(path)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), point)
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda point: point.count("/"), reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a directory the rehearsal made, after unmounting anything left mounted inside it.

    An interrupted mmdebstrap leaves /proc, /sys and /dev mounted in its target; `rm
    --one-file-system` never follows such a mount even if unmounting failed.
    """
    if not path.exists() and not path.is_symlink():
        return
    for point in _mounts_under(path):
        if _run(["umount", point], check=False, timeout=30).returncode != 0:
            _run(["umount", "--lazy", point], check=False, timeout=30)
    left = _mounts_under(path)
    if left:
        raise MachineError(f"cannot remove {path}: still mounted: {', '.join(left)}")
    _run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=300)


@contextlib.contextmanager
def _locked(directory: Path, timeout: float, what: str) -> Iterator[None]:
    """An exclusive flock on `directory` itself (no lock file left behind), waited for at most `timeout` s."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout
        acquired = False
        for _ in range(int(timeout / 0.5) + 2):
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        if not acquired:
            raise MachineError(f"{what}: another process held the lock on {directory} for {timeout:.0f} s")
        yield
    finally:
        os.close(descriptor)  # releases the lock


# --- the root filesystem ----------------------------------------------------------------------


def image_key(spec: MachineSpec) -> str:
    """Changes whenever the image would: suite, mirrors, packages, customisation, the host's extra CAs."""
    digest = hashlib.sha256(
        json.dumps([IMAGE_FORMAT, spec.suite, spec.mirror, spec.security_mirror, sorted(spec.packages)]).encode()
    )
    for cert in host_ca_certificates():
        digest.update(cert.name.encode() + b"\0" + cert.read_bytes())
    return digest.hexdigest()[:16]


def cached_rootfs(spec: MachineSpec) -> Path:
    return spec.cache_dir / f"machine-rootfs-{spec.suite}-{image_key(spec)}"


def build_rootfs(spec: MachineSpec, progress: Progress = print_progress) -> Path:
    """The cached root filesystem for `spec`, built with mmdebstrap first if needed (about a minute).

    The build goes to a temporary directory that is renamed into place only when
    complete, so an interrupted build never leaves a half cache.
    """
    image = cached_rootfs(spec)
    if image.is_dir():
        progress(f"image: cached at {image}")
        return image
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(spec.cache_dir, timeout=1800, what="building the image"):
        if image.is_dir():  # another process built it while we waited
            progress(f"image: cached at {image}")
            return image
        # Under the lock, any half-built image is a leftover of an interrupted build.
        for stale in spec.cache_dir.glob(".machine-rootfs-*.building"):
            _remove_tree(stale)
        building = spec.cache_dir / f".{image.name}.building"
        progress(f"image: building Debian {spec.suite} with mmdebstrap into {building} (about a minute)")
        sources = [
            f"deb {spec.mirror} {spec.suite} main",
            f"deb {spec.mirror} {spec.suite}-updates main",
            f"deb {spec.security_mirror} {spec.suite}-security main",
        ]
        try:
            _run(
                [
                    "mmdebstrap",
                    "--mode=root",
                    "--variant=apt",
                    f"--include={','.join(spec.packages)}",
                    spec.suite,
                    str(building),
                    *sources,
                ],
                timeout=1800,
            )
            _customise_image(building, spec)
            building.rename(image)
        except BaseException:
            _remove_tree(building)
            raise
        for old in spec.cache_dir.glob(f"machine-rootfs-{spec.suite}-*"):
            if old != image:
                progress(f"image: removing the outdated cache {old}")
                _remove_tree(old)
    progress(f"image: built {image}")
    return image


def _customise_image(root: Path, spec: MachineSpec) -> None:
    # cloud-init looks only at the NoCloud seed, as a droplet looks only at DigitalOcean's.
    (root / "etc/cloud/cloud.cfg.d/90-rehearsal-datasource.cfg").write_text(
        "# The rehearsal feeds cloud-init through /var/lib/cloud/seed/nocloud.\ndatasource_list: [ NoCloud, None ]\n"
    )
    # Every boot is a new machine: cloud-init makes the SSH host keys (cc_ssh), and an empty
    # machine-id is filled by systemd at boot without it counting as a "first boot" (no
    # systemd-firstboot prompt on the console).
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # mmdebstrap copies the host's name in; cloud-init sets the guest's from meta-data.
    (root / "etc/hostname").write_text(f"{spec.name}\n")
    certs = host_ca_certificates()
    if certs:
        target = root / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for cert in certs:
            shutil.copy2(cert, target / cert.name)
        _run(["chroot", str(root), "update-ca-certificates"], timeout=300)


# --- processes ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(comm, state, ppid, start time in clock ticks) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int | None, start_time: int | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, when given, is still the process started at `start_time`."""
    if pid is None:
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return False
    return start_time is None or stat[3] == start_time


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[2] == pid:
                found.append(int(entry.name))
    return sorted(found)


def _nspawn_pids_for(root: Path) -> list[int]:
    """systemd-nspawn processes running on `root`, found from their command lines."""
    wanted = {f"--directory={root}", str(root)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and wanted & {arg.decode(errors="replace") for arg in argv}:
            found.append(int(entry.name))
    return found


def _wait_until(condition: Callable[[], bool], seconds: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / interval) + 2):
        if condition():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    return condition()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;?!]*[A-Za-z]", "", text)
    return "\n".join(text.splitlines()[-lines:])


# --- the machine -------------------------------------------------------------------------------


class Machine:
    """One rehearsal machine, described by `spec`; any process can bring it down from the state file."""

    def __init__(self, spec: MachineSpec | None = None) -> None:
        self.spec = spec or MachineSpec()
        #: Seconds per phase of the last `up` / `wait_for_cloud_init` in this process.
        self.timings: dict[str, float] = {}
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths and state

    @property
    def address(self) -> str:
        """The guest's IPv4 address, reachable from the host."""
        return self.spec.guest_address

    @property
    def keys_dir(self) -> Path:
        return self.spec.machine_dir / "keys"

    @property
    def root(self) -> Path:
        return self.spec.machine_dir / "rootfs"

    @property
    def console_log(self) -> Path:
        return self.spec.machine_dir / "console.log"

    def state(self) -> MachineState | None:
        try:
            return MachineState.from_json(self.spec.state_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as error:
            raise MachineError(f"unreadable state file {self.spec.state_file}: {error}") from error

    def _save(self, state: MachineState) -> None:
        self.spec.machine_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.spec.state_file.with_suffix(".json.tmp")
        temporary.write_text(state.to_json())
        temporary.replace(self.spec.state_file)

    def _lock(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _locked(self.spec.state_dir, timeout=300, what=what)

    def is_up(self) -> bool:
        state = self.state()
        return state is not None and _alive(state.nspawn_pid, state.nspawn_start_time)

    def guest_pid(self) -> int | None:
        """The guest's PID 1 (systemd) in the host's PID namespace: the child of systemd-nspawn."""
        state = self.state()
        if state is None or not _alive(state.nspawn_pid, state.nspawn_start_time):
            return None
        assert state.nspawn_pid is not None
        for child in _children(state.nspawn_pid):
            stat = _proc_stat(child)
            if stat is not None and stat[0] in ("systemd", "init"):
                return child
        return None

    # -- keys

    def ssh_keypair(self) -> tuple[Path, str]:
        """A new key pair for logging in to this machine: (private key, public key line).

        It lives in the machine's directory, survives `up` (make it before, to put the
        public key in the user-data) and is removed by `down`.
        """
        return generate_ssh_keypair(self.keys_dir, comment=f"rehearsal@{self.spec.name}")

    # -- up

    def up(self, user_data: str, progress: Progress = print_progress) -> dict[str, float]:
        """Boot a fresh machine that receives `user_data` through cloud-init's NoCloud seed.

        Whatever an earlier `up` left (per the state file) is torn down first. Returns
        seconds per phase: build (the image, ~0 when cached), copy (the fresh root
        filesystem and seed), boot (systemd-nspawn started, network up, guest PID 1 found).
        If anything fails or is interrupted, everything is torn down again.
        """
        ensure_host_tools(progress)
        self.timings = {}
        started = time.monotonic()
        image = build_rootfs(self.spec, progress)
        self.timings["build"] = time.monotonic() - started
        with self._lock("up"):
            self._teardown(progress, keep_keys=True)
            try:
                self._up(image, user_data, progress)
            except BaseException:
                progress("up failed: tearing the machine down again")
                with contextlib.suppress(Exception):
                    self._teardown(progress, keep_keys=False)
                raise
        return dict(self.timings)

    def _up(self, image: Path, user_data: str, progress: Progress) -> None:
        spec = self.spec
        self._check_network_is_free()
        state = MachineState(
            name=spec.name,
            instance_id=f"{spec.name}-{uuid.uuid4().hex[:12]}",
            root=str(self.root),
            console_log=str(self.console_log),
            subnet=spec.subnet,
            host_veth=spec.host_veth,
        )
        self._save(state)

        started = time.monotonic()
        progress(f"up: copying the image to {self.root}")
        _run(["cp", "-a", "--reflink=auto", str(image), str(self.root)], timeout=600)
        self._write_seed(state.instance_id, user_data)
        self.timings["copy"] = time.monotonic() - started

        started = time.monotonic()
        self._network_up(state, progress)
        progress(f"up: booting {spec.name} with systemd-nspawn (console: {self.console_log})")
        with open(self.console_log, "wb") as log:
            process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    f"--directory={self.root}",
                    f"--machine={spec.name}",
                    "--boot",
                    "--network-veth",
                    "--register=no",  # no systemd-machined on the host
                    "--keep-unit",  # nor a systemd PID 1 to make a scope unit
                    "--console=read-only",
                    "--link-journal=no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "SYSTEMD_COLORS": "0"},
            )
        self._process = process
        stat = _proc_stat(process.pid)
        state.nspawn_pid = process.pid
        state.nspawn_start_time = stat[3] if stat else None
        self._save(state)

        def veth_exists() -> bool:
            if process.poll() is not None:
                raise MachineError(f"systemd-nspawn exited {process.returncode}:\n{_tail(self.console_log)}")
            return Path(f"/sys/class/net/{spec.host_veth}").exists()

        if not _wait_until(veth_exists, spec.boot_timeout, interval=0.05):
            raise MachineError(f"{spec.host_veth} did not appear within {spec.boot_timeout:.0f} s")
        # The guest's systemd-networkd-wait-online waits for carrier: bring the host side up at once.
        _run(["ip", "address", "replace", spec.host_cidr, "dev", spec.host_veth])
        _run(["ip", "link", "set", spec.host_veth, "up"])
        if not _wait_until(lambda: self.guest_pid() is not None or process.poll() is not None, spec.boot_timeout):
            raise MachineError(f"the guest's systemd did not start within {spec.boot_timeout:.0f} s")
        if process.poll() is not None:
            raise MachineError(f"systemd-nspawn exited {process.returncode}:\n{_tail(self.console_log)}")
        self.timings["boot"] = time.monotonic() - started
        progress(f"up: {spec.name} is booting at {self.address} (instance {state.instance_id})")

    def _check_network_is_free(self) -> None:
        """Refuse to boot over an interface or route that is not ours."""
        spec = self.spec
        if Path(f"/sys/class/net/{spec.host_veth}").exists():
            raise MachineError(
                f"{spec.host_veth} exists but no machine of ours is recorded: another systemd-nspawn "
                f"-M {spec.name} is running? Stop it, or use another MachineSpec.name"
            )
        subnet = ipaddress.IPv4Network(spec.subnet)
        addresses = json.loads(_run(["ip", "-json", "-4", "address", "show"]).stdout or "[]")
        for link in addresses:
            for info in link.get("addr_info", []):
                network = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}").network
                if network.overlaps(subnet):
                    raise MachineError(
                        f"{link['ifname']} has {info['local']}/{info['prefixlen']}, which overlaps the "
                        f"rehearsal subnet {subnet}: choose other host_cidr/guest_cidr"
                    )
        routes = json.loads(_run(["ip", "-json", "-4", "route", "show"]).stdout or "[]")
        for route in routes:
            destination = route.get("dst", "default")
            if destination == "default":
                continue
            if ipaddress.IPv4Network(destination, strict=False).overlaps(subnet):
                raise MachineError(
                    f"route {destination} via {route.get('dev', '?')} overlaps the rehearsal subnet {subnet}: "
                    f"choose other host_cidr/guest_cidr"
                )

    def _write_seed(self, instance_id: str, user_data: str) -> None:
        spec = self.spec
        seed = self.root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "meta-data").write_text(
            json.dumps({"instance-id": instance_id, "local-hostname": spec.name}, indent=2) + "\n"
        )
        (seed / "user-data").write_text(user_data)
        # JSON is YAML: network-config v2, static address, default route via the host side.
        network = {
            "network": {
                "version": 2,
                "ethernets": {
                    GUEST_INTERFACE: {
                        "match": {"name": GUEST_INTERFACE},
                        "set-name": GUEST_INTERFACE,
                        "addresses": [spec.guest_cidr],
                        "routes": [{"to": "default", "via": spec.gateway}],
                        "nameservers": {"addresses": host_nameservers()},
                    }
                },
            }
        }
        (seed / "network-config").write_text(json.dumps(network, indent=2) + "\n")
        for name in ("meta-data", "user-data", "network-config"):
            (seed / name).chmod(0o600)

    def _network_up(self, state: MachineState, progress: Progress) -> None:
        """Forwarding and masquerade for the guest's subnet; each change recorded before it is made."""
        spec = self.spec
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        if forward.read_text().strip() != "1":
            state.ip_forward_before = forward.read_text().strip()
            self._save(state)
            progress("up: enabling net.ipv4.ip_forward (restored by down)")
            forward.write_text("1\n")
        tag = ["-m", "comment", "--comment", spec.iptables_tag]
        rules = [["nat", "POSTROUTING", "-s", spec.subnet, "!", "-d", spec.subnet, *tag, "-j", "MASQUERADE"]]
        forward_chain = _run(["iptables", "-w", "5", "-t", "filter", "-S", "FORWARD"]).stdout.splitlines()
        if forward_chain[:1] != ["-P FORWARD ACCEPT"] or len(forward_chain) > 1:
            # Something filters forwarded traffic (a DROP policy, docker's chains...): let ours through first.
            rules += [
                ["filter", "FORWARD", "-s", spec.subnet, *tag, "-j", "ACCEPT"],
                ["filter", "FORWARD", "-d", spec.subnet, *tag, "-j", "ACCEPT"],
            ]
        for rule in rules:
            state.iptables_rules.append(rule)
            self._save(state)
            table, chain, rule_spec = rule[0], rule[1], rule[2:]
            _run(["iptables", "-w", "5", "-t", table, "-I", chain, "1", *rule_spec])

    # -- using the machine

    def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the guest as root, without SSH (nsenter into all of PID 1's namespaces)."""
        pid = self.guest_pid()
        if pid is None:
            raise MachineError(f"machine {self.spec.name} is not running")
        command = [
            "nsenter",
            f"--target={pid}",
            "--all",
            "--",
            "/usr/bin/env",
            "-i",
            f"PATH={GUEST_PATH}",
            "LANG=C.UTF-8",
            "HOME=/root",
            "TERM=dumb",
            *argv,
        ]
        return _run(command, input=input, timeout=timeout, check=check)

    def wait_for_cloud_init(self, timeout: float = 900, progress: Progress = print_progress) -> CloudInitResult:
        """Poll `cloud-init status` in the guest until it finishes; bounded by `timeout` seconds."""
        started = time.monotonic()
        deadline = started + timeout
        last = ""
        status: dict[str, Any] = {}
        for _ in range(int(timeout) + 2):
            if not self.is_up():
                raise MachineError(f"machine {self.spec.name} stopped while booting:\n{_tail(self.console_log)}")
            if self.guest_pid() is not None:
                with contextlib.suppress(MachineError):
                    reply = self.run(["cloud-init", "status", "--long", "--format", "json"], timeout=30)
                    with contextlib.suppress(json.JSONDecodeError):
                        status = json.loads(reply.stdout)
            shown = str(status.get("extended_status") or status.get("status") or "starting")
            if shown != last:
                progress(f"cloud-init: {shown}")
                last = shown
            if status.get("status") in ("done", "error", "disabled"):
                break
            if time.monotonic() > deadline:
                raise MachineError(
                    f"cloud-init did not finish within {timeout:.0f} s (last status: {shown}):\n"
                    f"{_tail(self.root / 'var/log/cloud-init-output.log')}"
                )
            time.sleep(1)
        else:
            raise MachineError(f"cloud-init did not finish within {timeout:.0f} s")
        seconds = time.monotonic() - started
        self.timings["cloud-init"] = seconds
        recoverable = {
            str(level): [str(message) for message in messages]
            for level, messages in (status.get("recoverable_errors") or {}).items()
        }
        errors = [str(error) for error in status.get("errors") or []]
        result = CloudInitResult(
            status=str(status.get("status")),
            extended_status=str(status.get("extended_status") or status.get("status")),
            errors=errors,
            recoverable_errors=recoverable,
            detail=str(status.get("detail", "")),
            seconds=seconds,
        )
        if not result.clean:
            result = CloudInitResult(
                **{**result.__dict__, "output_tail": _tail(self.root / "var/log/cloud-init-output.log")}
            )
        return result

    def wait_for_port(self, port: int, timeout: float = 60) -> bool:
        """Whether the guest accepts TCP connections on `port` within `timeout` seconds."""

        def accepts() -> bool:
            try:
                with socket.create_connection((self.address, port), timeout=2):
                    return True
            except OSError:
                return False

        return _wait_until(accepts, timeout, interval=0.5)

    # -- down

    def down(self, progress: Progress = print_progress) -> None:
        """Stop the machine and remove everything `up` made (keys too); keep the image cache.

        Safe when nothing is up, and from another process than the one that ran `up`.
        """
        with self._lock("down"):
            self._teardown(progress, keep_keys=False)

    def _teardown(self, progress: Progress, *, keep_keys: bool) -> None:
        spec = self.spec
        state = self.state()
        self._reap()
        if state is not None:
            self._stop(state, progress)
        # Without a state file (lost, or never written) a machine may still run on our root.
        for pid in _nspawn_pids_for(self.root):
            progress(f"down: stopping a systemd-nspawn ({pid}) found running on {self.root}")
            self._stop_process(pid, None, progress)
        running = _nspawn_pids_for(self.root)
        if state is not None and _alive(state.nspawn_pid, state.nspawn_start_time):
            running.append(state.nspawn_pid or 0)
        if running:
            raise MachineError(f"systemd-nspawn {running} would not stop; {spec.machine_dir} kept")

        self._remove_iptables_rules(state)
        if state is not None and state.ip_forward_before is not None:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(state.ip_forward_before + "\n")
        if state is not None and Path(f"/sys/class/net/{state.host_veth}").exists():
            _run(["ip", "link", "delete", state.host_veth], check=False)
        with contextlib.suppress(OSError):  # an empty directory systemd-nspawn leaves behind
            Path(f"/run/systemd/nspawn/propagate/{spec.name}").rmdir()

        if spec.machine_dir.exists():
            if keep_keys:
                for entry in spec.machine_dir.iterdir():
                    if entry in (self.keys_dir, spec.state_file):
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        _remove_tree(entry)
                    else:
                        entry.unlink()
                spec.state_file.unlink(missing_ok=True)
            else:
                _remove_tree(spec.machine_dir)
        if state is not None:
            progress(f"down: {spec.name} removed")

    def _stop(self, state: MachineState, progress: Progress) -> None:
        if not _alive(state.nspawn_pid, state.nspawn_start_time):
            self._reap()
            return
        assert state.nspawn_pid is not None
        self._stop_process(state.nspawn_pid, state.nspawn_start_time, progress)

    def _stop_process(self, nspawn_pid: int, start_time: int | None, progress: Progress) -> None:
        """Power the guest off; then SIGTERM, then SIGKILL (guest PID 1 and nspawn), each wait bounded."""

        def gone() -> bool:
            self._reap()
            return not _alive(nspawn_pid, start_time)

        guest = next((child for child in _children(nspawn_pid) if (_proc_stat(child) or ("",))[0] == "systemd"), None)
        progress(f"down: powering off {self.spec.name}")
        if guest is not None:
            with contextlib.suppress(MachineError):
                _run(
                    ["nsenter", f"--target={guest}", "--all", "--", "systemctl", "poweroff", "--no-block"],
                    check=False,
                    timeout=20,
                )
        if _wait_until(gone, self.spec.stop_timeout):
            return
        progress("down: the guest did not power off in time; sending SIGTERM to systemd-nspawn")
        with contextlib.suppress(ProcessLookupError):
            os.kill(nspawn_pid, signal.SIGTERM)
        if _wait_until(gone, 15):
            return
        progress("down: sending SIGKILL to the guest and systemd-nspawn")
        if guest is not None and _alive(guest):
            with contextlib.suppress(ProcessLookupError):
                os.kill(guest, signal.SIGKILL)  # kills the guest's whole PID namespace
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(nspawn_pid, signal.SIGKILL)
        _wait_until(gone, 15)

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None

    def _remove_iptables_rules(self, state: MachineState | None) -> None:
        """Delete the rules the state file records, then any rule still tagged with this machine's comment."""
        for rule in reversed(state.iptables_rules if state else []):
            table, chain, rule_spec = rule[0], rule[1], rule[2:]
            for _ in range(10):
                if _run(["iptables", "-w", "5", "-t", table, "-C", chain, *rule_spec], check=False).returncode:
                    break
                _run(["iptables", "-w", "5", "-t", table, "-D", chain, *rule_spec], check=False)
        for table in ("nat", "filter"):
            listing = _run(["iptables", "-w", "5", "-t", table, "-S"], check=False).stdout
            for line in listing.splitlines():
                words = shlex.split(line)
                if words[:1] == ["-A"] and self.spec.iptables_tag in words:
                    _run(["iptables", "-w", "5", "-t", table, "-D", *words[1:]], check=False)


# --- command line: clean up after a crash ----------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.machine", description="Inspect or remove a rehearsal machine."
    )
    parser.add_argument("command", choices=("status", "down", "build"))
    parser.add_argument("--name", default=MachineSpec.name)
    parser.add_argument("--state-dir", type=Path, default=MachineSpec.state_dir)
    parser.add_argument("--cache-dir", type=Path, default=MachineSpec.cache_dir)
    args = parser.parse_args(argv)
    machine = Machine(MachineSpec(name=args.name, state_dir=args.state_dir, cache_dir=args.cache_dir))
    try:
        if args.command == "down":
            machine.down()
        elif args.command == "build":
            ensure_host_tools()
            build_rootfs(machine.spec)
        else:
            state = machine.state()
            print(
                f"{machine.spec.name}: "
                + ("up" if machine.is_up() else "recorded but not running" if state else "down")
                + (f" at {machine.address}, instance {state.instance_id}, root {state.root}" if state else "")
            )
    except MachineError as error:
        print(f"rehearsal: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
