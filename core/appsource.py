"""The user's app as the server needs to know it: where its dependencies are declared, where its code imports from.

Pure functions over the app's directory; `settings.parse_settings` calls them and
reports what they find wrong together with every other problem.

Dependencies, in this order of precedence:

1. `uv.lock` (beside its `pyproject.toml`): installed exactly, with uv.
2. `requirements.txt`: installed with pip.
3. `pyproject.toml`: the `[project]` table's dependencies, installed with pip.

Only the dependencies go into the virtualenv, which releases with the same
dependencies share. The app's own code always runs from the release, read-only:
from the app directory, or from `src/` for the src layout.

What the stack adds to that virtualenv (Gunicorn) comes from the app's own
dependencies when they declare it, checked against the oldest release the stack
works with; otherwise the stack's pin is added.

The interpreter: Ubuntu's `/usr/bin/python3` (3.12) where it satisfies the app's
`.python-version` and `requires-python`; otherwise a CPython that uv installs on the
server. A request no Python the server can have satisfies is refused here.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

#: Ubuntu 24.04's python3, which runs the app on the droplet unless the app asks for another Python.
SERVER_PYTHON_VERSION = "3.12.3"

#: uv installs the dependencies of apps that ship a uv.lock, and the CPython an app asks for when the
#: server's python3 is not one it accepts; the deploy puts it in a virtualenv of its own.
UV_VERSION = "0.13.8"
#: The CPython releases uv 0.13.8 installs on Linux x86_64 (`uv python list --all-versions
#: --only-downloads`): for each minor version, its first and last patch release.
UV_PYTHONS = {
    (3, 8): (2, 20),
    (3, 9): (0, 25),
    (3, 10): (0, 22),
    (3, 11): (1, 18),
    (3, 12): (0, 16),
    (3, 13): (0, 18),
    (3, 14): (0, 10),
    (3, 15): (0, 2),
}


@dataclass(frozen=True)
class StackPackage:
    """A package the stack adds to the app's virtualenv, unless the app's dependencies declare it."""

    name: str
    version: str
    """The stack's pin, added when the app declares none."""
    minimum: str
    """The oldest release the stack works with; a requirement must admit it or a later one."""
    why: str


#: Gunicorn runs the app. 20.0 is the first to tell systemd it is ready (the service is Type=notify);
#: before 21.0 it imports pkg_resources, which setuptools no longer ships (from 82.0) and a Python 3.12
#: virtualenv does not have, so 20.x does not start. The rest the stack uses is older: socket activation
#: (LISTEN_FDS), GUNICORN_CMD_ARGS with --config, --check-config, and the post_worker_init, pre_request
#: and post_request(worker, req, environ, resp) hooks of the rendered gunicorn.conf.py; 27.0.1 keeps every
#: one of them (its changelog removes the eventlet worker, in 26.0, which the stack does not use) and
#: brings 24 to 27's stricter request parsing (smuggling, malformed headers and chunks refused).
GUNICORN = StackPackage(
    name="gunicorn",
    version="27.0.1",
    minimum="21.0.0",
    why="its service tells systemd when it is ready (20.0 and later) and 20.x imports pkg_resources, "
    "which current setuptools no longer ships",
)
STACK_PACKAGES = (GUNICORN,)

UV_LOCK = "uv.lock"
REQUIREMENTS = "requirements.txt"
PYPROJECT = "pyproject.toml"
DEPENDENCY_FILES = (UV_LOCK, REQUIREMENTS, PYPROJECT)
PYTHON_VERSION_FILE = ".python-version"
#: In the release's deps/: what the stack adds to the virtualenv (requirement lines), and the Python
#: the app asks for (a uv request) when the server's python3 does not satisfy it.
STACK_REQUIREMENTS = "stack-requirements.txt"
PYTHON_REQUEST = "python-request.txt"

#: Where a src-layout project keeps its packages.
SRC_LAYOUT_DIR = "src"


class AppSourceError(ValueError):
    """A problem with the app's directory; the message says what was looked for and what is accepted."""


