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
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

#: Ubuntu 24.04's python3, which runs the app on the droplet.
SERVER_PYTHON_VERSION = "3.12.3"

UV_LOCK = "uv.lock"
REQUIREMENTS = "requirements.txt"
PYPROJECT = "pyproject.toml"
DEPENDENCY_FILES = (UV_LOCK, REQUIREMENTS, PYPROJECT)

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
    """What the release's `deps/` directory holds: `uv.lock` and `pyproject.toml`, or a `requirements.txt`."""

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
    if pyproject is not None:
        _check_requires_python(pyproject, problems)

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

    if problems:
        raise AppSourceError("; ".join(problems))
    return AppSource(dependency_file=dependency_file, import_root=import_root, deps_files=deps_files)


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


def _check_requires_python(pyproject: dict[str, object], problems: list[str]) -> None:
    requires = _project_table(pyproject).get("requires-python")
    if requires is None:
        return
    try:
        specifier = SpecifierSet(str(requires))
    except InvalidSpecifier:
        problems.append(f"pyproject.toml: requires-python = {requires!r} is not a version specifier")
        return
    if SERVER_PYTHON_VERSION not in specifier:
        problems.append(
            f"pyproject.toml: requires-python = {requires!r} excludes the server's Python "
            f"{SERVER_PYTHON_VERSION} (Ubuntu 24.04); accepted: a range that includes it, e.g. '>=3.11'"
        )


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
