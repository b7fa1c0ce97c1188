"""What several droplets share, on the host: DigitalOcean's Load Balancer and Managed PostgreSQL, stood in for.

The balancer is HAProxy, with what matters here of DigitalOcean's: round robin, no
sticky sessions, X-Forwarded-For and X-Forwarded-Proto added, and an active health
check of each machine on the port and path the droplets answer it on, at the same
interval and thresholds (`BALANCER_CHECK`). With `https` it ends HTTPS as the
balancer's rules do (`components/fleet.py`): HTTP/2, TLS 1.2 and 1.3 only, plain HTTP
redirected, with the certificate brought (`balancerCertificate`) or, standing in for
the one DigitalOcean issues for a domain in its DNS, one the rehearsal makes for the
site's names. HAProxy here has no QUIC, so no HTTP/3. The database is Debian's PostgreSQL in a network
namespace of its own, with TLS and a password, on a subnet that only the
machines' addresses may reach (a firewall inside the namespace), as a managed
cluster's trusted sources are only the app's droplets. What `up` creates is
written to a state file first, so `down` (from any process) removes exactly that.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.balancer import BALANCER_CHECK
from core.settings import Settings
from rehearsal.nspawn import STATE_DIR, Progress, RehearsalError, kept_secret, run, start_process, stop_process

#: Where the balancer takes visitors' requests: the site's address in a rehearsal of several droplets.
BALANCER_ADDRESS = "127.0.0.1"
BALANCER_PORT = 8800
BALANCER_URL = f"http://{BALANCER_ADDRESS}:{BALANCER_PORT}/"
#: Where it takes HTTPS, with `https`: the site's 443 at DigitalOcean's balancer.
BALANCER_TLS_PORT = 8443
BALANCER_DIR = STATE_DIR / "balancer"

DATABASE_DIR = STATE_DIR / "database"
DATABASE_NETNS = "flaskdroplet-db"
DATABASE_HOST_VETH = "ve-fd-db"
DATABASE_HOST_ADDRESS = "10.213.8.1"
DATABASE_ADDRESS = "10.213.8.2"
DATABASE_PORT = 5432
DATABASE_PREFIX = 30
#: The role the app connects as: the owner of its database, as a DigitalOcean cluster's doadmin is.
ADMIN_ROLE = "doadmin"

START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 15


@dataclass
class FleetState:
    """What `up` started on the host for the machines, so that `down` can stop exactly that."""

    balancer_pid: int | None = None
    database_pid: int | None = None
    netns: str | None = None
    directories: list[str] = field(default_factory=list)


def _state_file() -> Path:
    return STATE_DIR / "fleet.json"


def _read() -> FleetState:
    path = _state_file()
    return FleetState(**json.loads(path.read_text())) if path.exists() else FleetState()


def _write(state: FleetState) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(asdict(state), indent=2))


def haproxy_config(servers: dict[str, str], health_path: str, certificate: Path | None = None) -> str:
    """HAProxy in front of the machines (name -> address), checking each as DigitalOcean's balancer does.

    With a `certificate` (PEM: the chain, then its key), it also ends HTTPS and redirects plain HTTP to it.
    """
    check = BALANCER_CHECK
    lines = [
        "# The rehearsal's stand-in for DigitalOcean's Load Balancer. Rendered by flask-droplet.",
        "global",
        "    maxconn 4096",
        "    # What the balancer thinks of each machine, for `balancer_servers`.",
        f"    stats socket {BALANCER_DIR / 'haproxy.sock'} mode 600 level user",
        "defaults",
        "    mode http",
        "    timeout connect 3s",
        "    timeout client 30s",
        "    timeout server 30s",
        f"    timeout check {check.timeout_seconds}s",
        "    # The visitor's address, for the droplets' per-address limits and logs.",
        "    option forwardfor",
        "frontend site",
        f"    bind {BALANCER_ADDRESS}:{BALANCER_PORT}",
        "    # The scheme the visitor used, for the droplets' nginx (HSTS goes with HTTPS only), whatever they sent.",
        "    http-request set-header X-Forwarded-Proto http",
        # As DigitalOcean's redirect: to HTTPS on its default port (443), whatever port the visitor came in on.
        *(
            ["    http-request redirect location https://%[req.hdr(host),field(1,:)]%[capture.req.uri] code 301"]
            if certificate is not None
            else []
        ),
        "    default_backend droplets",
    ]
    if certificate is not None:
        lines += [
            "frontend site-tls",
            f"    bind {BALANCER_ADDRESS}:{BALANCER_TLS_PORT} ssl crt {certificate} alpn h2,http/1.1 "
            "ssl-min-ver TLSv1.2",
            "    http-request set-header X-Forwarded-Proto https",
            "    default_backend droplets",
        ]
    lines += [
        "backend droplets",
        "    # Round robin and no sticky sessions: any droplet may answer any request.",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {health_path} ver HTTP/1.1 hdr Host balancer",
        "    http-check expect status 200-399",
        f"    default-server check port {check.port} inter {check.interval_seconds}s "
        f"fall {check.unhealthy_threshold} rise {check.healthy_threshold}",
        *(f"    server {name} {address}:80" for name, address in servers.items()),
    ]
    return "\n".join(lines) + "\n"


def site_certificate(settings: Settings) -> Path:
    """The balancer's certificate and key in one PEM file (mode 0600), as HAProxy takes them.

    The brought certificate and its key when the stack has them; otherwise one made here for the
    site's names, as DigitalOcean issues one for a domain whose DNS it hosts (its own, self-signed,
    in `site.crt`, for a client to trust).
    """
    BALANCER_DIR.mkdir(parents=True, exist_ok=True)
    combined = BALANCER_DIR / "site.pem"
    combined.touch(mode=0o600)
    brought = settings.app.site.balancer_certificate
    if brought is not None:
        combined.write_text(brought.leaf + brought.intermediates + str(settings.app.site.balancer_certificate_key))
        return combined
    names = ",".join(f"DNS:{name}" for name in settings.app.site.host_names)
    run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "90", "-subj", f"/CN={settings.app.site.host_names[0]}", "-addext", f"subjectAltName={names}",
            "-keyout", str(BALANCER_DIR / "site.key"), "-out", str(BALANCER_DIR / "site.crt"),
        ]
    )  # fmt: skip
    combined.write_text((BALANCER_DIR / "site.crt").read_text() + (BALANCER_DIR / "site.key").read_text())
    return combined


def start_balancer(servers: dict[str, str], settings: Settings, progress: Progress) -> str:
    """Start the balancer in front of `servers` (name -> address); returns the site's URL once it accepts connections.

    With `https`, the URL is the site's domain at the balancer's HTTPS port (the domain resolves only where
    the visitor says so, e.g. curl's --resolve).
    """
    state = _read()
    BALANCER_DIR.mkdir(parents=True, exist_ok=True)
    state.directories.append(str(BALANCER_DIR))
    _write(state)
    tls = settings.app.site.https
    certificate = site_certificate(settings) if tls else None
    config = BALANCER_DIR / "haproxy.cfg"
    config.write_text(haproxy_config(servers, settings.app.health_path, certificate))
    run(["haproxy", "-c", "-q", "-f", str(config)])
    progress(f"balancer: HAProxy at {BALANCER_URL}, checking {', '.join(servers)} on :{BALANCER_CHECK.port}")
    state.balancer_pid = start_process(["haproxy", "-db", "-f", str(config)], BALANCER_DIR / "haproxy.log")
    _write(state)
    port = BALANCER_TLS_PORT if tls else BALANCER_PORT
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while run(["bash", "-c", f"exec 3<>/dev/tcp/{BALANCER_ADDRESS}/{port}"], check=False).returncode:
        if time.monotonic() > deadline:
            raise RehearsalError(f"HAProxy did not listen within {START_TIMEOUT_SECONDS} s; see {BALANCER_DIR}")
        time.sleep(0.2)
    if tls:
        return f"https://{settings.app.site.domain}:{BALANCER_TLS_PORT}/"
    return BALANCER_URL


def balancer_servers() -> dict[str, str]:
    """Each machine's state in the balancer's rotation: UP, DOWN, or a transition such as "DOWN 1/2"."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(BALANCER_DIR / "haproxy.sock"))
        connection.sendall(b"show stat\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode().lstrip("# "))))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row["pxname"] == "droplets" and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def _in_database_netns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", DATABASE_NETNS, *argv]


def _postgres_bin(program: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise RehearsalError("PostgreSQL is not installed (Debian's postgresql package); run scripts/install-deps")
    return str(versions[-1])


def database_password() -> str:
    """The app's database password, made once per rehearsal and kept (mode 0600) beside its state."""
    return kept_secret("database-secret", 24)


def database_url(app_name: str) -> str:
    """The app's DATABASE_URL, as a managed cluster's connection string: a password and TLS required."""
    return (
        f"postgresql://{ADMIN_ROLE}:{database_password()}@{DATABASE_ADDRESS}:{DATABASE_PORT}/{app_name}?sslmode=require"
    )


def start_database(app_name: str, trusted: list[str], progress: Progress) -> None:
    """PostgreSQL in its own network namespace, with a database and a user for the app, reachable from `trusted`.

    Only the addresses in `trusted` (the machines') reach its port; everything else is dropped, as a
    managed cluster's firewall drops what is not among its trusted sources.
    """
    state = _read()
    state.netns = DATABASE_NETNS
    state.directories.append(str(DATABASE_DIR))
    _write(state)
    run(["ip", "netns", "add", DATABASE_NETNS])
    run(["ip", "link", "add", DATABASE_HOST_VETH, "type", "veth", "peer", "name", "eth0", "netns", DATABASE_NETNS])
    run(["ip", "address", "add", f"{DATABASE_HOST_ADDRESS}/{DATABASE_PREFIX}", "dev", DATABASE_HOST_VETH])
    run(["ip", "link", "set", DATABASE_HOST_VETH, "up"])
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "address", "add", f"{DATABASE_ADDRESS}/{DATABASE_PREFIX}", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "route", "add", "default", "via", DATABASE_HOST_ADDRESS],
        ["iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
        ["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        *(
            ["iptables", "-A", "INPUT", "-p", "tcp", "-s", address, "--dport", str(DATABASE_PORT), "-j", "ACCEPT"]
            for address in trusted
        ),
        ["iptables", "-P", "INPUT", "DROP"],
    ):
        run(_in_database_netns(*argv))

    data = DATABASE_DIR / "data"
    DATABASE_DIR.mkdir(parents=True, exist_ok=True)
    # PostgreSQL's own user reaches its data through the rehearsal's directory, which holds no secret of its own.
    os.chmod(STATE_DIR, 0o755)  # noqa: S103
    run(["chown", "postgres:postgres", str(DATABASE_DIR)])
    progress(f"database: PostgreSQL at {DATABASE_ADDRESS}:{DATABASE_PORT}, reachable from {', '.join(trusted)}")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    run(
        [
            *as_postgres, _postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
            "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions",
        ],
        timeout=120,
    )  # fmt: skip
    # A managed cluster takes only TLS connections: so does this one, with a certificate of its own.
    run(
        [
            *as_postgres, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "30", "-subj", f"/CN={DATABASE_ADDRESS}",
            "-keyout", str(data / "server.key"), "-out", str(data / "server.crt"),
        ]
    )  # fmt: skip
    (data / "pg_hba.conf").write_text(
        "local all postgres peer\n"
        + "".join(f"hostssl {app_name} {ADMIN_ROLE} {address}/32 scram-sha-256\n" for address in trusted)
    )
    state.database_pid = start_process(
        _in_database_netns(
            *as_postgres, _postgres_bin("postgres"), "-D", str(data),
            "-c", f"listen_addresses={DATABASE_ADDRESS}", "-c", f"port={DATABASE_PORT}",
            "-c", f"unix_socket_directories={DATABASE_DIR}", "-c", "ssl=on",
        ),
        DATABASE_DIR / "postgres.log",
    )  # fmt: skip
    _write(state)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while run([_postgres_bin("pg_isready"), "-q", "-h", str(DATABASE_DIR)], check=False).returncode:
        if time.monotonic() > deadline:
            raise RehearsalError(f"PostgreSQL did not start within {START_TIMEOUT_SECONDS} s; see {DATABASE_DIR}")
        time.sleep(0.3)
    psql(
        f"CREATE ROLE \"{ADMIN_ROLE}\" LOGIN PASSWORD '{database_password()}';\n"
        f'CREATE DATABASE "{app_name}" OWNER "{ADMIN_ROLE}";\n'
    )


def psql(sql: str, database: str = "postgres") -> str:
    """Run `sql` in `database` as PostgreSQL's own superuser, over the host's socket; its output, unaligned.

    The SQL goes on stdin, so that a password in it is on no command line.
    """
    result = subprocess.run(
        [
            *("runuser", "-u", "postgres", "--", "psql", "-h", str(DATABASE_DIR), "-d", database),
            *("-At", "-v", "ON_ERROR_STOP=1", "-f", "-"),
        ],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RehearsalError(f"psql failed: {result.stderr.strip()}")
    return result.stdout


def down(progress: Progress) -> None:
    """Stop the balancer and the database and remove what they had; safe when nothing is up."""
    state = _read()
    if state.balancer_pid is not None:
        progress("down: stopping the balancer")
        stop_process(state.balancer_pid, seconds=STOP_TIMEOUT_SECONDS)
    if state.database_pid is not None:
        progress("down: stopping the database")
        # SIGINT is PostgreSQL's fast shutdown: it does not wait for the machines' connections to end.
        stop_process(state.database_pid, signal.SIGINT, STOP_TIMEOUT_SECONDS)
    if state.netns is not None:
        run(["ip", "netns", "delete", state.netns], check=False)
    if run(["ip", "link", "show", DATABASE_HOST_VETH], check=False).returncode == 0:
        run(["ip", "link", "delete", DATABASE_HOST_VETH], check=False)
    for directory in state.directories:
        run(["rm", "-rf", "--one-file-system", directory], check=False)
    (STATE_DIR / "database-secret").unlink(missing_ok=True)
    _state_file().unlink(missing_ok=True)
