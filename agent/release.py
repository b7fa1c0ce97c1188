"""The release phase: unpack the bundle, its virtualenv, its links into the state, its release command.

A release directory appears under `releases/` only whole: it is made in a staging
directory beside it and renamed into place last.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import platform
import tarfile
from dataclasses import dataclass

from agent import checks, wheels
from agent.config import Config
from agent.context import Agent
from agent.manifest import Entry, loads

#: What the app runs with, after the release's own virtualenv.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIP_QUIET = ("--quiet", "--no-cache-dir", "--disable-pip-version-check")
#: In the release's deps/ (`core/appsource.py`): what the stack adds to the virtualenv, and the
#: Python the app asks for when the system's python3 does not satisfy it.
STACK_REQUIREMENTS = "stack-requirements.txt"
PYTHON_REQUEST = "python-request.txt"
#: Where uv keeps the CPython builds it installs for apps that ask for one.
PYTHON_INSTALL_DIR = "/opt/flaskdroplet/python"


@dataclass(frozen=True)
class Bundle:
    """What the agent reads of a release's archive before unpacking it."""

    path: str
    sha256: str
    unpacked_bytes: int
    deps: dict[str, bytes]
    manifest: tuple[Entry, ...]
    processes: str = ""
    """Its `server/processes.json`: the release's processes and scheduled jobs."""

    @classmethod
    def read(cls, path: str, data: bytes) -> Bundle:
        raw = gzip.decompress(data)
        deps: dict[str, bytes] = {}
        manifest: tuple[Entry, ...] = ()
        processes = ""
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                extracted = tar.extractfile(member)
                content = extracted.read() if extracted else b""
                if member.name.startswith("deps/") and "/" not in member.name[5:]:
                    deps[member.name[5:]] = content
                elif member.name == "server/manifest.json":
                    manifest = tuple(loads(content.decode()))
                elif member.name == "server/processes.json":
                    processes = content.decode()
        return cls(path, hashlib.sha256(data).hexdigest(), len(raw), deps, manifest, processes)

    def venv_key(self, gunicorn_version: str) -> str:
        """Releases with the same dependencies (and Python, and Gunicorn) share one virtualenv."""
        lines = [f"{hashlib.sha256(self.deps[name]).hexdigest()}  {name}\n" for name in sorted(self.deps)]
        lines += [f"gunicorn=={gunicorn_version}\n", f"Python {platform.python_version()}\n"]
        return hashlib.sha256("".join(lines).encode()).hexdigest()[:12]


def release_dir(agent: Agent, release_id: str) -> str:
    return f"{agent.config.layout.releases}/{release_id}"


def release_properties(agent: Agent, directory: str) -> list[str]:
    """systemd-run options that run a release as the live service runs."""
    config = agent.config
    return [
        f"--uid={config.layout.app_user}",
        f"--gid={config.layout.app_user}",
        f"--working-directory={directory}/app",
        f"--property=EnvironmentFile={directory}/release.env",
        f"--property=EnvironmentFile=-{config.layout.env_file}",
        f"--property=StateDirectory={config.app_name}",
        "--property=StateDirectoryMode=0750",
        f"--property=RequiresMountsFor={config.layout.state_dir}",
        *(f"--property={key}={value}" for key, value in config.sandbox),
    ]


def find_program(agent: Agent, directory: str, name: str) -> str:
    """The program `name` runs as: a path in the app, or found in the release's virtualenv, then PATH."""
    if "/" in name:
        return name if name.startswith("/") else f"{directory}/app/{name}"
    for place in [f"{directory}/app/.venv/bin", *SYSTEM_PATH.split(":")]:
        if agent.system.is_executable(f"{place}/{name}"):
            return f"{place}/{name}"
    return ""


