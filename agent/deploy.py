"""The deploy verb: checks, release, publish, finish, in that order.

    checks   the bundle and address; the certificate (DNS first); the state Volume
    release  the environment file; unpack (disk check, virtualenv, links, static files);
             gunicorn --check-config; the release command; the memory check
    publish  the server's files from the manifest, their handlers; the candidate; the switch
    finish   prune; the outcome on stdout

A failure stops it with the live release, its units and its site as they were.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from agent import certificate, checks, finish, manifest, notify, processes, publish, release, volume
from agent.context import Agent
from agent.inputs import DeployInput
from agent.manifest import Applied, Entry, Rejected
from agent.strict import InputError

RELEASE_ID = re.compile(r"[0-9a-f]{12}")
IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


@dataclass(frozen=True)
class DeployRequest:
    release_id: str
    bundle: str
    public_ipv4: str = ""
    """The address the site is reached at (the Reserved IP); empty for the last one given."""
    skip_release_command: bool = False
    secondary: bool = False
    """Not the fleet's first droplet: it runs no scheduled jobs, and no processes marked for the first only."""


def read_bundle(agent: Agent, request: DeployRequest) -> release.Bundle:
    if not RELEASE_ID.fullmatch(request.release_id):
        agent.fail(f"release id '{request.release_id}' is not 12 hex digits")
    data = agent.system.read_bytes(request.bundle)
    if data is None:
        agent.fail(f"bundle {request.bundle} does not exist")
    if hashlib.sha256(data).hexdigest()[:12] != request.release_id:
        agent.fail(f"bundle {request.bundle} does not match release {request.release_id}")
    return release.Bundle.read(request.bundle, data)


def record_public_ipv4(agent: Agent, given: str) -> str:
    path = agent.config.layout.public_ipv4_file
    if given:
        if not IPV4.fullmatch(given):
            agent.fail(f"public address '{given}' is not an IPv4 address")
        agent.system.make_dirs(agent.config.layout.root)
        agent.system.write_file(path, given + "\n")
    recorded = finish.public_ipv4(agent)
    if not recorded:
        agent.fail("no public address given, and none recorded")
    return recorded


def read_stdin(agent: Agent) -> DeployInput | None:
    """The deploy's stdin: one JSON document (`DeployInput`) of the app's environment file, the webhooks
    (notifyWebhooks) and the off-site bucket with its key (offsiteRegion); or the environment file alone.

    The webhooks take their place at once, so that a check that fails is told, and so does the bucket; the
    input is returned for the release phase's environment. Empty stdin (a terminal, /dev/null) keeps them all
    as the server has them.
    """
    given = agent.system.stdin_text()
    if not given:
        return None
    try:
        document = DeployInput.from_stdin(given)
    except InputError as error:
        agent.fail(f"{error}; nothing has changed")
    agent.system.make_dirs(agent.config.layout.config_dir, 0o750, f"root:{agent.config.layout.app_user}")
    notify.install(agent, document)
    install_offsite(agent, document)
    return document


def install_offsite(agent: Agent, given: DeployInput) -> None:
    """The off-site bucket and its key from the deploy's stdin, root's alone; none without offsiteRegion.

    With it, the tools the off-site unit runs: age, from Ubuntu, and boto3 at its pinned version."""
    config, system = agent.config, agent.system
    if not config.layout.offsite_file:
        return
    if not (config.offsite and given.offsite):
        system.remove(config.layout.offsite_file)
        return
    text = given.offsite_file()
    if system.read_text(config.layout.offsite_file) != text:
        system.write_file(config.layout.offsite_file, text, "root:root", 0o600)
    if not system.exists("/usr/bin/age"):
        checks.wait_for_apt(agent)
        apt = ["apt-get", "install", "--yes", "--quiet", "--no-install-recommends", "age"]
        if not system.run(apt, output="stderr", env={"DEBIAN_FRONTEND": "noninteractive"}).ok:
            agent.fail("installing age (apt-get install age) failed (output above); the off-site copies need it")
    if not checks.install_tool(agent, "boto3", config.boto3_version, config.layout.offsite_python):
        agent.fail(f"installing boto3 {config.boto3_version} failed (output above); the off-site copies need it")


def install_environment(agent: Agent, given: DeployInput | None) -> bool:
    """The app's environment file, as `read_stdin` read it (root's, readable by the app's group); whether
    it changed. None keeps the environment the server has."""
    config, system = agent.config, agent.system
    system.make_dirs(config.layout.config_dir, 0o750, f"root:{config.layout.app_user}")
    if not given or not given.environment or given.environment == system.read_text(config.layout.env_file):
        return False
    system.write_file(config.layout.env_file, given.environment, f"root:{config.layout.app_user}", 0o640)
    return True


