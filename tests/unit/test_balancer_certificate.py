"""The certificate of the Load Balancer's HTTPS: DigitalOcean's with dnsZone, or one brought for DNS elsewhere.

A fleet with HTTPS whose domain neither can certify is refused before any resource, naming what to set;
a brought certificate that no browser would accept from the balancer is refused, its key never shown.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from core.certificates import covers
from core.settings import SettingsError, parse_settings
from tests.certificates import make_certificate
from tests.pulumi_harness import PROJECT_DIR, run_program

DOMAIN = "weather.example.org"


def fleet(good_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Two droplets behind a balancer with HTTPS for DOMAIN, its DNS outside DigitalOcean."""
    return {**good_config, "instances": 2, "database": "none", "domain": DOMAIN, **extra}


def refused(config: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        parse_settings(config, PROJECT_DIR)
    return caught.value.problems


def test_a_brought_certificate_is_split_as_digitalocean_takes_it(good_config: dict[str, Any]) -> None:
    brought = make_certificate((DOMAIN, f"www.{DOMAIN}"))

    settings = parse_settings(
        fleet(good_config, wwwAlias=True, balancerCertificate=brought.fullchain, balancerCertificateKey=brought.key),
        PROJECT_DIR,
    )

    assert settings.app.site.balancer_certificate is not None
    assert settings.app.site.balancer_certificate.leaf == brought.leaf
    assert settings.app.site.balancer_certificate.intermediates == brought.intermediate
    assert settings.app.site.balancer_certificate.names == (DOMAIN, f"www.{DOMAIN}")
    assert settings.app.site.balancer_certificate_key == brought.key
    assert brought.key not in repr(settings)


def test_dns_at_digitalocean_needs_no_brought_certificate(good_config: dict[str, Any]) -> None:
    settings = parse_settings(fleet(good_config, dnsZone="example.org"), PROJECT_DIR)

    assert settings.app.site.balancer_certificate is None and settings.app.site.balancer_certificate_key is None


def test_a_wildcard_certificate_covers_the_domain_and_www(good_config: dict[str, Any]) -> None:
    brought = make_certificate(("*.example.org", f"www.{DOMAIN}"))
    config = fleet(
        good_config, wwwAlias=True, balancerCertificate=brought.fullchain, balancerCertificateKey=brought.key
    )

    assert parse_settings(config, PROJECT_DIR).app.site.balancer_certificate is not None
    assert covers("*.example.org", DOMAIN)
    assert not covers("*.example.org", "example.org")
    assert not covers("*.example.org", f"www.{DOMAIN}")


def test_a_domain_no_one_can_certify_is_refused_naming_what_to_set(good_config: dict[str, Any]) -> None:
    (problem,) = refused(fleet(good_config))

    assert problem.startswith("flask-droplet:https = True: expected a certificate the Load Balancer can serve")
    for key in ("dnsZone", "balancerCertificate", "balancerCertificateKey", "https false"):
        assert key in problem


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"balancerCertificate": "cert"},
            "flask-droplet:balancerCertificateKey is not set, and balancerCertificate is",
        ),
        (
            {"balancerCertificateKey": "key"},
            "flask-droplet:balancerCertificate is not set, and balancerCertificateKey is",
        ),
        (
            {"instances": 1, "database": "sqlite", "balancerCertificate": "cert", "balancerCertificateKey": "key"},
            "flask-droplet:balancerCertificate is set: expected empty with instances = 1 and https = true",
        ),
        (
            {"https": False, "balancerCertificate": "cert"},
            "flask-droplet:balancerCertificate is set: expected empty with instances = 2 and https = false",
        ),
    ],
    ids=["no-key", "no-certificate", "one-droplet", "no-https"],
)
def test_a_brought_certificate_needs_its_key_and_a_balancers_https(
    good_config: dict[str, Any], change: dict[str, Any], expected: str
) -> None:
    problems = refused(fleet(good_config, **change))

    assert any(problem.startswith(expected) for problem in problems), problems
    assert not any("= 'key'" in problem for problem in problems)


def test_a_certificate_for_other_names_is_refused(good_config: dict[str, Any]) -> None:
    brought = make_certificate((DOMAIN,))
    config = fleet(
        good_config, wwwAlias=True, balancerCertificate=brought.fullchain, balancerCertificateKey=brought.key
    )

    assert refused(config) == [
        f"flask-droplet:balancerCertificate: expected a certificate for {DOMAIN}, www.{DOMAIN}; it covers "
        f"{DOMAIN}, not www.{DOMAIN}"
    ]


def test_a_certificate_without_names_is_refused(good_config: dict[str, Any]) -> None:
    brought = make_certificate((DOMAIN,), with_names=False)
    config = fleet(good_config, balancerCertificate=brought.fullchain, balancerCertificateKey=brought.key)

    assert refused(config) == [
        f"flask-droplet:balancerCertificate: expected a certificate for {DOMAIN}; it covers no DNS name, not {DOMAIN}"
    ]


def test_an_expired_or_future_certificate_is_refused(good_config: dict[str, Any]) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = make_certificate((DOMAIN,), not_before=now - datetime.timedelta(days=100), days=90)
    future = make_certificate((DOMAIN,), not_before=now + datetime.timedelta(days=2))

    for brought, words in ((expired, "it expired on"), (future, "it is valid from")):
        (problem,) = refused(
            fleet(good_config, balancerCertificate=brought.fullchain, balancerCertificateKey=brought.key)
        )
        assert problem.startswith("flask-droplet:balancerCertificate: expected a certificate valid now; ")
        assert words in problem


def test_another_certificates_key_is_refused_and_never_shown(good_config: dict[str, Any]) -> None:
    brought, other = make_certificate((DOMAIN,)), make_certificate((DOMAIN,))
    config = fleet(good_config, balancerCertificate=brought.fullchain, balancerCertificateKey=other.key)

    assert refused(config) == [
        "flask-droplet:balancerCertificateKey = ********: expected the private key of the site's certificate (the "
        "first in balancerCertificate); this one belongs to another"
    ]


def test_text_that_is_not_pem_is_refused_with_every_problem_at_once(good_config: dict[str, Any]) -> None:
    config = fleet(
        good_config, balancerCertificate="not a certificate", balancerCertificateKey="-----BEGIN nonsense", region="x"
    )

    problems = refused(config)

    assert [problem.split(":")[1].split(" ")[0] for problem in problems] == [
        "region",
        "balancerCertificate",
        "balancerCertificateKey",
    ]
    assert "expected PEM certificates (-----BEGIN CERTIFICATE-----...)" in problems[1]
    assert problems[2].startswith("flask-droplet:balancerCertificateKey = ********: expected the certificate's")
    assert "nonsense" not in "".join(problems)


def test_a_bad_brought_certificate_stops_the_program_before_any_resource(good_config: dict[str, Any]) -> None:
    brought = make_certificate(("elsewhere.example.net",))
    run = run_program(fleet(good_config, balancerCertificate=brought.fullchain, balancerCertificateKey=brought.key))

    assert isinstance(run.error, SettingsError)
    assert "flask-droplet:balancerCertificate: expected a certificate for weather.example.org" in str(run.error)
    assert run.resources == []
    assert run.calls == []