def run_in_release(agent: Agent, directory: str, argv: list[str], interactive: bool = False) -> int:
    """ARGV as the app's user, in the release's sandbox and environment; its exit status.

    `interactive` passes the agent's own terminal through (a one-off `flask shell`); else its
    input is empty and its output goes to the deploy's log.
    """
    program = find_program(agent, directory, argv[0])
    if not program or not agent.system.is_executable(program):
        agent.log(f"no program '{argv[0]}' in the release's virtualenv ({directory}/app/.venv/bin), the app or PATH")
        return 127
    # A terminal on both ends (ssh -t) gets one inside too, for interactive commands such as `flask shell`.
    mode = "--pty" if interactive and agent.system.stdio_is_terminal() else "--pipe"
    command = ["systemd-run", "--quiet", "--wait", "--collect", mode, *release_properties(agent, directory)]
    if interactive:
        return agent.system.run([*command, program, *argv[1:]], output="inherit", inherit_stdin=True).returncode
    return agent.system.run([*command, program, *argv[1:]], output="stderr").returncode


# Unpack


def unpack(agent: Agent, release_id: str, bundle: Bundle) -> str:
    """The release's directory, made from the bundle unless it is there already."""
    config, system = agent.config, agent.system
    directory = release_dir(agent, release_id)
    if system.is_dir(directory):
        return directory
    agent.log(f"unpacking release {release_id}")
    system.make_dirs(config.layout.releases)
    system.make_dirs(config.layout.venvs)
    venv = f"{config.layout.root}/venvs/{bundle.venv_key(config.gunicorn_version)}"
    venv_is_new = not system.exists(f"{venv}/.complete")
    checks.check_disk(agent, release_id, bundle.unpacked_bytes, venv_is_new)
    staging = system.run(["mktemp", "-d", f"{config.layout.releases}/.staging.XXXXXX"]).stdout.strip()
    if not staging:
        agent.fail(f"could not make a staging directory in {config.layout.releases}")
    try:
        untar = ["tar", "-xzf", bundle.path, "-C", staging, "--no-same-owner", "--no-same-permissions"]
        if not system.run(untar, output="stderr").ok:
            agent.fail(f"release {release_id}: the bundle {bundle.path} does not unpack")
        system.run(["chmod", "-R", "u=rwX,go=rX", staging])
        system.run(["chmod", "0755", staging])
        if venv_is_new:
            checks.wait_for_apt(agent)
            system.remove(venv)
            install_dependencies(agent, release_id, venv, f"{staging}/deps", bundle)
            system.write_file(f"{venv}/.complete", "")
        else:
            agent.log(f"reusing {venv}")
        system.symlink(venv, f"{staging}/app/.venv")
        link_state(agent, staging)
        store_static_files(agent, staging)
        system.write_file(f"{staging}/release.env", release_env(agent, release_id, directory))
        system.rename(staging, directory)
    finally:
        system.remove(staging)
    return directory


def release_env(agent: Agent, release_id: str, directory: str) -> str:
    """`release.env`: what the release itself adds to the app's environment."""
    config = agent.config
    import_root = f"/{config.import_root}" if config.import_root else ""
    lines = [
        f"APP_VERSION={release_id}",
        f"PATH={directory}/app/.venv/bin:{SYSTEM_PATH}",
        f"PYTHONPATH={directory}/app{import_root}",
        # The release's own Gunicorn settings (its static URLs).
        f"GUNICORN_CMD_ARGS=--config={directory}/server/gunicorn.conf.py",
        *([f"DATABASE_URL={config.sqlite_url}"] if config.sqlite_url else []),
    ]
    return "".join(line + "\n" for line in lines)


