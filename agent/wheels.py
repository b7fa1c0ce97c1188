"""Before a virtualenv is installed: which pinned dependencies have no wheel for its Python and platform.

pip and uv build those from their source, which needs a compiler, Python's headers and the
headers of the libraries they link; the deploy says so before it starts, naming each one.
The pins come from the release's deps/: `uv.lock` (its wheels are listed in it) or the `name==version`
lines of `requirements.txt` (their files are listed by the package index, PEP 691).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass

from agent.context import Agent

PYPI = "https://pypi.org/simple"
#: What a few widely used packages link, as Ubuntu names the packages with their headers.
LIBRARY_HEADERS = {
    "psycopg2": "libpq-dev",
    "psycopg2-binary": "libpq-dev",
    "mysqlclient": "default-libmysqlclient-dev pkg-config",
    "lxml": "libxml2-dev libxslt1-dev",
    "pillow": "libjpeg-dev zlib1g-dev",
    "python-ldap": "libldap-dev libsasl2-dev",
    "pycairo": "libcairo2-dev pkg-config",
    "cffi": "libffi-dev",
    "pyyaml": "libyaml-dev",
}
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*===?\s*([A-Za-z0-9.+!_-]+)\s*(?:[;#\s\\]|$)")
_OLD_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class Target:
    """The interpreter and platform a virtualenv installs for."""

    python: tuple[int, int]
    glibc: tuple[int, int]
    machine: str

    def __str__(self) -> str:
        major, minor = self.python
        return f"CPython {major}.{minor} on Linux {self.machine} (glibc {self.glibc[0]}.{self.glibc[1]})"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _platform_fits(tag: str, target: Target) -> bool:
    if tag == "any" or tag == f"linux_{target.machine}":
        return True
    if not tag.endswith(f"_{target.machine}"):
        return False
    prefix = tag[: -len(target.machine) - 1]
    if prefix in _OLD_MANYLINUX:
        return _OLD_MANYLINUX[prefix] <= target.glibc
    found = re.fullmatch(r"manylinux_(\d+)_(\d+)", prefix)
    return bool(found) and (int(found[1]), int(found[2])) <= target.glibc  # type: ignore[index]


def _python_fits(python: str, abi: str, target: Target) -> bool:
    major, minor = target.python
    found = re.fullmatch(r"(py|cp)(\d)(\d*)", python)
    if not found or int(found[2]) != major:
        return False
    tag_minor = int(found[3]) if found[3] else None
    if abi == "none":
        return tag_minor is None or tag_minor <= minor if found[1] == "py" else tag_minor == minor
    if abi == "abi3":
        return found[1] == "cp" and tag_minor is not None and tag_minor <= minor
    return found[1] == "cp" and tag_minor == minor and abi in (f"cp{major}{minor}", f"cp{major}{minor}m")


def wheel_fits(filename: str, target: Target) -> bool:
    """A wheel's file name (PEP 427) names tags that `target` installs."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        return False
    pythons, abis, platforms = (tag.split(".") for tag in parts[-3:])
    return any(_platform_fits(p, target) for p in platforms) and any(
        _python_fits(py, abi, target) for py in pythons for abi in abis
    )


def _file_version(filename: str, name: str) -> str | None:
    """The version in a distribution's file name, when the file is one of `name`'s."""
    base = re.sub(r"(\.whl|\.tar\.gz|\.zip|\.tar\.bz2)$", "", filename)
    stem, _, rest = base.partition("-")
    for _ in range(base.count("-")):
        if normalize(stem) == name:
            return rest.split("-", 1)[0] if filename.endswith(".whl") else rest
        more, _, rest = rest.partition("-")
        stem = f"{stem}-{more}"
    return None


def requirement_pins(text: str) -> list[tuple[str, str]]:
    """The `name==version` lines of a requirements file."""
    pins = []
    for line in text.splitlines():
        found = _PIN.match(line)
        if found:
            pins.append((normalize(found[1]), found[2]))
    return pins


def index_url(text: str) -> str:
    for line in text.splitlines():
        words = line.replace("=", " ").split()
        if len(words) >= 2 and words[0] in ("-i", "--index-url"):
            return words[1].rstrip("/")
    return PYPI


def lock_wheels(lock: str) -> dict[tuple[str, str], list[str]]:
    """(name, version) -> its wheels' file names, for every package of a uv.lock from an index."""
    found: dict[tuple[str, str], list[str]] = {}
    for package in tomllib.loads(lock).get("package", []):
        source = package.get("source", {})
        if "registry" not in source:
            continue
        wheels = [str(w.get("url", "")).rsplit("/", 1)[-1] for w in package.get("wheels", [])]
        found[(normalize(str(package.get("name"))), str(package.get("version")))] = wheels
    return found


def index_files(agent: Agent, index: str, name: str) -> list[str] | None:
    """The file names the index lists for `name` (PEP 691 JSON), or None when it does not answer."""
    accept = "Accept: application/vnd.pypi.simple.v1+json"
    answer = agent.system.run(["curl", "-fsSL", "--max-time", "15", "-H", accept, f"{index}/{name}/"])
    if not answer.ok:
        return None
    try:
        return [str(f.get("filename", "")) for f in json.loads(answer.stdout).get("files", [])]
    except (ValueError, AttributeError):
        return None


def without_wheels(agent: Agent, deps: dict[str, bytes], target: Target) -> list[tuple[str, str]]:
    """The pinned dependencies that have no wheel for `target`: (name, version)."""
    missing = []
    if "uv.lock" in deps:
        for (name, version), wheels in lock_wheels(deps["uv.lock"].decode()).items():
            if not any(wheel_fits(wheel, target) for wheel in wheels):
                missing.append((name, version))
        return missing
    text = deps.get("requirements.txt", b"").decode(errors="replace")
    index = index_url(text)
    for name, version in requirement_pins(text):
        files = index_files(agent, index, name)
        if files is None:
            agent.log(f"could not list the files of {name} at {index}; whether it has a wheel is not known")
            continue
        mine = [f for f in files if _file_version(f, name) == version]
        if mine and not any(wheel_fits(f, target) for f in mine):
            missing.append((name, version))
    return missing


def build_needs(name: str, system_python: bool) -> str:
    headers = "python3-dev" if system_python else ""
    return " ".join(part for part in ("build-essential", headers, LIBRARY_HEADERS.get(name, "")) if part)


def report(agent: Agent, deps: dict[str, bytes], target: Target, system_python: bool) -> list[tuple[str, str]]:
    """Say, before installing, which pins are built from source and what building them needs."""
    missing = without_wheels(agent, deps, target)
    for name, version in missing:
        agent.log(
            f"{name} {version} has no wheel for {target}: it is built from its source, which needs a C compiler, "
            f"Python's headers and those of any library it links (apt: {build_needs(name, system_python)})"
        )
    if missing and not agent.config.build_packages:
        agent.log(
            "no buildPackages are set: if a build fails for want of one, set buildPackages to the apt packages "
            "above (pulumi config set --path 'buildPackages[0]' build-essential ...) and deploy again"
        )
    return missing
