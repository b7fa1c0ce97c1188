"""scripts/bench: the example app under four stacks on the rehearsal machine, side by side, in one run.

Stacks: the Flask development server; bare Gunicorn; the DigitalOcean tutorial's configuration
("How To Serve Flask Applications with Gunicorn and Nginx on Ubuntu": 3 sync workers on a unix
socket, nginx with its stock nginx.conf and `proxy_params`, no cache, Flask serving /static/);
and this project's stack as it deploys. Each runs on the same machine (1 vCPU, 1 GiB, as an
s-1vcpu-1gb droplet), the load comes from the host's other CPU.

The load comes from LOAD_HOSTS network namespaces on the host, each with its own address (the
machine routes its answers back through the host): this project's nginx limits each address to
100 requests a second and 50 connections, so load from one address would measure that limit,
not the stack. Ratios are against the tutorial's stack, measured in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.layout import ServerLayout
from rehearsal import nspawn, run

PROJECT_DIR = Path(__file__).resolve().parent.parent
DOCS = PROJECT_DIR / "docs"

LOAD_HOSTS = 320
"""Source addresses: the limiter allows each 100 requests a second (bursts of 200), 32,000 a second in all,
twice what the machine serves a cached answer at, so no address reaches the limit and what is measured is
the stack, not the limiter."""
CONNECTIONS_PER_HOST = 1
SLOW_HOSTS = 40
"""The slow clients come from this many of the addresses: 50 each, the connections nginx allows an address."""
SECONDS = 10
WARM_UP_SECONDS = 2
ROUNDS = 3
"""The head-to-head with the tutorial's stack and the breakdown are measured this many times, interleaved, and
reported by their medians: on a shared host one cell can differ from the next of the same stack by a fifth."""
ROUND_SECONDS = 6
"""Load before each cell, not counted: a stack's workers compile the app's templates on their first requests."""
SLOW_CLIENTS = 2000
SLOW_SECONDS = 30
LOAD_CPU = 1
"""The host CPU the load generators run on."""
MACHINE_CPU = 0
"""The host CPU the machine runs on (its slot's first, see nspawn.Machine)."""

#: name, port, the base of its URLs on the machine
STACKS = (
    ("Flask dev server", 5000),
    ("bare Gunicorn", 8001),
    ("bare Gunicorn, gthread", 8003),
    ("tutorial's stack", 8002),
    ("this project", 80),
)
BASELINE = "tutorial's stack"
ENDPOINTS = ("/", "/api/forecast", "/static/style.css")

#: The least time between one connection's requests: at most 77 a second from an address, under the
#: limiter's 100, so no row is made of 429s (wrk waits for each answer, and an address that got a 429
#: would otherwise send again at once, at whatever rate refusals come back).
REQUEST_SPACING_MS = 13

WRK_REPORT = f"""
delay = function() return {REQUEST_SPACING_MS} end
done = function(summary, latency, requests)
  io.write(string.format('{{"requests": %d, "seconds": %f, "connect": %d, "read": %d, "write": %d, "status": %d, '
    .. '"timeout": %d, "p50": %d, "p99": %d}}\\n', summary.requests, summary.duration / 1e6, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

#: The tutorial's nginx server block, with its unit's Gunicorn command line.
TUTORIAL_SITE = """
server {{
    listen {port};
    server_name _;
    location / {{
        include /etc/nginx/proxy_params;
        proxy_pass http://unix:{socket};
    }}
}}
"""


@dataclass(frozen=True)
class Piece:
    """Something this stack adds to each uncached request, switched off for the breakdown only.

    The switch edits the rendered files on the benchmark's machine (`site` in nginx's site,
    `gunicorn` in the release's gunicorn.conf.py: regular expression, replacement) or resets a
    unit setting in a drop-in; the bench restores all of it after each row. An edit that no longer
    matches what the project renders stops the benchmark: a row never measures a switch that did nothing.
    """

    name: str
    site: tuple[tuple[str, str], ...] = ()
    gunicorn: tuple[tuple[str, str], ...] = ()
    service: tuple[str, ...] = ()
    """Settings reset for both nginx and the app's service (`SystemCallFilter=`)."""


#: What systemd enforces with seccomp filters, each setting its own, reset together.
SECCOMP_SETTINGS = (
    "SystemCallFilter=", "SystemCallArchitectures=", "MemoryDenyWriteExecute=no", "RestrictAddressFamilies=",
    "RestrictNamespaces=no", "RestrictRealtime=no", "RestrictSUIDSGID=no", "LockPersonality=no", "ProtectClock=no",
    "ProtectKernelLogs=no", "ProtectHostname=no", "ProtectKernelModules=no", "ProtectKernelTunables=no",
)  # fmt: skip
PIECES = (
    Piece("sandbox's seccomp filters (nginx, Gunicorn)", service=SECCOMP_SETTINGS),
    Piece("per-address limits", site=((r"\n\s*limit_req zone=[^;]*;", ""), (r"\n\s*limit_conn \S+ \d+;", ""))),
    Piece(
        "micro-cache lookup and bypass",
        site=(
            (r"\n\s+proxy_cache[ _][^;]*;", ""),
            (r"\n\s+proxy_no_cache [^;]*;", ""),
            (r"\n\s+add_header X-Cache-Status [^;]*;", ""),
        ),
    ),
    Piece(
        "security headers",
        site=(
            (
                r"\n\s+add_header (X-Content-Type-Options|X-Frame-Options|Referrer-Policy|Content-Security-Policy) "
                r'("[^"]*"|\S+) always;',
                "",
            ),
        ),
    ),
    Piece(
        "request ids (nginx header, Gunicorn hooks)",
        site=((r"\n\s+proxy_set_header X-Request-ID [^;]*;", ""), (r" id=\$flaskdroplet_request_id", "")),
        gunicorn=(
            (r"\ndef pre_request\(", "\ndef unused_pre_request("),
            (r"\ndef post_request\(", "\ndef unused_post_request("),
        ),
    ),
    Piece("access log", site=((r"\n(\s+)access_log /var/log/nginx/\S+ [^;]*;", r"\n\1access_log off;"),)),
)
ALL_PIECES = Piece(
    "all of them",
    site=tuple(edit for piece in PIECES for edit in piece.site),
    gunicorn=tuple(edit for piece in PIECES for edit in piece.gunicorn),
    service=tuple(setting for piece in PIECES for setting in piece.service),
)
#: Endpoints of the breakdown: the uncached path.
BREAKDOWN_ENDPOINTS = ("/", "/api/forecast")
STATIC_ROW = "static file `style.css`"
#: Static files the bench adds to the release's static directory, with the bytes of a cached answer:
#: (the answer's URL path, the file's name).
STATIC_COPIES = (("/", "bench-page.html"), ("/api/forecast", "bench-forecast.json"))
#: The rows of the cached answers' rounds, no cookie: (row, URL path, the row it is compared with). Each cached
#: answer is compared with a static file of its own bytes; the static files with the app's stylesheet.
CACHED_ROWS = (
    (STATIC_ROW, "/static/style.css", STATIC_ROW),
    ("static copy of `/`", "/static/bench-page.html", STATIC_ROW),
    ("cached `/`", "/", "static copy of `/`"),
    ("static copy of `/api/forecast`", "/static/bench-forecast.json", STATIC_ROW),
    ("cached `/api/forecast`", "/api/forecast", "static copy of `/api/forecast`"),
)


def edited(text: str, edits: tuple[tuple[str, str], ...], where: str) -> str:
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        if count == 0:
            raise RuntimeError(f"the breakdown's edit {pattern!r} matches nothing in {where}")
    return text


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def sh(argv: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


@dataclass
class Cell:
    stack: str
    endpoint: str
    rps: float
    """Good answers (2xx and 3xx) a second."""
    p50_ms: float
    p99_ms: float
    refused: int
    """Answers other than 2xx and 3xx (a 429 from the limiter, a 502)."""
    failed: int
    """Connections that failed, broke or timed out without an answer."""
    requests: int
    busy: tuple[float, float] = (float("nan"), float("nan"))
    """How busy the machine's CPU and the load's CPU were, 0 to 1: the one near 1 is what limits the row."""
    ratio: float = float("nan")
    round: int = 0


@dataclass
class Report:
    cells: list[Cell] = field(default_factory=list)
    cached: list[Cell] = field(default_factory=list)
    cached_rounds: list[Cell] = field(default_factory=list)
    """nginx's static file and the cached answers, one after the other in each of ROUNDS rounds."""
    head_to_head: list[Cell] = field(default_factory=list)
    """The tutorial's stack and this one, uncached, one after the other in each of ROUNDS rounds."""
    breakdown: list[Cell] = field(default_factory=list)
    """This stack, uncached, as deployed and with each piece switched off in turn (`stack` names the piece)."""
    slow: dict[str, tuple[int, int]] = field(default_factory=dict)
    """stack: (normal requests answered, sent) while SLOW_CLIENTS slow-header clients held on."""
    memory_mib: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    answer_bytes: dict[str, int] = field(default_factory=dict)
    """URL path: the length of its answer's body."""


def load_subnet(index: int) -> tuple[str, str, str]:
    """The /30 of load host `index` in 10.214.0.0/16: (network, host's address, namespace's address)."""
    base = 4 * index
    prefix = f"10.214.{base // 256}."
    return f"{prefix}{base % 256}/30", f"{prefix}{base % 256 + 1}", f"{prefix}{base % 256 + 2}"


@contextlib.contextmanager
def load_hosts(count: int) -> Iterator[list[str]]:
    """`count` network namespaces with an address each, routed to the machine through the host."""
    names = [f"fdbench{i}" for i in range(count)]
    try:
        for i, name in enumerate(names):
            network, host_address, address = load_subnet(i)
            sh(["ip", "netns", "add", name])
            sh(["ip", "link", "add", f"fdb{i}h", "type", "veth", "peer", "name", f"fdb{i}n", "netns", name])
            sh(["ip", "address", "add", f"{host_address}/30", "dev", f"fdb{i}h"])
            sh(["ip", "link", "set", f"fdb{i}h", "up"])
            for argv in (
                ["ip", "address", "add", f"{address}/30", "dev", f"fdb{i}n"],
                ["ip", "link", "set", f"fdb{i}n", "up"],
                ["ip", "link", "set", "lo", "up"],
                ["ip", "route", "add", "default", "via", host_address],
            ):
                sh(["ip", "netns", "exec", name, *argv])
            # The rehearsal forwards only its own subnet; these hosts are the bench's.
            sh(["iptables", "-I", "FORWARD", "-s", network, "-j", "ACCEPT"])
            sh(["iptables", "-I", "FORWARD", "-d", network, "-j", "ACCEPT"])
        yield names
    finally:
        for i, name in enumerate(names):
            network = load_subnet(i)[0]
            sh(["iptables", "-D", "FORWARD", "-s", network, "-j", "ACCEPT"], check=False)
            sh(["iptables", "-D", "FORWARD", "-d", network, "-j", "ACCEPT"], check=False)
            sh(["ip", "link", "delete", f"fdb{i}h"], check=False)
            sh(["ip", "netns", "delete", name], check=False)


def cpu_times() -> dict[int, tuple[int, int]]:
    """Each host CPU's (busy, all) time from /proc/stat, in clock ticks."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]
            times[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))  # idle and iowait are not busy
    return times


def measure(hosts: list[str], url: str, headers: dict[str, str], script: Path, seconds: int = SECONDS) -> Cell:
    """A cell: WARM_UP_SECONDS of load not counted, then `seconds` counted, with how busy both CPUs were."""
    wrk(hosts, url, WARM_UP_SECONDS, headers, script)
    before = cpu_times()
    cell = wrk(hosts, url, seconds, headers, script)
    after = cpu_times()

    def busy(cpu: int) -> float:
        return (after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1])

    cell.busy = (busy(MACHINE_CPU), busy(LOAD_CPU))
    return cell


def wrk(hosts: list[str], url: str, seconds: int, headers: dict[str, str], script: Path) -> Cell:
    """wrk from every load host at once; requests summed, p50 the median of the hosts', p99 the worst host's."""
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    processes = [
        subprocess.Popen(
            [
                "ip", "netns", "exec", host, "taskset", "-c", str(LOAD_CPU), "wrk", "-t1",
                f"-c{CONNECTIONS_PER_HOST}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), *header_args, url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in hosts
    ]  # fmt: skip
    results = []
    for process in processes:
        out, err = process.communicate(timeout=seconds + 60)
        line = next((line for line in out.splitlines() if line.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no report: {err.strip() or out.strip()}")
        results.append(json.loads(line))
    requests = sum(r["requests"] for r in results)
    refused = sum(r["status"] for r in results)
    failed = sum(r[k] for r in results for k in ("connect", "read", "write", "timeout"))
    seconds_run = max(r["seconds"] for r in results)
    return Cell(
        stack="",
        endpoint="",
        rps=(requests - refused - failed) / seconds_run,
        p50_ms=statistics.median(r["p50"] for r in results) / 1000,
        p99_ms=max(r["p99"] for r in results) / 1000,
        refused=refused,
        failed=failed,
        requests=requests,
    )


class Bench:
    def __init__(self, machine: nspawn.Machine, layout: ServerLayout) -> None:
        self.machine, self.layout = machine, layout

    def guest(self, argv: list[str], timeout: float = 120) -> str:
        result = self.machine.guest(argv, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on the machine: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def app_unit(self, unit: str, argv: list[str], group: str | None = None) -> None:
        """A process of the app as the live service runs it: its user, release, environment."""
        current = self.layout.current
        self.guest(
            [
                "systemd-run", f"--unit={unit}", f"--uid={self.layout.app_user}",
                f"--gid={group or self.layout.app_user}",
                f"--working-directory={current}/app", f"--property=EnvironmentFile={current}/release.env",
                f"--property=EnvironmentFile=-{self.layout.env_file}",
                f"--property=StateDirectory={self.layout.app_name}", *argv,
            ]
        )  # fmt: skip

    def start_stacks(self, wsgi_target: str, workers: int) -> None:
        venv = f"{self.layout.current}/app/.venv/bin"
        self.app_unit(
            "bench-devserver",
            [f"{venv}/flask", "--app", wsgi_target, "run", "--host", "0.0.0.0", "--port", "5000"],  # noqa: S104
        )
        self.app_unit("bench-gunicorn", [f"{venv}/gunicorn", "--workers", str(workers), "--bind", "0.0.0.0:8001",
                                         wsgi_target])  # fmt: skip
        # The same workers as threads (4 each): the alternative to sync workers behind nginx.
        self.app_unit("bench-gthread", [f"{venv}/gunicorn", "--workers", str(workers), "--worker-class", "gthread",
                                        "--threads", "4", "--bind", "0.0.0.0:8003", wsgi_target])  # fmt: skip
        # The tutorial's unit: group www-data, so that nginx may use the socket its umask (007) leaves.
        self.guest(["install", "-d", "-m", "0770", "-o", self.layout.app_user, "-g", "www-data", "/run/bench-tutorial"])
        self.app_unit(
            "bench-tutorial-gunicorn",
            [f"{venv}/gunicorn", "--workers", "3", "--bind", "unix:/run/bench-tutorial/app.sock", "-m", "007",
             wsgi_target],
            group="www-data",
        )  # fmt: skip
        # The tutorial's nginx: a second master with Ubuntu's stock nginx.conf (768 connections a worker).
        tutorial = Path(self.machine.path("/etc/bench-tutorial"))
        tutorial.mkdir(exist_ok=True)
        stock = self.machine.path("/etc/nginx/nginx.conf").read_text()
        stock = re.sub(r"worker_connections\s+\d+;", "worker_connections 768;", stock)
        stock = stock.replace("include /etc/nginx/sites-enabled/*;", "include /etc/bench-tutorial/site.conf;")
        stock = stock.replace("include /etc/nginx/modules-enabled/*.conf;", "")
        stock = stock.replace("pid /run/nginx.pid;", "pid /run/bench-tutorial-nginx.pid;")
        (tutorial / "nginx.conf").write_text(stock)
        (tutorial / "site.conf").write_text(TUTORIAL_SITE.format(port=8002, socket="/run/bench-tutorial/app.sock"))
        self.guest(["nginx", "-t", "-c", "/etc/bench-tutorial/nginx.conf"])
        self.guest(["systemd-run", "--unit=bench-tutorial-nginx", "nginx", "-c", "/etc/bench-tutorial/nginx.conf",
                    "-g", "daemon off;"])  # fmt: skip
        for port in ("5000", "8001", "8002", "8003"):
            self.guest(["ufw", "allow", f"{port}/tcp"])
        deadline = time.monotonic() + 60
        for _, stack_port in STACKS:
            self.wait_for(stack_port, deadline, f"the stack on port {stack_port} did not answer within 60 s")

    @contextlib.contextmanager
    def without(self, piece: Piece) -> Iterator[None]:
        """The stack with `piece` switched off, restored afterwards."""
        site = self.machine.path(self.layout.nginx_site)
        # Through the guest: `current` is an absolute link, which the host would follow into its own /srv.
        release = self.guest(["readlink", "-f", self.layout.current]).strip()
        conf = self.machine.path(f"{release}/server/gunicorn.conf.py")
        drop_ins = [
            self.machine.path(f"/etc/systemd/system/{unit}.d/zz-bench.conf")
            for unit in ("nginx.service", self.layout.service_unit)
        ]
        site_text, conf_text = site.read_text(), conf.read_text()
        try:
            site.write_text(edited(site_text, piece.site, self.layout.nginx_site))
            conf.write_text(edited(conf_text, piece.gunicorn, "gunicorn.conf.py"))
            for drop_in in drop_ins if piece.service else ():
                drop_in.parent.mkdir(exist_ok=True)
                drop_in.write_text("[Service]\n" + "".join(f"{setting}\n" for setting in piece.service))
            self.apply()
            yield
        finally:
            site.write_text(site_text)
            conf.write_text(conf_text)
            for drop_in in drop_ins:
                drop_in.unlink(missing_ok=True)
            self.apply()

    def apply(self) -> None:
        """The site's and the service's files as they are now, in the running nginx and Gunicorn."""
        self.guest(["nginx", "-t", "-q"])
        self.guest(["systemctl", "daemon-reload"])
        self.guest(["systemctl", "restart", "nginx.service", self.layout.service_unit])
        self.wait_for(80, time.monotonic() + 60, "this project's stack did not answer within 60 s of a restart")

    def wait_for(self, port: int, deadline: float, failure: str) -> None:
        """Until the stack on `port` answers its health path; `failure` past the deadline."""
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.machine.address}:{port}/healthz", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(failure) from None
                time.sleep(0.5)

    def answer(self, path: str) -> bytes:
        """The body of this project's answer at `path`, without a cookie."""
        with urllib.request.urlopen(f"http://{self.machine.address}{path}", timeout=30) as answer:
            return bytes(answer.read())

    def static_copy(self, static_dir: str, endpoint: str, name: str) -> None:
        """A static file `name` of the release with the bytes of the answer at `endpoint`, for nginx to serve
        beside the cached answer: the same bytes from a file and from the micro-cache."""
        release = self.guest(["readlink", "-f", self.layout.current]).strip()
        path = self.machine.path(f"{release}/app/{static_dir}/{name}")
        path.write_bytes(self.answer(endpoint))
        path.chmod(0o644)

    def rss_mib(self, units: set[str]) -> float:
        """Resident memory of every process of these systemd units, in MiB."""
        out = self.guest(["ps", "-eo", "rss=,unit="])
        return (
            sum(int(rss) for rss, unit in (line.split() for line in out.splitlines() if line.strip()) if unit in units)
            / 1024
        )


def slow_clients(hosts: list[str], address: str, port: int, count: int, seconds: int) -> list[subprocess.Popen[str]]:
    """`count` connections that send a header line every few seconds and never finish, spread over `hosts`."""
    code = (
        "import socket, sys, time\n"
        "address, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])\n"
        "end = time.monotonic() + seconds\n"
        "conns = []\n"
        "def opened():\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((address, port)); s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n'); return s\n"
        "    except OSError:\n"
        "        s.close(); return None\n"
        "while time.monotonic() < end:\n"
        "    conns = [c for c in conns if c is not None]\n"
        "    while len(conns) < count and time.monotonic() < end:\n"
        "        conns.append(opened())\n"
        "    for c in list(conns):\n"
        "        try:\n"
        "            c.sendall(b'X-a: b\\r\\n')\n"
        "        except OSError:\n"
        "            c.close(); conns.remove(c)\n"
        "    time.sleep(2)\n"
    )
    each = count // len(hosts)
    return [
        subprocess.Popen(
            ["ip", "netns", "exec", host, "taskset", "-c", str(LOAD_CPU), sys.executable, "-c", code, address,
             str(port), str(each), str(seconds)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for host in hosts
    ]  # fmt: skip


def normal_client_share(url: str, seconds: float, rate: float = 10) -> tuple[int, int]:
    """GET `url` `rate` times a second for `seconds` from the host; (answered 2xx, sent)."""
    answered = sent = 0
    lock = threading.Lock()

    def one() -> None:
        nonlocal answered
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            if response.status < 300:
                with lock:
                    answered += 1

    with ThreadPoolExecutor(max_workers=64) as pool:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            pool.submit(one)
            sent += 1
            time.sleep(1 / rate)
    return answered, sent


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, timeout=1800)
    return time.monotonic() - start


def measure_rehearse(report: Report) -> None:
    """Cold (no cached image) and warm `scripts/rehearse`, then a code-only redeploy."""
    rehearse = [str(PROJECT_DIR / "scripts/rehearse")]
    with tempfile.TemporaryDirectory() as cache:
        say("scripts/rehearse, cold: a new image")
        report.seconds["scripts/rehearse, cold (image built)"] = timed(
            rehearse, {**os.environ, "REHEARSAL_CACHE_DIR": cache}
        )
        run.down()  # before its image goes
    say("scripts/rehearse, warm")
    report.seconds["scripts/rehearse, warm (image cached)"] = timed(rehearse)
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app"
        shutil.copytree(PROJECT_DIR / "app", app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        views = app / "weather/views.py"
        views.write_text(views.read_text() + "\n# A code-only change.\n")
        say("a code-only redeploy")
        start = time.monotonic()
        run.redeploy("dev", {"appDir": str(app)})
        report.seconds["code-only redeploy"] = time.monotonic() - start
    run.redeploy("dev", {})


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (it boots the rehearsal machine)", file=sys.stderr)
        return 2
    report = Report()
    if "--no-timings" not in sys.argv[1:]:
        measure_rehearse(report)
    # Like for like: every stack speaks plain HTTP (the tutorial's, before its certbot step).
    overrides = {"https": False}
    run.up("dev", overrides)
    machine = nspawn.Machine()
    settings = run.rehearsal_settings("dev", overrides, machine.public_key())
    bench = Bench(machine, settings.layout)
    try:
        bench.start_stacks(settings.app.wsgi_target, settings.app.workers)
        if settings.app.static_dir:
            for endpoint, name in STATIC_COPIES:
                bench.static_copy(settings.app.static_dir, endpoint, name)
        report.answer_bytes = {endpoint: len(bench.answer(endpoint)) for _, endpoint, _ in CACHED_ROWS}
        with tempfile.TemporaryDirectory() as tmp, load_hosts(LOAD_HOSTS) as hosts:
            script = Path(tmp) / "report.lua"
            script.write_text(WRK_REPORT)
            address = machine.address
            # A cookie, as a signed-in visitor sends: the answers come from the app, never from a cache.
            uncached = {"Cookie": "session=bench"}
            for stack, port in STACKS:
                for endpoint in ENDPOINTS:
                    say(f"{stack}: {endpoint}")
                    cell = measure(hosts, f"http://{address}:{port}{endpoint}", uncached, script)
                    cell.stack, cell.endpoint = stack, endpoint
                    report.cells.append(cell)
            for endpoint in ("/", "/api/forecast"):
                say(f"this project, cached: {endpoint}")
                cell = measure(hosts, f"http://{address}{endpoint}", {}, script)
                cell.stack, cell.endpoint = "this project, cached", endpoint
                report.cached.append(cell)
            for round_ in range(1, ROUNDS + 1):
                for name, endpoint, _ in CACHED_ROWS:
                    say(f"cached and static, round {round_}: {name}")
                    cell = measure(hosts, f"http://{address}{endpoint}", {}, script, ROUND_SECONDS)
                    cell.stack, cell.endpoint, cell.round = name, endpoint, round_
                    report.cached_rounds.append(cell)
            for round_ in range(1, ROUNDS + 1):
                for endpoint in BREAKDOWN_ENDPOINTS:
                    for stack, port in (("tutorial's stack", 8002), ("this project", 80)):
                        say(f"head to head, round {round_}: {stack}: {endpoint}")
                        cell = measure(hosts, f"http://{address}:{port}{endpoint}", uncached, script, ROUND_SECONDS)
                        cell.stack, cell.endpoint, cell.round = stack, endpoint, round_
                        report.head_to_head.append(cell)
            for round_ in range(1, ROUNDS + 1):
                for piece in (None, *PIECES, ALL_PIECES):
                    with bench.without(piece) if piece else contextlib.nullcontext():
                        for endpoint in BREAKDOWN_ENDPOINTS:
                            name = f"without {piece.name}" if piece else "as deployed"
                            say(f"breakdown, round {round_}: {name}: {endpoint}")
                            cell = measure(hosts, f"http://{address}{endpoint}", uncached, script, ROUND_SECONDS)
                            cell.stack, cell.endpoint, cell.round = name, endpoint, round_
                            report.breakdown.append(cell)
            for stack, port in (("tutorial's stack", 8002), ("this project", 80)):
                say(f"{stack}: {SLOW_CLIENTS} slow-header clients for {SLOW_SECONDS} s")
                slow = slow_clients(hosts[:SLOW_HOSTS], address, port, SLOW_CLIENTS, SLOW_SECONDS)
                time.sleep(5)
                report.slow[stack] = normal_client_share(f"http://{address}:{port}/healthz", SLOW_SECONDS - 8)
                for process in slow:
                    process.wait(timeout=60)
        report.memory_mib["this project (nginx + Gunicorn)"] = bench.rss_mib(
            {"nginx.service", bench.layout.service_unit}
        )
        report.memory_mib["tutorial's stack (nginx + Gunicorn)"] = bench.rss_mib(
            {"bench-tutorial-nginx.service", "bench-tutorial-gunicorn.service"}
        )
    finally:
        run.down()
    baseline = {c.endpoint: c for c in report.cells if c.stack == BASELINE}
    for cell in report.cells + report.cached:
        cell.ratio = cell.rps / baseline[cell.endpoint].rps if baseline[cell.endpoint].rps else float("nan")
    text = render(report)
    print(text)
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text(document(text))
    chart(report, DOCS / "benchmarks.png")
    say(f"wrote {DOCS / 'benchmarks.md'} and {DOCS / 'benchmarks.png'}")
    return 0


def spread_of(values: list[float]) -> float:
    """How far apart measurements of the same thing are: their range, as a share of their median."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else float("nan")


def by_round(cells: list[Cell], stack: str, endpoint: str) -> dict[int, Cell]:
    return {c.round: c for c in cells if c.stack == stack and c.endpoint == endpoint}


def round_ratios(ours: dict[int, Cell], theirs: dict[int, Cell]) -> list[float]:
    """`ours` against `theirs`, round by round: each ratio within the round both were measured in."""
    return [ours[r].rps / theirs[r].rps for r in sorted(ours) if r in theirs and theirs[r].rps]


def medians(rounds: dict[int, Cell]) -> str:
    """Two table cells: the median good answers a second and the median p99 over the rounds."""
    return (
        f"{statistics.median(c.rps for c in rounds.values()):.0f} "
        f"| {statistics.median(c.p99_ms for c in rounds.values()):.1f}"
    )


def head_to_head_table(cells: list[Cell]) -> list[str]:
    """Each endpoint: both stacks' median good answers and p99, and this one's ratio in each round."""
    if not cells:
        return []
    lines = [
        "",
        f"| head to head, uncached, {ROUNDS} rounds | tutorial's good answers/s | p99 ms | this project's "
        "| p99 ms | ratio in each round | median ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for endpoint in BREAKDOWN_ENDPOINTS:
        theirs, ours = by_round(cells, BASELINE, endpoint), by_round(cells, "this project", endpoint)
        ratios = round_ratios(ours, theirs)
        lines.append(
            f"| `{endpoint}` | {medians(theirs)} | {medians(ours)} "
            f"| {', '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f} |"
        )
    return lines


def breakdown_table(cells: list[Cell]) -> list[str]:
    """Each piece switched off: median good answers and p99 over the rounds, and the median of its ratio to the
    stack as deployed in the same round; first, how far the stack as deployed moved across the rounds."""
    if not cells:
        return []
    spread = ", ".join(
        f"{spread_of([c.rps for c in by_round(cells, 'as deployed', e).values()]):.0%} on `{e}`"
        for e in BREAKDOWN_ENDPOINTS
    )
    lines = [
        "",
        f"Across its {ROUNDS} rounds the stack as deployed moved by {spread} (range over median): a piece whose "
        "ratio is closer to 1.00 than that costs less than the machine's noise.",
        "",
        "| this project, uncached | "
        + " | ".join(f"`{e}` good answers/s | p99 ms | vs as deployed" for e in BREAKDOWN_ENDPOINTS)
        + " |",
        "| --- |" + " ---: | ---: | ---: |" * len(BREAKDOWN_ENDPOINTS),
    ]
    for name in dict.fromkeys(c.stack for c in cells):
        columns = []
        for endpoint in BREAKDOWN_ENDPOINTS:
            rounds, deployed = by_round(cells, name, endpoint), by_round(cells, "as deployed", endpoint)
            columns.append(f"{medians(rounds)} | {statistics.median(round_ratios(rounds, deployed)):.2f}")
        lines.append(f"| {name} | " + " | ".join(columns) + " |")
    return lines


def per_cpu_second(cell: Cell) -> float:
    """Good answers per second of the machine's CPU: what the stack would serve with the machine the limit,
    for a row the load generator held back (its rate is a floor; this is not)."""
    return cell.rps / cell.busy[0] if cell.busy[0] > 0 else float("nan")


def cached_table(cells: list[Cell], answer_bytes: dict[str, int]) -> list[str]:
    """Each row against the one it is compared with, within each round: by rate, and per second of the
    machine's CPU, which holds whichever side limited the round."""
    if not cells:
        return []
    lines = [
        "",
        f"| cached and static, {ROUNDS} rounds | bytes | good answers/s | machine CPU busy "
        "| answers per machine CPU-second | against | share per CPU-second, each round | median share, by rate "
        "| median share, per CPU-second |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, endpoint, against in CACHED_ROWS:
        rounds = by_round(cells, name, endpoint)
        base = by_round(cells, against, next(e for n, e, _ in CACHED_ROWS if n == against))
        by_rate = round_ratios(rounds, base)
        by_cpu = [per_cpu_second(rounds[r]) / per_cpu_second(base[r]) for r in sorted(rounds) if r in base]
        size = answer_bytes.get(endpoint)
        lines.append(
            f"| {name} | {size if size is not None else '-'} | {statistics.median(c.rps for c in rounds.values()):.0f} "
            f"| {statistics.median(c.busy[0] for c in rounds.values()):.0%} "
            f"| {statistics.median(per_cpu_second(c) for c in rounds.values()):.0f} | {against} "
            f"| {', '.join(f'{r:.2f}' for r in by_cpu)} | {statistics.median(by_rate):.2f} "
            f"| {statistics.median(by_cpu):.2f} |"
        )
    return lines


def render(report: Report) -> str:
    lines = [
        "| stack | endpoint | good answers/s | p50 ms | p99 ms | refused | failed | CPU busy, machine / load "
        "| vs tutorial |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in report.cells + report.cached:
        lines.append(
            f"| {cell.stack} | `{cell.endpoint}` | {cell.rps:.0f} | {cell.p50_ms:.1f} | {cell.p99_ms:.1f} | "
            f"{cell.refused} | {cell.failed} | {cell.busy[0]:.0%} / {cell.busy[1]:.0%} | {cell.ratio:.2f} |"
        )
    lines += cached_table(report.cached_rounds, report.answer_bytes)
    lines += head_to_head_table(report.head_to_head)
    lines += breakdown_table(report.breakdown)
    lines += ["", f"| {SLOW_CLIENTS} slow-header clients for {SLOW_SECONDS} s | normal requests answered |"]
    lines += ["| --- | ---: |"]
    lines += [f"| {stack} | {ok} of {sent} ({100 * ok / sent:.1f}%) |" for stack, (ok, sent) in report.slow.items()]
    lines += ["", "| after the run | MiB (RSS) |", "| --- | ---: |"]
    lines += [f"| {name} | {mib:.0f} |" for name, mib in report.memory_mib.items()]
    lines += ["", "| step | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in report.seconds.items()]
    return "\n".join(lines) + "\n"


def document(table: str) -> str:
    return f"""# Benchmarks

`scripts/bench` measured these on the rehearsal machine (held to an `s-1vcpu-1gb` droplet: 1 vCPU,
1 GiB, on the host's CPU {MACHINE_CPU}), every stack serving the example app from the same release, in one run.
Load: wrk, {WARM_UP_SECONDS} s not counted then {SECONDS} s counted per cell, from {LOAD_HOSTS} addresses on the
host (1 connection each), each in a network namespace of its own, on the host's CPU {LOAD_CPU}. This project's
nginx allows each address 100 requests a second (bursts of 200) and 50 connections, so each connection waits
{REQUEST_SPACING_MS} ms between its requests: no address passes the limit, and no row is made of 429s.
The slow clients come from {SLOW_HOSTS} of the addresses, {SLOW_CLIENTS // SLOW_HOSTS} each.

Good answers are 2xx and 3xx, and only they make the rates, the ratios and the chart; refused counts the other
answers (429, 502), failed the connections that broke or timed out. Uncached rows send a session cookie, so
this project's nginx passes every request to the app; the "cached" rows send none and are answered by its
micro-cache. p50 is the median of the addresses' medians, p99 the worst address's. CPU busy says which side
was the limit: a row whose machine CPU is short of 100% was held back by the load generator, and its rate is
a floor, not the stack's. Every stack speaks plain HTTP (the tutorial's before its certbot step; this
project's with `https` off), so TLS is not compared.

{table}
The first table measures each cell once. The head to head with the tutorial's stack and the breakdown are
measured in {ROUNDS} rounds of {ROUND_SECONDS} s cells, the stacks (or the pieces) one after the other in each
round, and give medians: a ratio is taken within a round, so a slow minute of the host slows both sides of it.
The cached answers and nginx's static files (no cookie: nginx alone answers them) are measured in rounds
too, each cached answer beside a static file of its own bytes (a copy the bench adds to the release's static
directory on its machine). One host CPU of load cannot keep nginx busy with them, so their rates are floors;
what an answer costs the machine is its CPU time, and the share per CPU-second (good answers per second of
the machine's busy CPU, against the compared row's in the same round) compares them whichever side was the
limit.
The breakdown is this project's uncached path as deployed and then with each piece it adds switched off in
turn (on the benchmark's machine only, by editing the rendered files; no setting switches them off): the
seccomp filters systemd puts on nginx and Gunicorn, the per-address limits, the micro-cache's lookup and
bypass, the security headers, the request ids (nginx's header and Gunicorn's hooks) and the access log.

Stacks: the Flask development server (`flask run`); bare Gunicorn (`--workers` as this project
picks, on a TCP port), with sync workers and with gthread workers of 4 threads; the DigitalOcean
tutorial's "How To Serve Flask Applications with Gunicorn and Nginx on Ubuntu" (3 sync workers on a
unix socket, nginx with Ubuntu's stock `nginx.conf` and `include proxy_params`, Flask serving
`/static/`); this project's stack as `scripts/rehearse` deploys it.

Reproduce (root, on a machine where `scripts/rehearse` runs; about 30 minutes):

```sh
scripts/bench
```

![requests a second by stack and endpoint](benchmarks.png)
"""


def chart(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacks = [name for name, _ in STACKS]
    figure, axis = plt.subplots(figsize=(9, 4.5), dpi=100)
    width = 0.8 / len(ENDPOINTS)
    for index, endpoint in enumerate(ENDPOINTS):
        values = [next(c.rps for c in report.cells if c.stack == s and c.endpoint == endpoint) for s in stacks]
        axis.bar([x + index * width for x in range(len(stacks))], values, width, label=endpoint)
    for cell in report.cached:
        axis.axhline(cell.rps, linestyle="--", linewidth=1, color="grey")
        axis.annotate(f"this project, cached {cell.endpoint}", (len(stacks) - 1, cell.rps), fontsize=8,
                      ha="right", va="bottom")  # fmt: skip
    axis.set_xticks([x + width for x in range(len(stacks))], stacks)
    axis.set_ylabel("requests per second")
    axis.set_title("The example app on 1 vCPU, 1 GiB (uncached; dashed: cached)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
