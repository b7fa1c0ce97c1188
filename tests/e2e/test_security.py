"""The security baseline, measured on the booted rehearsal."""

from __future__ import annotations

import re
import shlex
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import pytest

from core.cloudinit import render_user_data
from core.render import render_deploy_script
from rehearsal import run
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.load import Load, LoadResult, SlowClients
from tests.e2e.test_lynis import MINIMUM_INDEX, lynis

pytestmark = pytest.mark.e2e

SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy")


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up({})


def test_gunicorn_unit_is_sandboxed(rehearsal: Rehearsal, figures: list[str]) -> None:
    report = rehearsal.machine.guest(["systemd-analyze", "security", "--no-pager", "weather.service"]).stdout
    exposure = float(re.search(r"Overall exposure level for weather.service: ([0-9.]+)", report)[1])  # type: ignore[index]

    figures.append(f"systemd-analyze security weather.service: {exposure}")
    assert exposure <= 2.0
    # ...and the app still works inside it, writing only its state directory.
    assert rehearsal.get("/healthz")[0] == 200


def test_security_headers_on_pages_and_static_files(rehearsal: Rehearsal) -> None:
    for path in ("/", "/api/forecast?days=2", "/static/style.css"):
        status, headers, _ = rehearsal.get(path)
        assert status == 200
        for header in SECURITY_HEADERS:
            assert header in headers, (path, header)
        assert headers["Server"] == "nginx"
    assert "frame-ancestors 'none'" in rehearsal.get("/")[1]["Content-Security-Policy"]
    # No directory listings.
    status, _, body = rehearsal.get("/static/")
    assert status == 403
    assert b"style.css" not in body


class InlineCode(HTMLParser):
    """Collects what a strict Content-Security-Policy would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "style" or "style" in names or any(name.startswith("on") for name in names):
            self.blocked.append(f"inline style or handler in <{tag}>")
        if tag == "script" and not names.get("src"):
            self.blocked.append("inline <script>")
        for attribute in ("src", "href"):
            value = names.get(attribute) or ""
            if value.startswith(("http:", "https:", "//")) and "10.213.7.2" not in value:
                self.blocked.append(f"{attribute}={value} on another origin")


def test_example_app_satisfies_the_content_security_policy(rehearsal: Rehearsal) -> None:
    parser = InlineCode()
    parser.feed(rehearsal.get("/")[2].decode())

    assert parser.blocked == []


def test_request_burst_gets_429_and_the_app_stays_healthy(rehearsal: Rehearsal, figures: list[str]) -> None:
    def one(_: int) -> int:
        try:
            return rehearsal.get("/static/style.css")[0]
        except OSError:
            return -1

    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(one, range(1500)))

    figures.append(
        f"burst of 1500 requests from one address: {statuses.count(200)} answered, {statuses.count(429)} got 429"
    )
    assert statuses.count(429) > 0
    assert set(statuses) <= {200, 429}
    # Once the address slows down it is served again: the burst allowance (200) refills at 100 a second.
    time.sleep(3)
    assert [rehearsal.get("/healthz")[0] for _ in range(5)] == [200] * 5
    assert rehearsal.host().service("weather.service").is_running


def raw_request(rehearsal: Rehearsal, request: bytes) -> bytes:
    """One request written by hand to the site over HTTPS; the start of the answer."""
    with (
        socket.create_connection((rehearsal.machine.address, 443), timeout=10) as connection,
        rehearsal.context.wrap_socket(connection, server_hostname=rehearsal.machine.address) as tls,
    ):
        tls.sendall(request)
        return tls.recv(200)


def reached_gunicorn(rehearsal: Rehearsal, wait_for: str) -> str:
    """The lines of nginx's access log (its one log of requests) that Gunicorn answered: `app=` has its time."""
    return "\n".join(line for line in rehearsal.access_log(wait_for) if " app=-" not in line)


def test_oversized_headers_and_bodies_never_reach_gunicorn(rehearsal: Rehearsal) -> None:
    marker = uuid.uuid4().hex
    host = rehearsal.machine.address
    big_header = raw_request(
        rehearsal, f"GET /header-{marker} HTTP/1.1\r\nHost: {host}\r\nX-Big: {'a' * 16384}\r\n\r\n".encode()
    )
    big_body = raw_request(
        rehearsal,
        f"POST /body-{marker} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {2 * 1024 * 1024}\r\n\r\n".encode(),
    )
    control = rehearsal.get(f"/control-{marker}")[0]

    assert big_header.startswith(b"HTTP/1.1 400")
    assert big_body.startswith(b"HTTP/1.1 413")
    assert control == 404
    log = reached_gunicorn(rehearsal, wait_for=f"/control-{marker}")
    assert f"/control-{marker}" in log  # the check can see what does reach Gunicorn
    assert f"/header-{marker}" not in log
    assert f"/body-{marker}" not in log


def test_secret_is_only_in_the_environment_file(rehearsal: Rehearsal) -> None:
    secret = run.machine_secret()
    host = rehearsal.host()

    assert secret in host.file("/etc/weather/env").content_string
    assert secret not in render_user_data(rehearsal.settings, rehearsal.machine.host_keys())
    assert secret not in render_deploy_script(rehearsal.settings)
    assert secret not in host.check_output("cat /var/lib/cloud/instance/user-data.txt")
    assert secret not in host.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    # Searched here, not with grep there: a secret on a command line would land in the journal (sudo logs it).
    assert secret not in host.check_output("journalctl --no-pager -o cat")


