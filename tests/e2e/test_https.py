"""HTTPS from the first deploy: a real ACME flow against Pebble, for the address and then for a domain.

The machine boots with the default stack (no domain): its certificate is for its
address, in the 160-hour profile. Later tests point test names at it and switch to
a domain, as a user does once they own one.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rehearsal import acme, run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import APP_PORTS, Rehearsal, bring_up, open_tcp_ports
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e

DOMAIN = "weather.test"
RATE = 60


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up({})


def served_certificate(address: str, server_name: str | None = None) -> dict[str, object]:
    """The certificate the site presents, verified against Pebble's root."""
    context = ssl.create_default_context(cafile=str(acme.PEBBLE_DIR / "roots.pem"))
    with (
        socket.create_connection((address, 443), timeout=10) as connection,
        context.wrap_socket(connection, server_hostname=server_name or address) as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate is not None
    return dict(certificate)


def lifetime_hours(certificate: dict[str, object]) -> float:
    def when(field: str) -> datetime:
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(str(certificate[field])), tz=UTC)

    return (when("notAfter") - when("notBefore")).total_seconds() / 3600


def curl(rehearsal: Rehearsal, url: str, *options: str) -> subprocess.CompletedProcess[str]:
    """curl as a browser would reach DOMAIN: the name resolves to the machine, Pebble's root is trusted."""
    return subprocess.run(
        [
            "curl", "--silent", "--show-error", "--max-time", "10", "--cacert", str(acme.PEBBLE_DIR / "roots.pem"),
            "--resolve", f"{DOMAIN}:443:{rehearsal.machine.address}",
            "--resolve", f"www.{DOMAIN}:443:{rehearsal.machine.address}",
            "--resolve", f"{DOMAIN}:80:{rehearsal.machine.address}",
            *options, url,
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def renewal_count(rehearsal: Rehearsal) -> int:
    """How many certificates the app's lineage has held: one more for each one issued."""
    listing = rehearsal.machine.guest(["ls", f"/etc/letsencrypt/archive/{rehearsal.settings.app.name}"]).stdout
    return sum(1 for name in listing.split() if name.startswith("cert"))


def point_at_machine(rehearsal: Rehearsal, names: dict[str, str]) -> None:
    """What a DNS change does for a droplet: these names now resolve to these addresses on the machine."""
    lines = "".join(f"{address} {name}\n" for name, address in names.items())
    result = rehearsal.machine.guest(["sh", "-c", f"printf '{lines}' >> /etc/hosts"])
    assert result.returncode == 0, result.stderr


def test_first_deploy_serves_https_for_the_address(rehearsal: Rehearsal, figures: list[str]) -> None:
    assert rehearsal.url == f"https://{rehearsal.machine.address}/"

    certificate = served_certificate(rehearsal.machine.address)

    assert certificate["subjectAltName"] == (("IP Address", rehearsal.machine.address),)
    # The short-lived profile, as Let's Encrypt requires for an address: 160 hours.
    assert 159 < lifetime_hours(certificate) <= 160
    figures.append(f"certificate for the address: {lifetime_hours(certificate):.0f} hours, chain verified")
    assert rehearsal.get("/healthz")[0] == 200


def test_http_redirects_to_https_and_answers_acme_challenges(rehearsal: Rehearsal) -> None:
    address = rehearsal.machine.address
    with socket.create_connection((address, 80), timeout=10) as connection:
        connection.sendall(
            f"GET /api/forecast?days=2 HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = connection.recv(1000).decode()

    assert answer.startswith("HTTP/1.1 301")
    assert f"Location: https://{address}/api/forecast?days=2\r\n" in answer
    token = "test-token-7Qx"
    challenges = f"{rehearsal.layout.acme_webroot}/.well-known/acme-challenge"
    rehearsal.machine.guest(["sh", "-c", f"mkdir -p {challenges} && echo proof > {challenges}/{token}"])
    with socket.create_connection((address, 80), timeout=10) as connection:
        connection.sendall(
            f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
        )
        challenge = connection.recv(1000).decode()
    assert challenge.startswith("HTTP/1.1 200")
    assert challenge.endswith("proof\n")


def test_hsts_and_http2(rehearsal: Rehearsal) -> None:
    _, headers, _ = rehearsal.get("/")
    assert headers["Strict-Transport-Security"] == "max-age=63072000"

    result = subprocess.run(
        ["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}", "--cacert",
         str(acme.PEBBLE_DIR / "roots.pem"), rehearsal.url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.stdout == "2", result.stderr


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["1.0", "1.1"])
def test_old_tls_is_refused_by_the_server(rehearsal: Rehearsal, version: ssl.TLSVersion) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(acme.PEBBLE_DIR / "roots.pem"))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client's own policy must not be what refuses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python warns of asking for these versions at all
        context.minimum_version = context.maximum_version = version

    with (
        socket.create_connection((rehearsal.machine.address, 443), timeout=10) as connection,
        pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"),
    ):
        context.wrap_socket(connection, server_hostname=rehearsal.machine.address)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"])
def test_tls_12_and_13_are_served(rehearsal: Rehearsal, version: ssl.TLSVersion) -> None:
    context = ssl.create_default_context(cafile=str(acme.PEBBLE_DIR / "roots.pem"))
    context.minimum_version = context.maximum_version = version

    with (
        socket.create_connection((rehearsal.machine.address, 443), timeout=10) as connection,
        context.wrap_socket(connection, server_hostname=rehearsal.machine.address) as tls,
    ):
        assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def test_only_ssh_http_and_https_are_open(rehearsal: Rehearsal) -> None:
    assert open_tcp_ports(rehearsal.machine.address, [*range(1, 1025), *APP_PORTS]) == {22, 80, 443}


def test_nginx_is_sandboxed_and_renewal_is_scheduled(rehearsal: Rehearsal, figures: list[str]) -> None:
    report = rehearsal.machine.guest(["systemd-analyze", "security", "--no-pager", "nginx.service"]).stdout
    exposure = float(report.rsplit("Overall exposure level for nginx.service: ", 1)[1].split()[0])
    figures.append(f"systemd-analyze security nginx.service: {exposure} (Debian's unit alone: 9.6)")
    assert exposure <= 5.0

    host = rehearsal.host()
    timer = host.service("flaskdroplet-certbot-renew.timer")
    assert timer.is_enabled
    assert timer.is_running
    # The timer's service runs: certbot finds nothing due and changes nothing.
    before = renewal_count(rehearsal)
    host.run_test("systemctl start flaskdroplet-certbot-renew.service")
    assert renewal_count(rehearsal) == before


def test_forced_renewal_reloads_nginx_without_failing_a_request(rehearsal: Rehearsal, figures: list[str]) -> None:
    before = served_certificate(rehearsal.machine.address)["serialNumber"]
    issued = renewal_count(rehearsal)
    renew = (
        f"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt {rehearsal.layout.certbot} renew "
        "--force-renewal --no-random-sleep-on-renew"
    )

    with Load(rehearsal.url + "healthz", rate=RATE, context=rehearsal.context) as load:
        time.sleep(1)
        result = rehearsal.host().run(renew)
        time.sleep(2)

    figures.append(f"forced certificate renewal under {RATE} req/s: {load.result.summary()}")
    assert result.rc == 0, result.stderr
    assert renewal_count(rehearsal) == issued + 1
    assert served_certificate(rehearsal.machine.address)["serialNumber"] != before
    assert load.result.failures == []


def test_redeploy_requests_no_new_certificate(rehearsal: Rehearsal, tmp_path: Path) -> None:
    serial = served_certificate(rehearsal.machine.address)["serialNumber"]
    issued = renewal_count(rehearsal)
    app = tmp_path / "app"
    shutil.copytree(rehearsal.settings.app.directory, app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    (app / "wsgi.py").write_text((app / "wsgi.py").read_text() + "\n# a new release\n")

    release_id, ran = run.redeploy("dev", {"appDir": str(app)})

    assert list(ran) == ["bundle", "deploy"]
    assert json.loads(rehearsal.get("/healthz")[2])["version"] == release_id
    assert renewal_count(rehearsal) == issued
    assert served_certificate(rehearsal.machine.address)["serialNumber"] == serial


def test_acme_server_down_keeps_the_last_good_certificate(rehearsal: Rehearsal) -> None:
    serial = served_certificate(rehearsal.machine.address)["serialNumber"]
    nowhere = f"https://{rehearsal.machine.address.rsplit('.', 1)[0]}.1:14999/dir"  # nothing listens there

    run.redeploy("dev", {"acmeServer": nowhere})

    assert rehearsal.get("/healthz")[0] == 200
    assert served_certificate(rehearsal.machine.address)["serialNumber"] == serial


def test_domain_that_does_not_resolve_here_fails_before_any_order(rehearsal: Rehearsal) -> None:
    point_at_machine(rehearsal, {"elsewhere.test": "192.0.2.10"})
    issued = renewal_count(rehearsal)
    live = json.loads(rehearsal.get("/healthz")[2])["version"]

    with pytest.raises(DeployError) as failed:
        run.redeploy("dev", {"domain": "elsewhere.test"})

    assert (
        f"https: elsewhere.test resolves to 192.0.2.10, not to this server's address {rehearsal.machine.address}"
        in str(failed.value)
    )
    assert "No certificate was requested and the live site is unchanged" in str(failed.value)
    assert renewal_count(rehearsal) == issued
    assert json.loads(rehearsal.get("/healthz")[2])["version"] == live
    assert served_certificate(rehearsal.machine.address)["subjectAltName"] == (
        ("IP Address", rehearsal.machine.address),
    )


def test_domain_gets_its_own_certificate(rehearsal: Rehearsal, figures: list[str]) -> None:
    point_at_machine(rehearsal, {DOMAIN: rehearsal.machine.address, f"www.{DOMAIN}": rehearsal.machine.address})

    run.redeploy("dev", {"domain": DOMAIN, "wwwAlias": True})

    certificate = served_certificate(rehearsal.machine.address, DOMAIN)
    assert certificate["subjectAltName"] == (("DNS", DOMAIN), ("DNS", f"www.{DOMAIN}"))
    assert 89 * 24 < lifetime_hours(certificate) <= 90 * 24  # the classic profile, not the address's 160 hours
    figures.append(f"certificate for {DOMAIN} and www.{DOMAIN}: {lifetime_hours(certificate) / 24:.0f} days")
    for name in (DOMAIN, f"www.{DOMAIN}"):
        page = curl(rehearsal, f"https://{name}/healthz", "--include")
        assert page.stdout.startswith("HTTP/2 200"), page.stderr
        assert "strict-transport-security: max-age=63072000" in page.stdout
    redirect = curl(rehearsal, f"http://{DOMAIN}/x?y=1", "--include")
    assert redirect.stdout.startswith("HTTP/1.1 301")
    assert f"Location: https://{DOMAIN}/x?y=1" in redirect.stdout
    # A name the site does not serve gets no TLS at all.
    assert curl(rehearsal, f"https://{rehearsal.machine.address}/").returncode != 0
