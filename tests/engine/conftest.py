"""The real Pulumi engine (scripts/install-engine) running this project from a copy of it.

Each test gets its own copy of the project's tracked files, its own file backend and Pulumi
home, and nothing that could reach Pulumi Cloud or download a plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import do_api
from tests.pulumi_harness import PROJECT_DIR

#: The passphrase that encrypts the test stacks' secrets.
PASSPHRASE = "engine-tests-passphrase"
#: The longest one CLI command may take here (a preview of this program takes seconds).
COMMAND_TIMEOUT_SECONDS = 300


#: Where the program reads the account first (`GET /v2/account`, tests/do_api.py), set by `account_api`.
ACCOUNT_API: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def account_api() -> Iterator[None]:
    """DigitalOcean's account read on loopback, for every stack here: any token is taken as the account's."""
    with do_api.serving(token=None) as server:
        ACCOUNT_API["url"] = do_api.endpoint(server)
        yield
    ACCOUNT_API.clear()


@pytest.fixture(scope="session")
def engine_bin() -> Path:
    """The directory that holds `pulumi` and the Python language host, built or reused."""
    built = subprocess.run(
        [str(PROJECT_DIR / "scripts/install-engine")],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


@dataclass
class Workspace:
    """A project directory, and the environment every `pulumi` command there runs with."""

    project: Path
    env: dict[str, str]

    def run(self, command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """COMMAND (a shell line, as a user types it) in the project directory; its output, never raising."""
        return self._run(["bash", "-c", command], stdin)

    def pulumi(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self._run(["pulumi", *args, "--non-interactive", "--color", "never"], stdin)

    def _run(self, argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.project,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """`pulumi ARGS` that must succeed; its standard output."""
        done = self.pulumi(*args, stdin=stdin)
        assert done.returncode == 0, f"pulumi {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def copy_project(target: Path) -> Path:
    """The files git tracks here, as a user's clone has them, with this checkout's virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT_DIR / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    (target / ".venv").symlink_to(PROJECT_DIR / ".venv")
    return target


def engine_env(engine_bin: Path, root: Path, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """PATH with the engine first, a file backend and a Pulumi home under ROOT, no network of Pulumi's."""
    (root / "backend").mkdir(parents=True, exist_ok=True)
    (root / "pulumi-home").mkdir(parents=True, exist_ok=True)
    kept = {name: os.environ[name] for name in ("LANG", "LC_ALL", "TERM") if name in os.environ}
    return {
        **kept,
        "PATH": f"{engine_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(root / "home"),
        "PULUMI_HOME": str(root / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The provider's endpoint and token: the account's read answers here; nothing reaches DigitalOcean.
        "DIGITALOCEAN_API_URL": ACCOUNT_API["url"],
        "DIGITALOCEAN_TOKEN": "dop_v1_engine-tests",
        **extra,
    }


@pytest.fixture
def workspace(engine_bin: Path, tmp_path: Path) -> Workspace:
    """A copy of the project with a fresh stack `dev` on its own file backend."""
    (tmp_path / "home").mkdir()
    space = Workspace(copy_project(tmp_path / "project"), engine_env(engine_bin, tmp_path))
    space.ok("stack", "init", "dev")
    return space