def set_worker_connections(agent: Agent) -> None:
    """nginx's connections per worker (nginx.conf holds the only place for them); set at first boot too."""
    system, wanted = agent.system, agent.config.nginx_worker_connections
    conf = system.read_text("/etc/nginx/nginx.conf")
    if conf is None or re.search(rf"^\s*worker_connections\s+{wanted};", conf, re.MULTILINE):
        return
    system.write_file(
        "/etc/nginx/nginx.conf", re.sub(r"^(\s*worker_connections)\s+[0-9]+;", rf"\g<1> {wanted};", conf, flags=re.M)
    )
    if system.run(["nginx", "-t"]).ok:
        agent.systemctl("reload", "nginx")


def prepare_directories(agent: Agent) -> None:
    """Where the backups are taken and kept, when they are on."""
    config = agent.config
    if config.backup_days > 0:
        agent.system.make_dirs(config.layout.backups, 0o710, f"root:{config.layout.app_user}")
        agent.system.make_dirs(
            config.layout.backup_incoming, 0o700, f"{config.layout.app_user}:{config.layout.app_user}"
        )
        # Readable by the app's user, who runs the script, whatever the umask of the deploy's session.
        agent.system.make_dirs(config.layout.backup_script.rsplit("/", 1)[0])


def publish_files(agent: Agent, release_id: str, entries: list[Entry], https: bool) -> Applied:
    """The server's files as the manifest renders them, and the handlers their changes notify."""
    try:
        applied = manifest.apply(agent.system, entries, https)
    except Rejected as rejected:
        agent.fail(f"release {release_id}: nginx rejects its site configuration (nginx -t)")
        raise AssertionError from rejected  # not reached: fail raises
    manifest.run_handlers(agent.system, applied.notified)
    manifest.enable_units(agent.system, entries, https)
    return applied


def deploy(agent: Agent, request: DeployRequest) -> None:
    config, system = agent.config, agent.system
    environment = read_stdin(agent)
    # Checks: nothing of the site has changed yet when one fails.
    bundle = read_bundle(agent, request)
    public_ipv4 = record_public_ipv4(agent, request.public_ipv4)
    certificate_ready = certificate.ensure_certificate(agent, public_ipv4)
    files = [entry for entry in bundle.manifest if entry.deploy]
    volume.ensure_state_volume(agent, [entry for entry in files if entry.group == "volume"])
    wanted = processes.Spec.loads(bundle.processes).for_droplet(not request.secondary)
    processes.check_calendars(agent, request.release_id, wanted)
    processes.record_role(agent, request.secondary)

    # Release.
    environment_changed = install_environment(agent, environment)
    directory = release.unpack(agent, request.release_id, bundle)
    release.check_config(agent, request.release_id, directory)
    live = agent.live_release()
    live_release = live.rsplit("/", 1)[-1] if live and live != directory else ""
    release.run_release_command(agent, directory, live_release, request.skip_release_command)
    checks.check_memory(agent, request.release_id, [process.unit for process in wanted.processes])

    # Publish.
    prepare_directories(agent)
    set_worker_connections(agent)
    applied = publish_files(agent, request.release_id, [e for e in files if e.group != "volume"], certificate_ready)
    agent.systemctl("enable", "--quiet", config.layout.socket_unit, config.layout.service_unit)
    agent.systemctl("start", config.layout.socket_unit)
    https = publish.serves_https(agent)
    restart = manifest.RESTART_APP in applied.notified or environment_changed
    if (
        live == directory
        and not restart
        and system.run(["systemctl", "is-active", "--quiet", config.layout.service_unit]).ok
        and publish.health(agent)
    ):
        agent.log(f"release {request.release_id} is already live and healthy; nothing to change")
        processes.install(agent, wanted, restart=False)
        finish.report_outcome(agent, request.release_id, https, wanted)
        return
    try:
        publish.activate(agent, directory, on_failure=lambda: manifest.revert(system, applied))
    finally:
        publish.end_drain(agent)

    # Finish.
    finish.prune(agent)
    agent.log(f"release {request.release_id} is live at {finish.public_url(agent, https)}")
    finish.report_outcome(agent, request.release_id, https, wanted)
    notify.deploy_live(agent, request.release_id, finish.public_url(agent, https))