@dataclass(frozen=True)
class AppSource:
    dependency_file: str
    """The file the dependencies come from, one of `DEPENDENCY_FILES`."""
    import_root: str
    """Directory inside the app its packages import from: "" (the app directory) or "src"."""
    deps_files: tuple[tuple[str, bytes], ...]
    """What the release's `deps/` directory holds: `uv.lock` and `pyproject.toml`, or a `requirements.txt`;
    `stack-requirements.txt`, and `python-request.txt` when the app asks for another Python."""
    stack_requirements: tuple[str, ...] = ()
    """What the stack adds to the app's dependencies: its pin, or a floor under the app's own."""
    python_request: str = ""
    """The Python the app asks for, as uv reads a request; empty for the server's python3."""

    @property
    def uses_uv(self) -> bool:
        return self.dependency_file == UV_LOCK


def module_root(app_dir: Path, module: str) -> str | None:
    """The directory inside `app_dir` from which `module` imports ("" or "src"), or None."""
    for root in ("", SRC_LAYOUT_DIR):
        path = app_dir.joinpath(root, *module.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return root
    return None


def inspect_app(app_dir: Path, import_root: str = "") -> AppSource:
    """Find the app's dependencies; raises `AppSourceError` naming every file that is wrong.

    `import_root` is where the WSGI module was found (see `module_root`).
    """
    problems: list[str] = []
    pyproject = _read_pyproject(app_dir, problems)
    requires = _requires_python(pyproject, problems) if pyproject is not None else None
    python_request = _python_request(app_dir, requires, problems)

    present = [name for name in DEPENDENCY_FILES if (app_dir / name).is_file()]
    deps_files: tuple[tuple[str, bytes], ...] = ()
    dependency_file = present[0] if present else ""
    if not present:
        problems.append(
            f"expected the app's dependencies in {app_dir}: a uv.lock (with its pyproject.toml), "
            "a requirements.txt, or a pyproject.toml with a [project] table; none of them is there"
        )
    elif dependency_file == UV_LOCK:
        if pyproject is None:
            problems.append(f"{app_dir / UV_LOCK} needs the pyproject.toml it was locked from beside it")
        else:
            deps_files = tuple((name, (app_dir / name).read_bytes()) for name in (PYPROJECT, UV_LOCK))
    elif dependency_file == REQUIREMENTS:
        deps_files = ((REQUIREMENTS, (app_dir / REQUIREMENTS).read_bytes()),)
    elif pyproject is not None:
        requirements = _pyproject_requirements(app_dir, pyproject, problems)
        deps_files = ((REQUIREMENTS, requirements.encode()),)

    stack: list[str] = []
    if dependency_file == UV_LOCK and deps_files:
        locked = locked_versions(dict(deps_files)[UV_LOCK].decode(errors="replace"))
        for package in STACK_PACKAGES:
            _check_locked(package, locked, app_dir / UV_LOCK, problems, stack)
    elif deps_files:
        where = app_dir / dependency_file
        declared = {canonicalize_name(r.name): r for r in requirement_lines(dict(deps_files)[REQUIREMENTS].decode())}
        for package in STACK_PACKAGES:
            _check_declared(package, declared.get(canonicalize_name(package.name)), where, problems, stack)
    deps_files += ((STACK_REQUIREMENTS, "".join(f"{line}\n" for line in stack).encode()),)
    if python_request:
        deps_files += ((PYTHON_REQUEST, f"{python_request}\n".encode()),)

    if problems:
        raise AppSourceError("; ".join(problems))
    return AppSource(
        dependency_file=dependency_file,
        import_root=import_root,
        deps_files=deps_files,
        stack_requirements=tuple(stack),
        python_request=python_request,
    )


# What the stack adds to the virtualenv


def requirement_lines(text: str) -> Iterator[Requirement]:
    """The requirements of a requirements file that name a package; options, URLs and includes are skipped."""
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if not line or line.startswith("-"):
            continue
        # Options of a requirement (--hash=..., --config-settings ...) follow it.
        line = re.split(r"\s+--", line, maxsplit=1)[0]
        try:
            yield Requirement(line)
        except InvalidRequirement:
            continue


def locked_versions(lock: str) -> dict[str, str]:
    """The packages a uv.lock installs with `uv sync --no-dev`: name -> version.

    From the project's own entry (its `source` is the directory itself), through the dependencies of
    each package, optional ones and dev groups left out.
    """
    try:
        packages = tomllib.loads(lock).get("package", [])
    except tomllib.TOMLDecodeError:
        return {}
    by_name = {str(p.get("name")): p for p in packages if isinstance(p, dict)}
    roots = [name for name, p in by_name.items() if {"editable", "virtual"} & set(p.get("source", {}))]
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        package = by_name.get(name)
        if package is None or name in seen:
            continue
        seen[name] = str(package.get("version", ""))
        todo += [str(d.get("name")) for d in package.get("dependencies", []) if isinstance(d, dict)]
    return {name: version for name, version in seen.items() if name not in roots}


def _accepted(package: StackPackage) -> str:
    return (
        f"accepted: {package.name} {package.minimum} or later (e.g. {package.name}=={package.version}), "
        f"or no {package.name} at all (the stack adds {package.name}=={package.version})"
    )


def _check_declared(
    package: StackPackage, requirement: Requirement | None, where: Path, problems: list[str], stack: list[str]
) -> None:
    """The app's own line for `package` wins, when it admits a release from the minimum on."""
    if requirement is None:
        stack.append(f"{package.name}=={package.version}")
        return
    if requirement.url is None and not admits_from(requirement.specifier, Version(package.minimum)):
        problems.append(
            f"{where} pins {requirement}, older than {package.name} {package.minimum}, the oldest the stack "
            f"runs the app with ({package.why}); {_accepted(package)}"
        )
        return
    # Never below the minimum, whatever else the app's range admits.
    stack.append(f"{package.name}>={package.minimum}")


def admits_from(specifier: SpecifierSet, minimum: Version) -> bool:
    """Whether `specifier` admits some version at or above `minimum`, whichever releases exist.

    What a specifier admits is a union of ranges whose ends are its own versions (a `~=` or `.*` clause
    ends where its prefix does). If any of it lies at or above `minimum`, then `minimum` itself, a version
    of a clause, or one just past a clause's version (the next release at each of its places) is in it;
    a version past every bound stands for the open end.
    """
    candidates = {minimum, Version("999999")}
    for clause in specifier:
        candidates |= _near(clause)
    return any(v >= minimum and specifier.contains(v, prereleases=True) for v in candidates)


def _near(clause: Specifier) -> set[Version]:
    """A clause's own version and those just past it, at each place of its release number."""
    text = clause.version.removesuffix(".*")
    try:
        version = Version(text)
    except InvalidVersion:  # `===` takes any string
        return set()
    release = version.release
    near = {version, Version(".".join(str(part) for part in (*release, 0, 1)))}
    for place in range(len(release)):
        bumped = (*release[:place], release[place] + 1)
        near.add(Version(".".join(str(part) for part in bumped)))
        near.add(Version(".".join(str(part) for part in (*release[: place + 1], 0, 1))))
    return near


def _check_locked(
    package: StackPackage, locked: dict[str, str], where: Path, problems: list[str], stack: list[str]
) -> None:
    version = locked.get(package.name)
    if version is None:
        stack.append(f"{package.name}=={package.version}")
        return
    try:
        too_old = Version(version) < Version(package.minimum)
    except InvalidVersion:
        too_old = False
    if too_old:
        problems.append(
            f"{where} locks {package.name} {version}, older than {package.name} {package.minimum}, the oldest the "
            f"stack runs the app with ({package.why}); {_accepted(package)}"
        )


# The Python the app asks for


def available_pythons() -> list[Version]:
    """Every CPython the server can run the app with: its python3, then what uv installs."""
    versions = [Version(SERVER_PYTHON_VERSION)]
    for (major, minor), (first, last) in UV_PYTHONS.items():
        versions += [Version(f"{major}.{minor}.{patch}") for patch in range(first, last + 1)]
    return versions


def describe_available() -> str:
    uv = ", ".join(
        f"{major}.{minor}.{first} to {major}.{minor}.{last}" for (major, minor), (first, last) in UV_PYTHONS.items()
    )
    return (
        f"the server's python3 {SERVER_PYTHON_VERSION} (Ubuntu 24.04), or a CPython that uv {UV_VERSION} installs: {uv}"
    )


_PYTHON_VERSION = re.compile(r"^(?:cpython[-@]?)?(?P<version>\d+(?:\.\d+){0,2})$")


def _python_request(app_dir: Path, requires: SpecifierSet | None, problems: list[str]) -> str:
    """The uv request for the app's Python, or "" when the server's python3 is one the app accepts."""
    path = app_dir / PYTHON_VERSION_FILE
    server = Version(SERVER_PYTHON_VERSION)
    if not path.is_file():
        if requires is None or server in requires:
            return ""
        if not [v for v in available_pythons() if v in requires]:
            problems.append(
                f"{app_dir / PYPROJECT}: requires-python = {str(requires)!r} admits no Python this server can have; "
                f"available: {describe_available()}"
            )
        return str(requires)
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(errors="replace").splitlines()]
    request = next((line for line in lines if line), "")
    matches = _matching(request)
    if matches is None:
        problems.append(
            f"{path}: {request!r} is not a CPython version; accepted: a version such as 3.13 or 3.13.2, "
            f"or a specifier such as >=3.12"
        )
        return ""
    candidates = [v for v in available_pythons() if matches(v) and (requires is None or v in requires)]
    if not candidates:
        also = f" within requires-python = {str(requires)!r} (pyproject.toml)" if requires is not None else ""
        problems.append(
            f"{path} asks for Python {request}{also}, which this server cannot have; available: {describe_available()}"
        )
        return ""
    return "" if server in candidates else request


