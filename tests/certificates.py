"""Certificates made for the tests: a certificate authority of their own and the site certificates it signs.

What a user brings as `balancerCertificate`: the site's certificate and an intermediate, as
certbot's fullchain.pem holds them, and its key as privkey.pem holds it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Brought:
    """A site certificate as a user brings it, and the root that it chains to."""

    fullchain: str
    """The site's certificate, then the intermediate (PEM)."""
    key: str
    """The site certificate's private key (PEM, PKCS#8, unencrypted)."""
    leaf: str
    intermediate: str
    root: str
    """The root certificate, for a client that trusts it (PEM)."""


def make_certificate(
    names: tuple[str, ...],
    *,
    not_before: datetime.datetime | None = None,
    days: int = 90,
    with_names: bool = True,
) -> Brought:
    """A root, an intermediate it signs, and a certificate for `names` the intermediate signs, valid for `days`."""
    now = datetime.datetime.now(datetime.UTC)
    start = not_before or now - datetime.timedelta(hours=1)
    root_key, intermediate_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))

    def build(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start if not ca else now - datetime.timedelta(days=1))
            .not_valid_after(start + datetime.timedelta(days=days) if not ca else now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )

    root = build("flask-droplet test root", "flask-droplet test root", root_key, True).sign(root_key, hashes.SHA256())
    intermediate = build("flask-droplet test intermediate", "flask-droplet test root", intermediate_key, True)
    intermediate_cert = intermediate.sign(root_key, hashes.SHA256())
    leaf = build(names[0], "flask-droplet test intermediate", leaf_key, False)
    if with_names:
        leaf = leaf.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    leaf_cert = leaf.sign(intermediate_key, hashes.SHA256())
    return Brought(
        fullchain=_pem(leaf_cert) + _pem(intermediate_cert),
        key=_key_pem(leaf_key),
        leaf=_pem(leaf_cert),
        intermediate=_pem(intermediate_cert),
        root=_pem(root),
    )
