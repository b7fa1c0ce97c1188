"""A certificate brought for the Load Balancer (`balancerCertificate`), read and checked before any resource exists.

DigitalOcean's certificate store takes a custom certificate as three PEM texts: the
site's own certificate (`leaf_certificate`), its private key and the intermediates
that chain it to a root (`certificate_chain`). A user has them as certbot writes
them: `fullchain.pem` (the site's certificate first, then the intermediates) and
`privkey.pem`. What would make the balancer serve a certificate no browser accepts
is refused here, each reason a sentence the settings attach to the key.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes


@dataclass(frozen=True)
class CertificateChain:
    """A brought certificate split as DigitalOcean's certificate store takes it."""

    leaf: str
    """The site's own certificate, PEM."""
    intermediates: str
    """The certificates after it, PEM, in their order; empty when there are none."""
    names: tuple[str, ...]
    """The DNS names the site's certificate covers (its subjectAltName)."""
    expires: datetime.datetime
    """When the site's certificate stops being valid (UTC)."""


class CertificateError(ValueError):
    """What is wrong with a brought certificate or its key, as sentences naming neither's secret content."""

    def __init__(self, certificate: list[str], key: list[str]) -> None:
        self.certificate = certificate
        """Problems of the certificate itself (its PEM, its names, its dates)."""
        self.key = key
        """Problems of the private key (its PEM, whether it belongs to the certificate)."""
        super().__init__("; ".join(certificate + key))


def read_chain(pem: str) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM text, in order; raises ValueError when there is none or one does not parse."""
    return tuple(x509.load_pem_x509_certificates(pem.encode()))


def covers(pattern: str, name: str) -> bool:
    """A certificate's DNS name `pattern` (`*.example.org` included) covers the host `name` (RFC 6125 6.4.3)."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def check_brought_certificate(
    pem: str, key_pem: str, names: tuple[str, ...], now: datetime.datetime
) -> CertificateChain:
    """The chain of `pem` for `names`, checked against its key and `now`; raises `CertificateError` with every problem.

    Refused: a text that is not PEM certificates; a key that is not an unencrypted PEM
    private key, or not the site's certificate's; names the certificate does not cover;
    a certificate not yet valid or expired.
    """
    certificate_problems: list[str] = []
    key_problems: list[str] = []
    try:
        chain = read_chain(pem)
    except ValueError:
        chain = ()
        certificate_problems.append(
            "expected PEM certificates (-----BEGIN CERTIFICATE-----...), the site's own first and then its "
            "intermediates, as certbot's fullchain.pem holds them"
        )
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
        key_problems.append(
            "expected the certificate's private key as unencrypted PEM (-----BEGIN PRIVATE KEY-----..., "
            "certbot's privkey.pem)"
        )
    if not chain:
        raise CertificateError(certificate_problems, key_problems)

    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        covered = ()
    missing = [name for name in names if not any(covers(pattern, name) for pattern in covered)]
    if missing:
        certificate_problems.append(
            f"expected a certificate for {', '.join(names)}; it covers {', '.join(covered) or 'no DNS name'}, "
            f"not {', '.join(missing)}"
        )
    if leaf.not_valid_after_utc <= now:
        certificate_problems.append(
            f"expected a certificate valid now; it expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    elif leaf.not_valid_before_utc > now:
        certificate_problems.append(
            f"expected a certificate valid now; it is valid from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if key is not None:
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            key_problems.append("expected an RSA or ECDSA private key: browsers take no other kind in a certificate")
        elif _public_der(key.public_key()) != _public_der(leaf.public_key()):
            key_problems.append(
                "expected the private key of the site's certificate (the first in balancerCertificate); "
                "this one belongs to another"
            )
    if certificate_problems or key_problems:
        raise CertificateError(certificate_problems, key_problems)
    return CertificateChain(
        leaf=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        intermediates="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain[1:]),
        names=covered,
        expires=leaf.not_valid_after_utc,
    )


def _public_der(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
