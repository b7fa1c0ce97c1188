"""The publish phase: the release as a candidate beside the live one, the switch, the balancer's rotation.

A release takes traffic only after it has answered its health check through nginx as a
candidate; until then the live one serves. Behind a Load Balancer, the switch happens
out of its rotation.
"""

from __future__ import annotations

from collections.abc import Callable

from agent import processes
from agent.config import HEALTH_TRIES
from agent.context import Agent
from agent.release import release_properties

LIVE = 0
"""`health`'s port for the site as it is served (HTTPS once nginx serves it, else port 80)."""


def serves_https(agent: Agent) -> bool:
    """Whether nginx serves the site over HTTPS now (its installed site listens on 443)."""
    site = agent.system.read_text(agent.config.layout.nginx_site) or ""
    return any(line.lstrip().startswith("listen 443") for line in site.splitlines())


def health(agent: Agent, port: int = LIVE) -> bool:
    """GET the health path through nginx: on a port of its own (the candidate's, the balancer's check),
    or as the live site is served."""
    config = agent.config
    curl = ["curl", "--silent", "--fail", "--max-time", "5"]
    if port == LIVE and serves_https(agent):
        # The app through nginx's HTTPS site on this machine; the certificate is certbot's business, not this check's.
        host = config.health_host
        command = [*curl, "--insecure", "--resolve", f"{host}:443:127.0.0.1", f"https://{host}{config.health_path}"]
    else:
        url = f"http://127.0.0.1:{port or 80}{config.health_path}"
        command = [*curl, "-H", f"Host: {config.health_host}", url]
    return agent.system.run(command).ok


def wait_healthy(agent: Agent, port: int = LIVE) -> bool:
    for _ in range(HEALTH_TRIES):
        if health(agent, port):
            return True
        agent.system.sleep(1)
    return False


def stop_candidate(agent: Agent) -> None:
    units = [f"{agent.config.layout.candidate_unit}.socket", f"{agent.config.layout.candidate_unit}.service"]
    agent.system.run(["systemctl", "stop", *units])
    agent.system.run(["systemctl", "reset-failed", *units])


def start_candidate(agent: Agent, directory: str) -> bool:
    """The release's Gunicorn on a socket of its own, as the app's user, with the live environment,
    reached through nginx on a loopback-only port."""
    config = agent.config
    command = [
        "systemd-run",
        "--quiet",
        "--collect",
        f"--unit={config.layout.candidate_unit}",
        f"--socket-property=ListenStream={config.layout.candidate_socket_path}",
        "--socket-property=SocketUser=www-data",
        "--socket-property=SocketMode=0600",
        *release_properties(agent, directory),
        f"{directory}/app/.venv/bin/gunicorn",
        "--workers",
        "1",
        config.wsgi_target,
    ]
    return agent.system.run(command, output="stderr").ok


def leave_rotation(agent: Agent) -> None:
    """Behind a balancer: its health check fails here, and the deploy waits until it has seen that."""
    config = agent.config
    if not config.behind_balancer:
        return
    agent.system.write_file(config.layout.balancer_drain, "")
    agent.log(f"out of the balancer's rotation: waiting {config.out_of_rotation_seconds} s for its checks to notice")
    agent.system.sleep(config.out_of_rotation_seconds)


def rejoin_rotation(agent: Agent) -> None:
    """The balancer's health check answers again (from the app); the deploy waits until it has seen that."""
    config, system = agent.config, agent.system
    if not config.behind_balancer or not system.exists(config.layout.balancer_drain):
        return
    system.remove(config.layout.balancer_drain)
    if not health(agent, config.balancer_port):
        agent.log(
            f"the balancer's check on port {config.balancer_port} does not answer 2xx "
            f"(curl -i http://127.0.0.1:{config.balancer_port}{config.health_path})"
        )
    agent.log(f"back in the balancer's rotation: waiting {config.into_rotation_seconds} s for its checks to notice")
    system.sleep(config.into_rotation_seconds)


def end_drain(agent: Agent) -> None:
    """However the deploy ends, the drain ends with it: then the app's own health decides the check."""
    if agent.config.behind_balancer:
        agent.system.remove(agent.config.layout.balancer_drain)


def go_live(agent: Agent, directory: str) -> None:
    """`current` points at the release (atomically), and the service restarts on it."""
    config = agent.config
    agent.system.symlink(directory, config.layout.current)
    agent.systemctl("restart", config.layout.service_unit)
    # nginx's cache holds the release before's answers; the restart waited for its last one.
    agent.system.run(["find", config.layout.proxy_cache, "-type", "f", "-delete"])


def activate(agent: Agent, directory: str, on_failure: Callable[[], None] = lambda: None) -> None:
    """Check the release as a candidate, then switch the live service to it.

    `on_failure` runs before the deploy stops with the release not live (the files this
    deploy changed put back, say), while the release before it still serves or serves again.
    """
    config, system = agent.config, agent.system
    release = directory.rsplit("/", 1)[-1]
    live_before = agent.live_release()
    stop_candidate(agent)
    agent.log(f"starting release {release} as a candidate")
    if not (start_candidate(agent, directory) and wait_healthy(agent, config.layout.candidate_port)):
        system.run(
            ["journalctl", "-u", f"{config.layout.candidate_unit}.service", "-n", "30", "--no-pager"], output="stderr"
        )
        stop_candidate(agent)
        on_failure()
        still = f"{live_before.rsplit('/', 1)[-1]} is still live" if live_before else ""
        agent.fail(f"release {release}: GET {config.health_path} did not answer 2xx within {HEALTH_TRIES} s; {still}")
    # Its processes, started beside the live ones only now that it has passed every other check.
    spec = processes.read(agent, directory)
    failure = processes.start_candidates(agent, directory, spec)
    if failure:
        stop_candidate(agent)
        on_failure()
        still = f"; {live_before.rsplit('/', 1)[-1]} is still live, its processes too" if live_before else ""
        agent.fail(failure + still)
    # systemd holds the live socket open while Gunicorn restarts: requests wait, none fail. Behind a
    # balancer, the droplet leaves its rotation first, so that the restart's wait falls on no visitor.
    if live_before:
        leave_rotation(agent)
    agent.log(f"switching to release {release}")
    if live_before and live_before != directory:
        system.write_file(config.layout.previous, live_before + "\n")
    go_live(agent, directory)
    if not wait_healthy(agent):
        rolled_back = False
        if live_before and live_before != directory and system.is_dir(live_before):
            agent.log(f"release {release} is unhealthy once live; switching back to {live_before.rsplit('/', 1)[-1]}")
            on_failure()
            go_live(agent, live_before)
            rolled_back = True
            if wait_healthy(agent):
                rejoin_rotation(agent)
        stop_candidate(agent)
        agent.fail(
            f"release {release}: GET {config.health_path} through nginx did not answer 2xx "
            f"within {HEALTH_TRIES} s once live",
            rolled_back,
        )
    stop_candidate(agent)
    processes.install(agent, spec, restart=True)
    rejoin_rotation(agent)
