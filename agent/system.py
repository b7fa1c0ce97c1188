"""The one boundary between the agent and the server: programs, files, locks and time.

Every effect the agent has on a server goes through a `System`. `RealSystem` is the
server itself; `agent.fake.FakeSystem` answers from facts and records what was asked,
so that each phase is tested without a machine. Commands are argument lists, never
shell strings.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol, TypedDict, Unpack


@dataclass(frozen=True)
class Completed:
    """How a program ended, and what it printed when its output was captured."""

    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


#: Where a program's output goes: "capture" keeps it, "stderr" shows it in the deploy's log
#: (stdout is what the executors parse), "inherit" passes the agent's own streams through.
Output = str


class RunOptions(TypedDict, total=False):
    """How `System.run` runs a program."""

    output: Output
    """"capture" (the default), "stderr" or "inherit"."""
    stdin: str | None
    """What the program reads; None reads nothing, unless `inherit_stdin`."""
    env: Mapping[str, str] | None
    """Variables added to the agent's own environment."""
    inherit_stdin: bool
    """The program reads the agent's own stdin."""
    umask: int | None
    """The program's own umask, for the files it makes."""


class System(Protocol):
    def run(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Completed:
        """Run a program, as `options` say."""
        ...

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when there is no such file."""
        ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def write_file(self, path: str, content: str | bytes, owner: str = "root:root", mode: int = 0o644) -> None:
        """Replace the file at once (a new file renamed over it), its parents made as needed."""
        ...

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]:
        """The names in a directory, sorted; none when it does not exist."""
        ...

    def mtime(self, path: str) -> float: ...

    def is_executable(self, path: str) -> bool: ...

    def link(self, source: str, target: str) -> None:
        """`target` becomes a hard link to `source`, replacing what was there."""
        ...

    def background(self, argv: Sequence[str], prefix: str) -> None:
        """Start a program whose output lines go to stdout after `prefix`; it ends when the agent does."""
        ...

    def make_dirs(self, path: str, mode: int = 0o755, owner: str = "root:root") -> None:
        """The directory and its parents, with this mode and owner for the directory itself."""
        ...

    def remove(self, path: str) -> None:
        """A file, link or whole tree gone; nothing when it is not there."""
        ...

    def rename(self, source: str, target: str) -> None: ...

    def symlink(self, target: str, link: str) -> None:
        """`link` points at `target`, replaced at once when it exists."""
        ...

    def readlink(self, path: str) -> str | None: ...

    def stdin_text(self) -> str | None:
        """What the agent's own stdin holds, or None when it is a terminal."""
        ...

    def stdio_is_terminal(self) -> bool: ...

    def try_lock(self, path: str) -> bool:
        """Take an exclusive lock that this process holds until it ends; False while another holds it."""
        ...

    def held_by_another(self, path: str) -> bool:
        """Whether another process holds an fcntl lock on the file (as apt and dpkg do); nothing is kept."""
        ...

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def clock(self) -> str:
        """The time of day for log lines, HH:MM:SS."""
        ...

    def log(self, line: str) -> None:
        """A line of the deploy's log, on stderr."""
        ...

    def say(self, line: str) -> None:
        """A line of the result, on stdout (what `parse_deploy_output` reads)."""
        ...

    def post(self, url: str, body: bytes, timeout: float) -> str:
        """POST a JSON body, once, for `timeout` seconds at most; "" when it was taken (2xx), else why not.

        The reason never holds the address: a webhook's address is its secret."""
        ...


def _owner_ids(owner: str) -> tuple[int, int]:
    import grp
    import pwd

    user, _, group = owner.partition(":")
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group or user).gr_gid