def test_ssh_is_guarded_and_updates_install_themselves(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()

    assert host.service("fail2ban").is_running
    assert "Status for the jail: sshd" in host.check_output("fail2ban-client status sshd")
    assert host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade") == (
        'APT::Periodic::Unattended-Upgrade "1";'
    )
    assert host.package("unattended-upgrades").is_installed
    no_sudo = host.run("sudo -l -U weather")
    assert "not allowed to run sudo" in no_sudo.stdout
    assert host.user("weather").shell == "/usr/sbin/nologin"


SLOW_CLIENTS = 300
SLOW_SECONDS = 20


def slow_client_run(rehearsal: Rehearsal, port: int, url: str) -> tuple[SlowClients, LoadResult]:
    """Slow-header clients on `port` while a normal client asks for `url` 20 times a second."""
    with SlowClients(rehearsal.machine.address, port, count=SLOW_CLIENTS, seconds=SLOW_SECONDS) as slow:
        time.sleep(3)  # let the slow connections pile up first
        with Load(url, rate=20, max_seconds=SLOW_SECONDS, timeout=5, context=rehearsal.context) as load:
            time.sleep(SLOW_SECONDS - 5)
    return slow, load.result


def success_rate(result: LoadResult) -> str:
    return f"{100 * len(result.latencies) / max(result.sent, 1):.1f}% of {result.sent} normal requests succeeded"


def test_slow_clients_do_not_starve_the_app(rehearsal: Rehearsal, figures: list[str]) -> None:
    slow, result = slow_client_run(rehearsal, 80, rehearsal.url + "healthz")

    figures.append(
        f"{slow.opened} slow-header clients for {SLOW_SECONDS} s, behind nginx: {success_rate(result)}, "
        f"p99 {result.percentile(99) * 1000:.0f} ms; nginx cut off {slow.cut_off} slow clients"
    )
    assert slow.opened >= SLOW_CLIENTS * 0.9
    assert result.failures == []
    assert slow.cut_off > 0  # client_header_timeout closed them


def test_slow_clients_against_bare_gunicorn_for_comparison(rehearsal: Rehearsal, figures: list[str]) -> None:
    host = rehearsal.host()
    current = "/srv/weather/current"
    host.run_test(
        "systemd-run --unit=bare-gunicorn --uid=weather --gid=weather "
        f"--working-directory={current}/app --property=EnvironmentFile={current}/release.env "
        f"{current}/app/.venv/bin/gunicorn --workers {rehearsal.settings.app.workers} --bind 0.0.0.0:8000 wsgi:app"
    )
    host.run_test("ufw allow 8000/tcp")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and host.run("curl -fsS -o /dev/null http://127.0.0.1:8000/healthz").rc:
            time.sleep(0.5)
        slow, result = slow_client_run(rehearsal, 8000, f"http://{rehearsal.machine.address}:8000/healthz")
    finally:
        host.run("ufw delete allow 8000/tcp")
        host.run("systemctl stop bare-gunicorn")

    figures.append(
        f"{slow.opened} slow-header clients for {SLOW_SECONDS} s, bare Gunicorn (sync, "
        f"{rehearsal.settings.app.workers} workers): {success_rate(result)}"
    )
    # The comparison is reported, not asserted: this is what nginx in front prevents.
    assert result.sent > 0


def test_the_app_cannot_reach_the_metadata_service_nor_the_host_key_it_serves(rehearsal: Rehearsal) -> None:
    """A droplet's metadata service (169.254.169.254) serves its user-data, with the host keys, to any
    local process; not to the app's user.

    The stand-in serves the machine's own user-data, on 8080 (nginx holds port 80 on every address);
    the rule covers every port.
    """
    machine = rehearsal.machine
    private_key_line = machine.host_keys().ed25519_private.splitlines()[1]
    fake_metadata = (
        "ip address add 169.254.169.254/32 dev lo && "
        "systemd-run --unit=fake-metadata python3 -m http.server --bind 169.254.169.254 "
        "--directory /var/lib/cloud/seed/nocloud 8080"
    )
    assert machine.guest(["sh", "-c", fake_metadata]).returncode == 0
    fetch = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://169.254.169.254:8080/user-data', timeout=5).read().decode())"
    )
    try:
        deadline = time.monotonic() + 20
        # root (cloud-init, say) may: once the stand-in listens, it answers with the host key.
        while private_key_line not in machine.guest(["python3", "-c", fetch]).stdout:
            assert time.monotonic() < deadline, "the metadata stand-in never answered root"
            time.sleep(0.5)

        as_app = rehearsal.host().run(f"bash {rehearsal.layout.deploy_script} run -- python -c {shlex.quote(fetch)}")

        assert as_app.rc == 1
        assert "Connection refused" in as_app.stderr
        assert private_key_line not in as_app.stdout
        assert "169.254.169.254" in machine.guest(["iptables", "-S", "OUTPUT"]).stdout
        # On disk, only root reads the user-data cloud-init kept, and the host key files it wrote.
        for path in ("/var/lib/cloud/instance/user-data.txt", "/etc/ssh/ssh_host_ed25519_key"):
            shown = rehearsal.host().run(f"bash {rehearsal.layout.deploy_script} run -- cat {path}")
            assert shown.rc != 0 and private_key_line not in shown.stdout, path
    finally:
        machine.guest(["sh", "-c", "systemctl stop fake-metadata; ip address del 169.254.169.254/32 dev lo"])


def test_hardening_raises_the_lynis_index(rehearsal: Rehearsal, figures: list[str]) -> None:
    """Last in this module: it installs lynis on the machine. A plain machine's index is in test_lynis.py."""
    after, suggestions = lynis(rehearsal.machine)

    figures.append(f"lynis hardening index with this project's hardening: {after}")
    figures.append(f"lynis suggestions left: {', '.join(suggestions)}")
    assert after >= MINIMUM_INDEX
