"""A fake server for the agent's tests: the golden stacks' settings and bundles, facts a droplet answers."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

from agent.cli import main
from agent.config import Config
from agent.fake import FakeSystem
from agent.inputs import DeployInput
from agent.system import Completed
from core.bundle import bundle_bytes
from core.render import render_agent_settings, server_manifest
from core.settings import parse_settings
from tests.pulumi_harness import PROJECT_DIR
from tests.unit.test_render import GOLDEN_CONFIGS, golden_settings

ENVIRONMENT = '# The app\'s environment.\nSECRET_KEY="s3cret"\n'
PUBLIC_IPV4 = "203.0.113.10"
BUNDLES = "/home/deploy/flaskdroplet/bundles"


def settings_of(variant: str, **overrides: Any) -> Any:
    return (
        parse_settings({**GOLDEN_CONFIGS[variant], **overrides}, PROJECT_DIR) if overrides else golden_settings(variant)
    )


def config_of(variant: str, **overrides: Any) -> Config:
    return Config.from_json_object(json.loads(render_agent_settings(settings_of(variant, **overrides))))


@dataclasses.dataclass
class Release:
    release_id: str
    path: str
    data: bytes


def bundle_of(variant: str, **overrides: Any) -> Release:
    data = bundle_bytes(settings_of(variant, **overrides))
    release_id = hashlib.sha256(data).hexdigest()[:12]
    return Release(release_id, f"{BUNDLES}/{release_id}.tar.gz", data)


def untar(server: FakeSystem, argv: list[str]) -> Completed:
    """tar -xzf BUNDLE -C DIR ...: the bundle's files appear under DIR, as tar would put them."""
    data = server.read_bytes(argv[2])
    assert data is not None, argv
    target = argv[argv.index("-C") + 1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                server.files[f"{target}/{member.name}"] = extracted.read()
            elif member.isdir():
                server.dirs.add(f"{target}/{member.name}")
    return Completed(0)


def first_booted(variant: str = "ip", **overrides: Any) -> FakeSystem:
    """A droplet as cloud-init leaves it: the first-boot files written, nothing deployed yet."""
    settings = settings_of(variant, **overrides)
    server = FakeSystem()
    for entry in server_manifest(settings):
        if entry.first_boot and entry.content is not None:
            server.files[entry.path] = entry.content
    server.files["/etc/nginx/nginx.conf"] = "events {\n    worker_connections 4096;\n}\n"
    server.files["/proc/meminfo"] = "MemTotal: 1000000 kB\nMemAvailable: 819200 kB\n"
    server.answer("df", "-m", "--output=avail", stdout="Avail\n20000\n")
    counter = iter(range(1, 1000))
    server.answer_with(("mktemp", "-d"), lambda argv: Completed(0, argv[-1].replace("XXXXXX", f"{next(counter):06d}")))
    server.answer_with(("tar", "-xzf"), lambda argv: untar(server, argv))

    def make_venv(argv: list[str]) -> Completed:
        server.executable.update(f"{argv[-1]}/bin/{name}" for name in ("python", "pip", "gunicorn", "flask"))
        return Completed(0)

    server.answer_with(("python3", "-m", "venv"), make_venv)
    return server


def with_certificate(server: FakeSystem, config: Config, names: tuple[str, ...] = ()) -> None:
    """A certificate that serves for an hour more, from the stack's ACME server."""
    server.files[f"{config.layout.certificate_dir}/fullchain.pem"] = "-----BEGIN CERTIFICATE-----\n"
    server.files[config.layout.certificate_renewal] = f"server = {config.acme_server}\n"
    sans = ", ".join([f"DNS:{name}" for name in names] or [f"IP Address:{PUBLIC_IPV4}"])
    server.answer(
        "openssl",
        "x509",
        "-in",
        f"{config.layout.certificate_dir}/fullchain.pem",
        "-noout",
        "-ext",
        stdout=(f"X509v3 Subject Alternative Name: \n    {sans}\n"),
    )


def deploy(server: FakeSystem, config: Config, release: Release, *options: str) -> int:
    server.files[release.path] = release.data
    server.stdin = DeployInput(ENVIRONMENT).to_json()
    return main([*options, release.release_id, release.path, PUBLIC_IPV4], server, config)


def forget(server: FakeSystem) -> None:
    """What was asked so far, forgotten: the next call's commands and files alone."""
    server.commands.clear()
    server.written.clear()
    server.removed.clear()
    server.events.clear()
    server.stderr.clear()
    server.stdout.clear()
    server.slept = 0.0


def live_server(variant: str = "ip", **overrides: Any) -> tuple[FakeSystem, Config, Release]:
    """A droplet serving one release, with its certificate; what it took forgotten."""
    config = config_of(variant, **overrides)
    server = first_booted(variant, **overrides)
    with_certificate(server, config, config.host_names)
    release = bundle_of(variant, **overrides)
    assert deploy(server, config, release) == 0, server.stderr
    forget(server)
    return server, config, release


def relocked(data: bytes) -> tuple[str, str, bytes]:
    """The bundle with its dependencies locked by uv (deps/pyproject.toml and deps/uv.lock)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as source,
        tarfile.open(fileobj=out, mode="w") as target,
    ):
        for member in source.getmembers():
            if member.name != "deps/requirements.txt":
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for name in ("deps/pyproject.toml", "deps/uv.lock"):
            info = tarfile.TarInfo(name)
            info.size = 2
            target.addfile(info, io.BytesIO(b"x\n"))
    locked = gzip.compress(out.getvalue(), mtime=0)
    release_id = hashlib.sha256(locked).hexdigest()[:12]
    return release_id, f"{BUNDLES}/{release_id}.tar.gz", locked
