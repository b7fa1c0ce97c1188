"""End-to-end fixtures: a rehearsal machine per module, brought up through the README's own code path."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import testinfra

from core.layout import DEPLOY_USER, ServerLayout
from core.settings import Settings
from rehearsal import acme, nspawn, run
from tests.pulumi_harness import PROJECT_DIR

APP_PORTS = (5000, 8000, 8080)


@dataclass
class Rehearsal:
    machine: nspawn.Machine
    settings: Settings
    release_id: str
    url: str
    timings: run.Timings

    @property
    def layout(self) -> ServerLayout:
        return self.settings.layout

    def host(self) -> Any:
        """pytest-testinfra over SSH, as the deploy user with sudo."""
        return testinfra.get_host(
            f"ssh://{DEPLOY_USER}@{self.machine.address}",
            ssh_identity_file=str(self.machine.private_key),
            ssh_extra_args=" ".join(pinned_host_key(self.machine)) + " -o LogLevel=ERROR",
            sudo=True,
        )

    def access_log(self, wait_for: str) -> list[str]:
        """nginx's access log of the site, once it holds `wait_for` (nginx flushes its buffer every 2 s)."""
        log = self.host().file(self.layout.access_log)
        deadline = time.monotonic() + 10
        while wait_for not in log.content_string and time.monotonic() < deadline:
            time.sleep(0.5)
        return str(log.content_string).splitlines()

    @property
    def context(self) -> ssl.SSLContext:
        """TLS that trusts what the site's certificate chains to: Pebble's root, in the rehearsal."""
        return tls_context()

    def open(self, request: urllib.request.Request | str, timeout: float = 10) -> Any:
        return urllib.request.urlopen(request, timeout=timeout, context=self.context)  # noqa: S310 - the site's URL

    def post_json(self, path: str, payload: object) -> tuple[int, Any]:
        """POST `payload` as JSON to the site; its status and the JSON it answers."""
        request = urllib.request.Request(  # noqa: S310 - the site's URL
            self.url.rstrip("/") + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self.open(request) as response:
            return response.status, json.loads(response.read())

    def get(self, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url.rstrip("/") + path)  # noqa: S310 - the site's URL
        if host:
            request.add_header("Host", host)
        try:
            with self.open(request) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


def rehearse(
    config: dict[str, Any], *words: str, command: tuple[str, ...] = (), timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`scripts/rehearse WORDS... --set KEY=VALUE ... [-- COMMAND...]` for a stack's `config`, as the README says it."""
    settings = [f"--set={key}={json.dumps(value)}" for key, value in config.items()]
    return subprocess.run(
        [str(PROJECT_DIR / "scripts/rehearse"), *words, *settings, *(["--", *command] if command else [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tls_context() -> ssl.SSLContext:
    roots = acme.PEBBLE_DIR / "roots.pem"
    return ssl.create_default_context(cafile=str(roots)) if roots.exists() else ssl.create_default_context()


def bring_up(overrides: dict[str, Any]) -> Iterator[Rehearsal]:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests boot a machine and need root (CI runs as root)")
    try:
        url, release_id, timings = run.up("dev", overrides)
        machine = nspawn.Machine()
        settings = run.rehearsal_settings("dev", overrides, machine.public_key())
        print(f"\nrehearsal {settings.app.name}: {timings}")
        yield Rehearsal(machine, settings, release_id, url, timings)
    finally:
        run.down()


@contextlib.contextmanager
def host_namespace(netns: str, veth: str, host_address: str, address: str) -> Iterator[None]:
    """A network namespace with a host of its own at `address` (a /30 with the host's `host_address`), which the
    rehearsal's machines reach through the host as a droplet reaches a server on the internet."""

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    try:
        sh("ip", "netns", "add", netns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        sh("ip", "address", "add", f"{host_address}/30", "dev", veth)
        sh("ip", "link", "set", veth, "up")
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "address", "add", f"{address}/30", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "route", "add", "default", "via", host_address],
        ):
            sh("ip", "netns", "exec", netns, *argv)
        yield
    finally:
        subprocess.run(["ip", "link", "delete", veth], check=False, capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "delete", netns], check=False, capture_output=True, timeout=30)


def open_tcp_ports(address: str, ports: list[int], timeout: float = 1.0) -> set[int]:
    """A connect scan, bounded: each port is tried once with a timeout."""

    def is_open(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(timeout)
            return probe.connect_ex((address, port)) == 0

    with ThreadPoolExecutor(max_workers=128) as pool:
        return {port for port, answer in zip(ports, pool.map(is_open, ports), strict=True) if answer}


def pinned_host_key(machine: nspawn.Machine) -> list[str]:
    """ssh's options that accept only the host key made for the machine, as the deploy does."""
    return ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={machine.known_hosts}"]


def ssh_as(user: str, machine: nspawn.Machine, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            *pinned_host_key(machine),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            *options,
            f"{user}@{machine.address}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
