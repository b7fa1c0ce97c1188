"""The release bundle: the app and its server configuration in one deterministic archive.

The same inputs give the same bytes (sorted entries, fixed times, owners and
modes, no gzip timestamp), so the archive's hash is the release id and a
`pulumi up` with nothing changed uploads and runs nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from core.render import ServerFiles, agent_sources, render_agent_settings, render_server_files
from core.settings import Settings
from core.zipapp import zip_application

#: Never shipped: caches, virtualenvs, VCS data and Flask's instance folder (runtime data).
EXCLUDED_DIRS = frozenset({"__pycache__", "instance", "node_modules"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Bundle:
    path: Path
    """The archive on the local disk."""
    release_id: str
    """First 12 hex digits of the archive's sha256."""
    sha256: str


def app_files(app_dir: Path, linked_dirs: tuple[str, ...] = ()) -> list[Path]:
    """The app's files to ship, relative to `app_dir`, sorted; `linked_dirs` live on the server, not in releases."""
    linked = [tuple(path.split("/")) for path in linked_dirs]
    files = []
    for path in app_dir.rglob("*"):
        relative = path.relative_to(app_dir)
        if any(part.startswith(".") or part in EXCLUDED_DIRS for part in relative.parts):
            continue
        if any(relative.parts[: len(parts)] == parts for parts in linked):
            continue
        if path.is_file() and not path.is_symlink() and not path.name.endswith(EXCLUDED_SUFFIXES):
            files.append(relative)
    return sorted(files, key=lambda p: p.as_posix())


def static_manifest(settings: Settings, files: list[Path]) -> str:
    """`server/static-manifest`: a line `HASH PATH` for each static file, HASH the first 12 hex digits of
    its content's sha256 and PATH relative to `static_dir`. The server keeps each content at
    /static/_v/HASH/PATH, and the app's `url_for('static', ...)` links there."""
    if settings.app.static_dir is None:
        return ""
    static = Path(settings.app.static_dir)
    lines = []
    for relative in files:
        if relative.parts[: len(static.parts)] == static.parts and " " not in relative.as_posix():
            digest = hashlib.sha256((settings.app.directory / relative).read_bytes()).hexdigest()[:12]
            lines.append(f"{digest} {relative.relative_to(static).as_posix()}\n")
    return "".join(lines)


def bundle_bytes(settings: Settings, server: ServerFiles | None = None) -> bytes:
    """The archive's bytes: `app/...` from the app directory, `deps/...` and `server/...` rendered.

    `server` is the plan's rendering of the server's files, rendered here when not given.
    """
    server = server or render_server_files(settings)
    entries: list[tuple[str, bytes, int]] = []
    files = app_files(settings.app.directory, settings.app.linked_dirs)
    for relative in files:
        source = settings.app.directory / relative
        mode = 0o755 if source.stat().st_mode & 0o111 else 0o644
        entries.append((f"app/{relative.as_posix()}", source.read_bytes(), mode))
    entries.append(("server/static-manifest", static_manifest(settings, files).encode(), 0o644))
    for name, data in settings.app.source.deps_files:
        entries.append((f"deps/{name}", data, 0o644))
    for name, text in sorted(server.config.items()):
        entries.append((f"server/{name}", text.encode(), 0o644))

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted({d for name, _, _ in entries for d in _parents(name)}):
            tar.addfile(_info(directory, tarfile.DIRTYPE, 0o755, 0))
        for name, data, mode in entries:
            tar.addfile(_info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", filename="", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def build_bundle(settings: Settings, out_dir: Path, server: ServerFiles | None = None) -> Bundle:
    """Write the bundle under `out_dir` as `<release_id>.tar.gz` and describe it."""
    data = bundle_bytes(settings, server)
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{digest[:12]}.tar.gz"
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return Bundle(path=path, release_id=digest[:12], sha256=digest)


@dataclass(frozen=True)
class AgentArchive:
    path: Path
    """The zip application on the local disk: the agent's modules and the stack's `settings.json`."""
    sha256: str


#: How the archive starts the agent: `python3 agent.pyz ARGS...`.
AGENT_ENTRY = "from agent.__main__ import run\n\nraise SystemExit(run())\n"


def agent_archive_bytes(settings: Settings, server: ServerFiles | None = None) -> bytes:
    """The server agent as a zip application, deterministic as the bundle is (sorted, fixed times)."""
    agent_settings = server.agent_settings if server else render_agent_settings(settings)
    files = {"__main__.py": AGENT_ENTRY.encode(), "agent/settings.json": agent_settings.encode()}
    files |= {f"agent/{path.name}": path.read_bytes() for path in agent_sources()}
    return zip_application(files)


def build_agent_archive(settings: Settings, out_dir: Path, server: ServerFiles | None = None) -> AgentArchive:
    data = agent_archive_bytes(settings, server)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"agent-{settings.app.name}.pyz"
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return AgentArchive(path=path, sha256=hashlib.sha256(data).hexdigest())


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