def install_dependencies(agent: Agent, release_id: str, venv: str, deps: str, bundle: Bundle) -> None:
    """A new virtualenv with the release's dependencies and what the stack adds (Gunicorn), on the Python
    the app asks for: the system's python3 where it satisfies the request, else a CPython uv installs."""
    config, system = agent.config, agent.system
    stack_file = bundle.deps.get(STACK_REQUIREMENTS)
    stack = stack_file.decode().split() if stack_file is not None else [f"gunicorn=={config.gunicorn_version}"]
    request = bundle.deps.get(PYTHON_REQUEST, b"").decode().strip()
    locked = "uv.lock" in bundle.deps
    if (locked or request) and not checks.install_tool(agent, "uv", config.uv_version, config.layout.uv):
        agent.fail(f"release {release_id}: uv {config.uv_version} did not install (output above)")
    # The system's certificate authorities, as pip uses them; a Python of uv's own only when the app asks.
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_SYSTEM_CERTS": "1", "UV_NO_CACHE": "1"}
    if request:
        env |= {"UV_PYTHON_DOWNLOADS": "automatic", "UV_PYTHON_PREFERENCE": "system"}
        env |= {"UV_PYTHON_INSTALL_DIR": PYTHON_INSTALL_DIR}
        agent.log(f"the app asks for Python {request}: a system interpreter that satisfies it, else uv installs one")
        made = [config.layout.uv, "venv", "--quiet", "--python", request, *([] if locked else ["--seed"]), venv]
    elif locked:
        made = [config.layout.uv, "venv", "--quiet", "--python", "/usr/bin/python3", venv]
    else:
        made = ["python3", "-m", "venv", venv]
    done = system.run(made, output="stderr", env=env if made[0] == config.layout.uv else None).ok
    if done:
        prepare_build(agent, release_id, venv, bundle, system_python=not request)
    if done and locked:
        agent.log(f"installing the locked dependencies (uv.lock) into {venv}")
        # Exactly the lock: --locked fails when it no longer matches pyproject.toml.
        sync = [config.layout.uv, "sync", "--quiet", "--locked", "--no-dev", "--no-install-project"]
        sync += ["--python", f"{venv}/bin/python", "--project", deps]
        done = system.run(sync, output="stderr", env={**env, "UV_PROJECT_ENVIRONMENT": venv}).ok
        if done and stack:
            install = [config.layout.uv, "pip", "install", "--quiet", "--python", f"{venv}/bin/python", *stack]
            done = system.run(install, output="stderr", env=env).ok
    elif done:
        agent.log(f"installing requirements into {venv}")
        pip = [f"{venv}/bin/pip", "install", *PIP_QUIET, "-r", f"{deps}/requirements.txt", *stack]
        done = system.run(pip, output="stderr").ok
    if not done:
        system.remove(venv)
        agent.fail(f"release {release_id}: its dependencies did not install into {venv} (output above)")


def venv_target(agent: Agent, venv: str) -> wheels.Target | None:
    """The interpreter and platform of a virtualenv, as wheels are tagged."""
    script = "import platform, sys; print(*sys.version_info[:2], platform.libc_ver()[1], platform.machine())"
    words = agent.system.run([f"{venv}/bin/python", "-c", script]).stdout.split()
    if len(words) != 4 or not all(part.isdigit() for part in [*words[:2], *words[2].split(".")]):
        return None
    glibc = [int(part) for part in words[2].split(".")[:2]]
    return wheels.Target((int(words[0]), int(words[1])), (glibc[0], glibc[1]), words[3])


def prepare_build(agent: Agent, release_id: str, venv: str, bundle: Bundle, system_python: bool) -> None:
    """Before installing: the pins without a wheel for this Python are named, and buildPackages installed."""
    config, system = agent.config, agent.system
    target = venv_target(agent, venv)
    if target is not None:
        agent.log(f"the app's Python: {target}")
        wheels.report(agent, bundle.deps, target, system_python)
    if config.build_packages:
        checks.wait_for_apt(agent)
        agent.log(f"installing buildPackages: {' '.join(config.build_packages)}")
        apt = ["apt-get", "install", "--yes", "--quiet", "--no-install-recommends", *config.build_packages]
        if not system.run(apt, output="stderr", env={"DEBIAN_FRONTEND": "noninteractive"}).ok:
            system.remove(venv)
            agent.fail(
                f"release {release_id}: buildPackages did not install (output above); the live release keeps serving"
            )


def _inside(path: str) -> bool:
    return "/../" not in f"/{path}/"


