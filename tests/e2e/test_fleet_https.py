"""Two droplets behind the balancer with HTTPS: what a visitor gets through it is what one droplet gives.

The example app on two machines behind the rehearsal's balancer (`rehearsal.fleet`), which ends
HTTPS as DigitalOcean's does, with the certificate a user brings for a domain whose DNS is
elsewhere (`balancerCertificate`, made here by a CA of the test's own). The droplets' nginx
knows HTTPS from the balancer's X-Forwarded-Proto and sends its security headers, HSTS among
them, through the balancer. No database (`database: none`): the weather app keeps none.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearsal import fleet, nspawn
from tests.certificates import make_certificate
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.test_security import SECURITY_HEADERS

pytestmark = pytest.mark.e2e

DOMAIN = "weather.example.org"
BROUGHT = make_certificate((DOMAIN,))
FLEET_HTTPS = {
    "instances": 2,
    "database": "none",
    "domain": DOMAIN,
    "balancerCertificate": BROUGHT.fullchain,
    "balancerCertificateKey": BROUGHT.key,
}
HSTS = "max-age=63072000"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(FLEET_HTTPS)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_text(BROUGHT.root)
    return path


def visit(url: str, root: Path, *options: str) -> tuple[str, dict[str, str], str]:
    """What a visitor's curl gets at `url` (DOMAIN at the balancer): the status line, the headers, the HTTP version."""
    ports = (fleet.BALANCER_PORT, fleet.BALANCER_TLS_PORT)
    resolve = [word for port in ports for word in ("--resolve", f"{DOMAIN}:{port}:{fleet.BALANCER_ADDRESS}")]
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", *resolve, "--cacert", str(root), "-o", "/dev/null", "-D", "-",
         "-w", "%{http_version}", *options, url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # text=True reads curl's CRLF line ends as "\n".
    head, _, version = result.stdout.rpartition("\n\n")
    status, *lines = head.split("\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return status, headers, version


def test_the_site_is_the_domain_at_the_balancers_https(rehearsal: Rehearsal) -> None:
    assert rehearsal.url == f"https://{DOMAIN}:{fleet.BALANCER_TLS_PORT}/"
    assert len(nspawn.machines_up()) == 2


def test_security_headers_and_hsts_reach_the_visitor_through_the_balancer(rehearsal: Rehearsal, root: Path) -> None:
    for path in ("/", "/api/forecast?days=2", "/static/style.css"):
        status, headers, version = visit(rehearsal.url.rstrip("/") + path, root)

        assert status.split()[1] == "200", (path, status)
        # HTTP/2 from the balancer to the visitor (the droplets behind it answer HTTP/1.1).
        assert version == "2", path
        for header in SECURITY_HEADERS:
            assert header.lower() in headers, (path, header)
        assert headers["strict-transport-security"] == HSTS, path
        assert headers["server"] == "nginx", path
    assert "frame-ancestors 'none'" in visit(rehearsal.url, root)[1]["content-security-policy"]


def test_plain_http_is_redirected_at_the_balancer_without_hsts(rehearsal: Rehearsal, root: Path) -> None:
    # A visitor claiming HTTPS over plain HTTP changes nothing: the balancer says which it was.
    status, headers, _ = visit(
        f"http://{DOMAIN}:{fleet.BALANCER_PORT}/api/forecast?days=2", root, "-H", "X-Forwarded-Proto: https"
    )

    assert status.split()[1] == "301", status
    assert headers["location"] == f"https://{DOMAIN}/api/forecast?days=2"
    assert "strict-transport-security" not in headers


def test_a_droplet_sends_hsts_only_for_what_came_over_https(rehearsal: Rehearsal, root: Path) -> None:
    machine = nspawn.Machine(nspawn.machines_up()[1])
    url = f"http://{machine.address}/"
    host = ["-H", f"Host: {DOMAIN}"]

    _, over_http, _ = visit(url, root, *host, "-H", "X-Forwarded-Proto: http")
    _, over_https, _ = visit(url, root, *host, "-H", "X-Forwarded-Proto: https")

    assert "strict-transport-security" not in over_http
    assert over_https["strict-transport-security"] == HSTS
