"""The agent's real boundary, on a scratch directory of this machine, and its archive run as the server runs it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.config import load
from agent.system import Completed, RealSystem
from core.bundle import agent_archive_bytes
from tests.unit.test_render import golden_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="files are written as root:root, as on the server")


def test_files_are_replaced_whole_with_their_owner_and_mode(tmp_path: Path) -> None:
    system = RealSystem()
    path = str(tmp_path / "etc" / "app" / "env")

    system.write_file(path, "A=1\n", "root:root", 0o640)
    system.write_file(path, b"A=2\n", "root:root", 0o640)

    assert system.read_text(path) == "A=2\n"
    assert system.read_bytes(path) == b"A=2\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    assert system.listdir(str(tmp_path / "etc" / "app")) == ["env"]
    assert system.read_text(str(tmp_path / "nothing")) is None
    assert system.read_bytes(str(tmp_path / "nothing")) is None
    assert system.listdir(str(tmp_path / "nothing")) == []


def test_links_directories_and_removal(tmp_path: Path) -> None:
    system = RealSystem()
    release = str(tmp_path / "releases" / "a")
    system.make_dirs(release, 0o750)
    system.write_file(f"{release}/app.py", "")

    system.symlink(release, str(tmp_path / "current"))
    system.symlink(release, str(tmp_path / "current"))
    system.link(f"{release}/app.py", str(tmp_path / "hard"))
    system.rename(str(tmp_path / "hard"), str(tmp_path / "moved"))

    assert system.readlink(str(tmp_path / "current")) == release
    assert system.readlink(release) is None
    assert system.is_dir(release) and system.exists(str(tmp_path / "moved"))
    assert system.mtime(release) > 0
    assert not system.is_executable(f"{release}/app.py")
    system.remove(release)
    system.remove(str(tmp_path / "moved"))
    system.remove(str(tmp_path / "never"))
    assert not system.exists(release) and not system.exists(str(tmp_path / "moved"))


def test_programs_run_with_their_output_captured_or_passed_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    system = RealSystem()

    assert system.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == Completed(3, "out\n", "err\n")
    assert system.run(["cat"], stdin="given") == Completed(0, "given", "")
    assert system.run(["sh", "-c", "umask"], umask=0o027).stdout.strip() == "0027"
    assert system.run(["sh", "-c", "echo $X"], env={"X": "set"}).stdout == "set\n"
    assert system.run(["sh", "-c", "echo to-the-log"], output="stderr").ok
    assert system.run(["/nowhere/program"]).returncode == 127
    system.log("a log line")
    system.say("a result")
    assert capfd.readouterr().err.endswith("to-the-log\na log line\n")


def test_locks_are_held_until_the_process_ends(tmp_path: Path) -> None:
    system = RealSystem()
    lock = str(tmp_path / "deploy.lock")

    assert system.try_lock(lock)
    holder = subprocess.run(
        [sys.executable, "-c", f"import fcntl; fcntl.flock(open({lock!r}, 'w'), fcntl.LOCK_EX | fcntl.LOCK_NB)"],
        capture_output=True,
        check=False,
    )
    assert holder.returncode != 0  # another process waits its turn
    assert not RealSystem().try_lock(lock)
    assert not system.held_by_another(str(tmp_path / "dpkg-lock"))
    assert not system.held_by_another(str(tmp_path / "no" / "such"))
    system.close()
    after = RealSystem()
    assert after.try_lock(lock)
    after.close()


def test_background_output_is_prefixed_and_ends_with_the_agent(capfd: pytest.CaptureFixture[str]) -> None:
    system = RealSystem()

    system.background(["sh", "-c", "echo one; sleep 30"], "file: ")
    deadline = system.now() + 10
    while "file: one" not in capfd.readouterr().out and system.now() < deadline:
        system.sleep(0.1)
    system.close()

    assert system.now() < deadline
    assert len(system.clock()) == 8
    assert system.stdio_is_terminal() is False


def test_the_archive_runs_with_only_its_own_code_and_settings(tmp_path: Path) -> None:
    archive = tmp_path / "agent.pyz"
    archive.write_bytes(agent_archive_bytes(golden_settings("ip")))

    # Isolated (-I), as deploy.sh runs it: no project on the path, no PYTHON* variables.
    result = subprocess.run(
        [sys.executable, "-I", str(archive), "run"], capture_output=True, text=True, cwd=tmp_path, check=False
    )

    assert result.returncode == 1
    assert "deploy[weather]: FAILED: usage: deploy.sh run [--] COMMAND [ARGS...]" in result.stderr
    names = zipfile.ZipFile(io.BytesIO(archive.read_bytes())).namelist()
    assert names == sorted(names)


def test_settings_load_from_beside_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import pkgutil

    settings = zipfile.ZipFile(io.BytesIO(agent_archive_bytes(golden_settings("ip")))).read("agent/settings.json")
    monkeypatch.setattr(pkgutil, "get_data", lambda package, name: settings)

    assert load().app_name == "weather"

    monkeypatch.setattr(pkgutil, "get_data", lambda package, name: None)
    with pytest.raises(RuntimeError, match=r"no settings\.json"):
        load()


def pythons_of_the_droplet() -> list[str]:
    """A Python 3.12 (Ubuntu 24.04's), wherever this machine has one: on PATH, or one of pyenv's."""
    found = shutil.which("python3.12")
    if found and subprocess.run([found, "--version"], capture_output=True, check=False).returncode == 0:
        return [found]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    return [str(path) for path in sorted(pyenv.glob("3.12*/bin/python3.12"))[-1:]]


@pytest.mark.skipif(not pythons_of_the_droplet(), reason="no Python 3.12 on this machine")
def test_the_archive_runs_on_the_droplets_python(tmp_path: Path) -> None:
    archive = tmp_path / "agent.pyz"
    archive.write_bytes(agent_archive_bytes(golden_settings("fleet")))
    python = pythons_of_the_droplet()[0]

    # Every module imports, with warnings (deprecations) as errors; then the agent answers a verb.
    modules = sorted(
        name.removesuffix(".py")
        for name in zipfile.ZipFile(archive).namelist()
        if name.startswith("agent/") and name.endswith(".py")
    )
    imports = "; ".join(f"import {name.replace('/', '.')}" for name in modules)
    imported = subprocess.run(
        [python, "-I", "-W", "error", "-c", f"import sys; sys.path.insert(0, {str(archive)!r}); {imports}"],
        capture_output=True,
        text=True,
        check=False,
    )
    ran = subprocess.run(
        [python, "-I", "-W", "error", str(archive), "backup", "x"], capture_output=True, text=True, check=False
    )

    assert imported.returncode == 0, imported.stderr
    assert ran.returncode == 1 and "FAILED: usage: deploy.sh backup" in ran.stderr, ran.stderr


def test_a_post_says_whether_it_was_taken_and_never_names_the_address() -> None:
    import http.server
    import socket
    import threading

    received: list[tuple[str, str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(204 if self.path == "/in" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # takes the connection, never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
    system = RealSystem()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert system.post(f"{base}/in", b'{"text": "x"}', 2) == ""
        assert system.post(f"{base}/s3cret", b"{}", 2) == "answered HTTP 404"
        refused = system.post(f"http://127.0.0.1:{closed.getsockname()[1]}/s3cret", b"{}", 2)
        assert refused == "is unreachable (Connection refused)"
        waited = system.post(f"http://127.0.0.1:{silent.getsockname()[1]}/s3cret", b"{}", 0.3)
        assert waited in ("did not answer within 0.3 s", "is unreachable (no answer within 0.3 s)")
        assert system.post("http://[::1/s3cret", b"{}", 1) == "failed (ValueError)"
    finally:
        server.shutdown()
        server.server_close()
        silent.close()
        closed.close()

    assert received[0] == ("/in", "application/json", b'{"text": "x"}')
