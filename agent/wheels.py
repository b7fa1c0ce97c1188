"""Before a virtualenv is installed: which pinned dependencies have no wheel for its Python and platform.

pip and uv build those from their source. A source of pure Python needs nothing more; one with
extension code (C, C++, Cython, Rust, Fortran) needs a compiler, Python's headers and the headers of
the libraries it links. The deploy says which, before it starts, naming each one: from the source
archive itself, which it reads without building or running anything in it.
The pins come from the release's deps/: `uv.lock` (its wheels and source archive are listed in it) or the
`name==version` lines of `requirements.txt` (their files are listed by the package index, PEP 691).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import tomllib
import zipfile
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
#: Source files of extension code, by the language whose compiler builds them.
EXTENSION_SOURCES = {
    ".c": "C",
    ".cc": "C++",
    ".cpp": "C++",
    ".cxx": "C++",
    ".pyx": "Cython",
    ".rs": "Rust",
    ".f": "Fortran",
    ".f90": "Fortran",
}
#: What each language's compiler is, as Ubuntu names its package (build-essential has C and C++).
COMPILER_PACKAGES = {"Rust": "cargo", "Fortran": "gfortran"}
#: Build backends that exist to compile extension code.
EXTENSION_BACKENDS = ("maturin", "scikit_build_core", "mesonpy", "setuptools_rust", "pybind11")
#: The largest source archive read to tell what it needs (bytes).
SDIST_READ_MAX = 50_000_000
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


@dataclass(frozen=True)
class Missing:
    """A pinned dependency with no wheel for the virtualenv's Python, and where its source archive is."""

    name: str
    version: str
    sdist_url: str = ""


def lock_wheels(lock: str) -> dict[tuple[str, str], tuple[list[str], str]]:
    """(name, version) -> its wheels' file names and its source archive's URL ("" for none), for every package
    of a uv.lock from an index."""
    found: dict[tuple[str, str], tuple[list[str], str]] = {}
    for package in tomllib.loads(lock).get("package", []):
        source = package.get("source", {})
        if "registry" not in source:
            continue
        wheels = [str(w.get("url", "")).rsplit("/", 1)[-1] for w in package.get("wheels", [])]
        sdist = package.get("sdist", {})
        url = str(sdist.get("url", "")) if isinstance(sdist, dict) else ""
        found[(normalize(str(package.get("name"))), str(package.get("version")))] = (wheels, url)
    return found


def index_files(agent: Agent, index: str, name: str) -> dict[str, str] | None:
    """The files the index lists for `name` (PEP 691 JSON), each name to its URL ("" when not given), or
    None when it does not answer."""
    accept = "Accept: application/vnd.pypi.simple.v1+json"
    answer = agent.system.run(["curl", "-fsSL", "--max-time", "15", "-H", accept, f"{index}/{name}/"])
    if not answer.ok:
        return None
    try:
        files = json.loads(answer.stdout).get("files", [])
        return {str(f.get("filename", "")): str(f.get("url", "")) for f in files}
    except (ValueError, AttributeError):
        return None


def without_wheels(agent: Agent, deps: dict[str, bytes], target: Target) -> list[Missing]:
    """The pinned dependencies that have no wheel for `target`."""
    missing = []
    if "uv.lock" in deps:
        for (name, version), (wheels, sdist) in lock_wheels(deps["uv.lock"].decode()).items():
            if not any(wheel_fits(wheel, target) for wheel in wheels):
                missing.append(Missing(name, version, sdist))
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
            sdists = [files[f] for f in mine if not f.endswith(".whl") and files[f]]
            missing.append(Missing(name, version, sdists[0] if sdists else ""))
    return missing