def _matching(request: str) -> Callable[[Version], bool] | None:
    """A test of a version against a .python-version request, or None when it is not one."""
    found = _PYTHON_VERSION.match(request.lower())
    if found:
        parts = tuple(int(part) for part in found["version"].split("."))
        return lambda v: v.release[: len(parts)] == parts
    try:
        specifier = SpecifierSet(request)
    except InvalidSpecifier:
        return None
    return (lambda v: v in specifier) if request else None


def _read_pyproject(app_dir: Path, problems: list[str]) -> dict[str, object] | None:
    path = app_dir / PYPROJECT
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        problems.append(f"{path} is not valid TOML ({err})")
        return None


def _project_table(pyproject: dict[str, object]) -> dict[str, object]:
    project = pyproject.get("project")
    return project if isinstance(project, dict) else {}


def _requires_python(pyproject: dict[str, object], problems: list[str]) -> SpecifierSet | None:
    requires = _project_table(pyproject).get("requires-python")
    if requires is None:
        return None
    try:
        return SpecifierSet(str(requires))
    except InvalidSpecifier:
        problems.append(
            f"pyproject.toml: requires-python = {requires!r} is not a version specifier; accepted: e.g. '>=3.11'"
        )
        return None


def _pyproject_requirements(app_dir: Path, pyproject: dict[str, object], problems: list[str]) -> str:
    """The `[project]` dependencies as a requirements file, each one checked."""
    project = _project_table(pyproject)
    where = app_dir / PYPROJECT
    if not project:
        problems.append(f"{where} has no [project] table; accepted: PEP 621 metadata with a dependencies list")
        return ""
    dynamic = project.get("dynamic")
    if isinstance(dynamic, list) and "dependencies" in dynamic:
        problems.append(
            f"{where} declares its dependencies as dynamic; list them in [project] dependencies, "
            "or add a requirements.txt or uv.lock"
        )
        return ""
    dependencies = project.get("dependencies", [])
    if not isinstance(dependencies, list):
        problems.append(f"{where}: [project] dependencies must be a list of requirement strings")
        return ""
    lines = [f"# From [project] dependencies in {PYPROJECT}.\n"]
    for dependency in dependencies:
        try:
            lines.append(f"{Requirement(str(dependency))}\n")
        except InvalidRequirement as err:
            problems.append(f"{where}: dependency {dependency!r} is not a requirement ({err})")
    return "".join(lines)
