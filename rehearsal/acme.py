"""Pebble, the ACME test server, on the host: the rehearsal's Let's Encrypt.

Pebble listens on the host's side of the machine's network. Its challenge DNS
(pebble-challtestsrv, on the host's loopback) answers every name with the
machine's address, so Pebble validates HTTP-01 challenges against the machine as
Let's Encrypt validates them against a droplet, for a domain and for an address.
The machine trusts Pebble's API certificate (the rehearsal adds it to the
machine's certificate authorities); nothing of Pebble reaches a droplet.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from pathlib import Path

from rehearsal.nspawn import GUEST_ADDRESS, HOST_ADDRESS, STATE_DIR, Machine, Progress, RehearsalError, run

PEBBLE_DIR = STATE_DIR / "pebble"
API_PORT = 14000
MANAGEMENT_PORT = 15000
DNS_ADDRESS = "127.0.0.1:8053"
CHALLTESTSRV_MANAGEMENT = "127.0.0.1:8055"
DIRECTORY_URL = f"https://{HOST_ADDRESS}:{API_PORT}/dir"
START_TIMEOUT_SECONDS = 20


def api_certificate() -> Path:
    """Pebble's API certificate (for its address on the machine's network), made once per machine."""
    certificate = PEBBLE_DIR / "api.pem"
    if not certificate.exists():
        PEBBLE_DIR.mkdir(parents=True, exist_ok=True)
        run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "30", "-subj", f"/CN=Pebble on {HOST_ADDRESS} (flask-droplet rehearsal)",
                "-addext", f"subjectAltName=IP:{HOST_ADDRESS}",
                "-keyout", str(PEBBLE_DIR / "api.key"), "-out", str(certificate),
            ]
        )  # fmt: skip
    return certificate


def start(machine: Machine, progress: Progress) -> None:
    """Start the challenge DNS and Pebble as the machine's helpers (`down` stops them); returns once Pebble answers."""
    certificate = api_certificate()
    config = {
        "pebble": {
            "listenAddress": f"{HOST_ADDRESS}:{API_PORT}",
            "managementListenAddress": f"{HOST_ADDRESS}:{MANAGEMENT_PORT}",
            "certificate": str(certificate),
            "privateKey": str(PEBBLE_DIR / "api.key"),
            # Validate challenges where a real CA does: port 80 (HTTP-01) and 443 of the machine.
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "retryAfter": {"authz": 1, "order": 1},
            # Let's Encrypt's two profiles: 90 days, and 160 hours (the one IP-address certificates need).
            "profiles": {
                "classic": {"description": "90 days", "validityPeriod": 7776000},
                "shortlived": {"description": "160 hours", "validityPeriod": 576000},
            },
        }
    }
    (PEBBLE_DIR / "pebble-config.json").write_text(json.dumps(config, indent=2))
    # Steady behaviour for tests: no random validation delay, no rejected nonces.
    environment = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    progress(f"acme: starting Pebble at {DIRECTORY_URL}")
    log = PEBBLE_DIR / "pebble.log"
    machine.start_helper(
        [
            "pebble-challtestsrv", "-defaultIPv4", GUEST_ADDRESS, "-defaultIPv6", "", "-dnsserver", DNS_ADDRESS,
            "-doh", "", "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", CHALLTESTSRV_MANAGEMENT,
        ],
        environment,
        log,
    )  # fmt: skip
    machine.start_helper(
        ["pebble", "-config", str(PEBBLE_DIR / "pebble-config.json"), "-dnsserver", DNS_ADDRESS], environment, log
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            (PEBBLE_DIR / "roots.pem").write_text(roots())
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise RehearsalError(
                    f"Pebble did not answer within {START_TIMEOUT_SECONDS} s ({err}); see {log}"
                ) from err
            time.sleep(0.2)


def roots() -> str:
    """Pebble's root certificate (PEM), which the certificates it issues chain to; new every start."""
    context = ssl.create_default_context(cafile=str(PEBBLE_DIR / "api.pem"))
    url = f"https://{HOST_ADDRESS}:{MANAGEMENT_PORT}/roots/0"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return str(response.read().decode())