def link_state(agent: Agent, directory: str) -> None:
    """The paths in the release's server/state-links become links into the state directory."""
    config, system = agent.config, agent.system
    owner = f"{config.layout.app_user}:{config.layout.app_user}"
    system.make_dirs(config.layout.state_dir, 0o750, owner)
    for line in (system.read_text(f"{directory}/server/state-links") or "").splitlines():
        if not line.strip():
            continue
        app_path, _, state_path = line.partition(" ")
        if not (_inside(app_path) and _inside(state_path)):
            agent.fail(f"state link '{app_path}' leaves its directory")
        made = f"{config.layout.state_dir}/{state_path}"
        system.run(["runuser", "-u", config.layout.app_user, "--", "mkdir", "-p", made], umask=0o027)
        link = f"{directory}/app/{app_path}"
        system.remove(link)
        system.make_dirs(link.rsplit("/", 1)[0])
        system.symlink(made, link)


def store_static_files(agent: Agent, directory: str) -> None:
    """Each static file becomes a link to its content's copy in the store (one file for one content:
    its ETag and Last-Modified stay the same while the content does)."""
    config, system = agent.config, agent.system
    if not config.static_dir:
        return
    for line in (system.read_text(f"{directory}/server/static-manifest") or "").splitlines():
        digest, _, path = line.partition(" ")
        if len(digest) != 12 or any(c not in "0123456789abcdef" for c in digest) or not path or not _inside(path):
            agent.fail(f"static manifest line '{line}' is not HASH PATH")
        stored, shipped = f"{config.layout.assets}/{digest}/{path}", f"{directory}/app/{config.static_dir}/{path}"
        if not system.exists(stored):
            content = system.read_bytes(shipped) or b""
            if hashlib.sha256(content).hexdigest()[:12] != digest:
                agent.fail(f"static file {path} does not match its hash in the manifest")
            system.write_file(stored, content)
        system.link(stored, shipped)


# Checks of the unpacked release


def check_config(agent: Agent, release_id: str, directory: str) -> None:
    """Gunicorn loads the app with this release's code and the real environment, as the app's user."""
    config = agent.config
    agent.log(f"checking that {config.wsgi_target} loads")
    gunicorn = [f"{directory}/app/.venv/bin/gunicorn", "--check-config", "--workers", str(config.workers)]
    command = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", *release_properties(agent, directory)]
    if not agent.system.run([*command, *gunicorn, config.wsgi_target], output="stderr").ok:
        agent.fail(f"release {release_id}: gunicorn --check-config {config.wsgi_target} failed (output above)")


def release_commands(config: Config) -> list[tuple[str, tuple[str, ...]]]:
    """What runs once for each release before it goes live, in order, each with where it comes from:
    releaseCommand (or the Procfile's release:), then what the Procfile's web line runs before Gunicorn."""
    named = [("releaseCommand", config.release_command)] if config.release_command else []
    return named + [("Procfile web:", command) for command in config.web_commands]


def run_release_command(agent: Agent, directory: str, live_release: str, skip: bool) -> None:
    """releaseCommand and the Procfile web line's commands before Gunicorn, once for each release (a marker
    records them), in order; the first that fails stops the deploy with the live release kept."""
    config, system = agent.config, agent.system
    commands = release_commands(config)
    if not commands:
        return
    if skip:
        agent.log("release command: left to the droplet that ran it for this release")
        return
    done = "\n".join(" ".join(argv) for _, argv in commands)
    marker = f"{directory}/.release-command-done"
    if system.read_text(marker) == done:
        return
    for source, argv in commands:
        words = " ".join(argv)
        if source == "releaseCommand":
            agent.log(f"running the release command: {words}")
        else:
            when = "once for this release before it goes live"
            agent.log(f"running the Procfile's web command before Gunicorn, {when}: {words}")
        status = run_in_release(agent, directory, list(argv))
        if status != 0:
            still = f"{live_release} is still live" if live_release else ""
            agent.fail(
                f"release {directory.rsplit('/', 1)[-1]}: {source} '{words}' exited {status} (output above); {still}"
            )
    system.write_file(marker, done)