def extension_languages(archive: bytes) -> set[str] | None:
    """The languages of a source archive's extension code (empty: pure Python), or None when it is not an
    archive this can read. Read as data: nothing in it is built or run."""
    names: list[str] = []
    texts: list[str] = []
    try:
        if archive[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
                names = zipped.namelist()
                texts = [zipped.read(n).decode(errors="replace") for n in names if _is_build_file(n)]
        else:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tarred:
                for member in tarred.getmembers():
                    names.append(member.name)
                    if member.isfile() and _is_build_file(member.name):
                        read = tarred.extractfile(member)
                        texts.append(read.read().decode(errors="replace") if read else "")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError):
        return None
    languages = {EXTENSION_SOURCES[s] for n in names for s in EXTENSION_SOURCES if n.lower().endswith(s)}
    if any(n.rsplit("/", 1)[-1] == "Cargo.toml" for n in names):
        languages.add("Rust")
    if any(re.search(r"\bext_modules\b|\bExtension\(", t) for t in texts) and not languages:
        languages.add("C")
    if any(backend in t for t in texts for backend in EXTENSION_BACKENDS) and not languages:
        languages.add("C")
    return languages


def _is_build_file(name: str) -> bool:
    """setup.py or pyproject.toml at the archive's top (in its one directory)."""
    return name.count("/") <= 1 and name.rsplit("/", 1)[-1] in ("setup.py", "pyproject.toml")


def source_languages(agent: Agent, url: str) -> set[str] | None:
    """What a source archive's extension code is written in (see `extension_languages`), fetched from `url`;
    None when it cannot be fetched or read."""
    if not url.startswith("https://"):
        return None
    system = agent.system
    path = system.run(["mktemp", "-t", "flaskdroplet-sdist.XXXXXX"]).stdout.strip()
    if not path:
        return None
    try:
        fetch = ["curl", "-fsSL", "--max-time", "60", "--max-filesize", str(SDIST_READ_MAX), "-o", path, url]
        if not system.run(fetch).ok:
            return None
        archive = system.read_bytes(path)
        return extension_languages(archive) if archive else None
    finally:
        system.remove(path)


def build_needs(name: str, system_python: bool, languages: set[str] | None = None) -> str:
    headers = "python3-dev" if system_python else ""
    compilers = [COMPILER_PACKAGES[language] for language in sorted(languages or ()) if language in COMPILER_PACKAGES]
    parts = ("build-essential", *compilers, headers, LIBRARY_HEADERS.get(name, ""))
    return " ".join(part for part in parts if part)


def report(agent: Agent, deps: dict[str, bytes], target: Target, system_python: bool) -> list[tuple[str, str]]:
    """Say, before installing, which pins are built from source and what building each needs: nothing for
    pure Python, a compiler and headers for extension code."""
    missing = without_wheels(agent, deps, target)
    needs_build = False
    for pin in missing:
        name, version = pin.name, pin.version
        # A package known to link a library has extension code; the others are read from their source.
        languages = {"C"} if name in LIBRARY_HEADERS else source_languages(agent, pin.sdist_url)
        built = f"{name} {version} has no wheel for {target}: it is built from its source"
        if languages == set():
            agent.log(f"{built}, which is pure Python: building it needs nothing more")
            continue
        needs_build = True
        apt = build_needs(name, system_python, languages)
        if languages:
            libraries = f" ({LIBRARY_HEADERS[name]})" if name in LIBRARY_HEADERS else ""
            agent.log(
                f"{built}, which has extension code in {', '.join(sorted(languages))}: building it needs a compiler, "
                f"Python's headers and those of the libraries it links{libraries} (apt: {apt})"
            )
        else:
            agent.log(
                f"{built}, which needs a C compiler, Python's headers and those of any library it links if it has "
                f"extension code, as its source could not be read to tell (apt: {apt})"
            )
    if needs_build and not agent.config.build_packages:
        agent.log(
            "no buildPackages are set: if a build fails for want of one, set buildPackages to the apt packages "
            "above (pulumi config set --path 'buildPackages[0]' build-essential ...) and deploy again"
        )
    return [(pin.name, pin.version) for pin in missing]