class RealSystem:
    """The server this process runs on."""

    def __init__(self) -> None:
        self._locks: list[IO[str]] = []
        self._children: list[subprocess.Popen[str]] = []

    def run(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Completed:
        sys.stdout.flush()
        sys.stderr.flush()
        stdin, env, umask = options.get("stdin"), options.get("env"), options.get("umask")
        output = options.get("output", "capture")
        full_env = {**os.environ, **env} if env else None
        stdin_from = None if options.get("inherit_stdin") or stdin is not None else subprocess.DEVNULL
        given: dict[str, Any] = {"input": stdin, "text": True, "env": full_env, "check": False}
        if stdin is None:
            given["stdin"] = stdin_from
        if umask is not None:
            given["umask"] = umask
        try:
            if output == "capture":
                result = subprocess.run(list(argv), capture_output=True, **given)
                return Completed(result.returncode, result.stdout, result.stderr)
            stdout = sys.stderr if output == "stderr" else None
            result = subprocess.run(list(argv), stdout=stdout, **given)
            return Completed(result.returncode)
        except FileNotFoundError as err:
            return Completed(127, "", f"{argv[0]}: {err.strerror}\n")

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                return file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_bytes(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as file:
                return file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_file(self, path: str, content: str | bytes, owner: str = "root:root", mode: int = 0o644) -> None:
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        descriptor, staged = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.chown(staged, *_owner_ids(owner))
            os.chmod(staged, mode)
            os.replace(staged, path)
        except BaseException:
            os.unlink(staged)
            raise

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def mtime(self, path: str) -> float:
        return os.stat(path).st_mtime

    def is_executable(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def link(self, source: str, target: str) -> None:
        staged = f"{target}.link-new"
        self.remove(staged)
        os.link(source, staged)
        os.replace(staged, target)

    def background(self, argv: Sequence[str], prefix: str) -> None:
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._children.append(process)

        def copy() -> None:
            assert process.stdout is not None
            # Closed once the child's output ends, not left to the garbage collector (a ResourceWarning).
            with process.stdout:
                for line in process.stdout:
                    sys.stdout.write(prefix + line)
                    sys.stdout.flush()

        threading.Thread(target=copy, daemon=True).start()

    def close(self) -> None:
        """What the agent started ends, and its locks are let go: it is done."""
        for process in self._children:
            process.kill()
            process.wait()
        for lock in self._locks:
            lock.close()

    def make_dirs(self, path: str, mode: int = 0o755, owner: str = "root:root") -> None:
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chown(path, *_owner_ids(owner))
        os.chmod(path, mode)

    def remove(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def symlink(self, target: str, link: str) -> None:
        staged = f"{os.path.dirname(link) or '.'}/.{os.path.basename(link)}.new"
        self.remove(staged)
        os.symlink(target, staged)
        os.replace(staged, link)

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(path)
        except (FileNotFoundError, OSError):
            return None

    def stdin_text(self) -> str | None:
        if sys.stdin.isatty():
            return None
        return sys.stdin.read()

    def stdio_is_terminal(self) -> bool:
        return sys.stdin.isatty() and sys.stdout.isatty()

    def try_lock(self, path: str) -> bool:
        lock = open(path, "w")  # noqa: SIM115 - held open until the process ends, as the lock is
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return False
        self._locks.append(lock)
        return True

    def held_by_another(self, path: str) -> bool:
        try:
            with open(path, "a") as lock:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return False

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def clock(self) -> str:
        return time.strftime("%H:%M:%S")

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        print(line, flush=True)

    def post(self, url: str, body: bytes, timeout: float) -> str:
        headers = {"Content-Type": "application/json", "User-Agent": "flask-droplet-notify/1"}
        try:
            # The stack's own webhooks: http(s) addresses only (core/settings.py).
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read(65536)
        except urllib.error.HTTPError as err:
            return f"answered HTTP {err.code}"
        except urllib.error.URLError as err:
            reason = err.reason
            why = reason.strerror if isinstance(reason, OSError) and reason.strerror else ""
            why = why or (f"no answer within {timeout:g} s" if isinstance(reason, TimeoutError) else "no answer")
            return f"is unreachable ({why})"
        except TimeoutError:
            return f"did not answer within {timeout:g} s"
        except (OSError, ValueError, http.client.HTTPException) as err:
            return f"failed ({type(err).__name__})"
        return ""
