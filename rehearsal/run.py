"""The rehearsal's jobs: `up` (boot, cloud-init, deploy), `deploy` (again, to the running machine), `down`.

With `instances` above 1, each job does what it does on every machine, one at a
time, behind the rehearsal's balancer; with `database` postgres, the app's
DATABASE_URL names the rehearsal's PostgreSQL (see `rehearsal.fleet`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.cloudinit import render_user_data
from core.droplets import members
from core.layout import DEPLOY_USER
from core.plan import (
    CLOUD_INIT_TIMEOUT_SECONDS,
    DeployPlan,
    parse_deploy_output,
    rollback_command,
    rollout_plans,
    run_command,
)
from core.settings import DATABASE_URL, Settings, SettingsError, parse_settings
from rehearsal import acme, fleet, nspawn, offsite
from rehearsal.deploy import DeployError, SshTarget, run_plan

PROJECT_DIR = Path(__file__).resolve().parent.parent
NAMESPACE = "flask-droplet:"


def progress(message: str) -> None:
    print(f"rehearse: {message}", file=sys.stderr, flush=True)


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - start, 1)

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())


def stack_config(stack: str) -> dict[str, Any]:
    """Plain values of `Pulumi.<stack>.yaml` in this project's namespace; encrypted ones are left out."""
    path = PROJECT_DIR / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise SettingsError([f"stack file {path.name} does not exist (the rehearsal reads the stack's settings)"])
    config = yaml.safe_load(path.read_text()).get("config") or {}
    return {
        key.removeprefix(NAMESPACE): value
        for key, value in config.items()
        if key.startswith(NAMESPACE) and not (isinstance(value, dict) and "secure" in value)
    }


def machine_secret() -> str:
    """A random secret for the app, kept (mode 0600) for as long as the machine, so redeploys match."""
    return nspawn.kept_secret("app-secret")


def rehearsal_settings(stack: str, overrides: Mapping[str, Any], public_key: str) -> Settings:
    """The stack's settings, as the droplet would get them, but for the rehearsal's key, network and CA.

    The stack's secrets are encrypted for Pulumi; the rehearsal gives the app a
    fresh random SECRET_KEY instead, unless `overrides` sets appEnv. Certificates
    come from Pebble on the host instead of the stack's ACME server.
    """
    raw = {"appEnv": {"SECRET_KEY": machine_secret()}, **stack_config(stack), **overrides}
    # A stack made for the rehearsal alone needs neither a key nor an admin network of its own.
    raw.setdefault("adminCidrs", [f"{nspawn.HOST_ADDRESS}/32"])
    if not raw.get("sshPublicKeys") and not raw.get("sshKeyFingerprints"):
        raw["sshPublicKeys"] = [public_key]
    settings = parse_settings(raw, PROJECT_DIR, stack)
    if settings.server.instances > nspawn.MAX_MACHINES:
        raise nspawn.RehearsalError(
            f"instances = {settings.server.instances}: the rehearsal boots at most {nspawn.MAX_MACHINES} machines on "
            "this host"
        )
    # The machine's own key reaches it (the stack's keys are for droplets); keys given with --set join it.
    extra_keys = settings.server.ssh_public_keys if "sshPublicKeys" in overrides else ()
    server = dataclasses.replace(
        settings.server,
        ssh_public_keys=tuple(dict.fromkeys((public_key, *extra_keys))),
        ssh_key_fingerprints=(),
        # Several machines reach the host from several addresses: all of them are the admin's.
        admin_cidrs=(f"{nspawn.HOST_ADDRESS}/32",) if settings.server.instances == 1 else (nspawn.MACHINES_NETWORK,),
    )
    # An ACME server named by --set is taken as it is (to try one that fails, say).
    acme_server = settings.app.site.acme_server if "acmeServer" in overrides else acme.DIRECTORY_URL
    site = dataclasses.replace(settings.app.site, acme_server=acme_server)
    return dataclasses.replace(settings, server=server, app=dataclasses.replace(settings.app, site=site))


def ssh_target(machine: nspawn.Machine) -> SshTarget:
    return SshTarget(
        host=machine.address, user=DEPLOY_USER, private_key=machine.private_key, known_hosts=machine.known_hosts
    )


def running_machine() -> nspawn.Machine:
    machine = nspawn.Machine()
    if not machine.is_up():
        raise nspawn.RehearsalError("no rehearsal machine is up; run scripts/rehearse first")
    return machine


def running_machines() -> list[nspawn.Machine]:
    """Every machine that is up, the first first: the one droplet, or each droplet behind the balancer."""
    machines = [nspawn.Machine(slot) for slot in nspawn.machines_up()]
    if not machines or not all(machine.is_up() for machine in machines):
        raise nspawn.RehearsalError("no rehearsal machine is up (or one has stopped); run scripts/rehearse first")
    return machines


def database_env(settings: Settings) -> dict[str, str]:
    """With database postgres, DATABASE_URL: the rehearsal's PostgreSQL, as the cluster's would be."""
    return {DATABASE_URL: fleet.database_url(settings.app.name)} if settings.server.database == "postgres" else {}


def deploy(machine: nspawn.Machine, settings: Settings, plan: DeployPlan) -> tuple[str, dict[str, str]]:
    """Run `plan` on the machine; returns the release id and the steps that ran, with their output."""
    target = ssh_target(machine)
    state = machine.slot.directory / "deploy-state.json"
    env, bucket = database_env(settings), offsite.bucket_for(settings)
    ran = run_plan(plan, target, machine.instance_id, state, progress, machine.address, env, bucket)
    return plan.release_id, ran


def roll_out(machines: list[nspawn.Machine], settings: Settings) -> tuple[str, dict[str, str]]:
    """Deploy to each machine in turn, as the chained deploys of `pulumi up` do; the first failure stops it.

    The first machine runs the release command; the others leave it to the first. Returns the
    release id and the steps that ran on the first machine, with their output.
    """
    release_id, first = "", dict[str, str]()
    plans = rollout_plans(settings, nspawn.STATE_DIR / "build")
    for index, (machine, plan) in enumerate(zip(machines, plans, strict=True)):
        if len(machines) > 1:
            progress(f"{machine.slot.name} ({index + 1} of {len(machines)}): deploying")
        release_id, ran = deploy(machine, settings, plan)
        first = first if index else ran
    return release_id, first


def volume_of(settings: Settings) -> nspawn.Volume | None:
    return (
        nspawn.Volume(settings.server.volume_name, settings.server.volume_size) if settings.server.volume_name else None
    )


def boot_all(
    stack: str,
    overrides: Mapping[str, Any],
    timings: Timings,
    vendor_data: str | None = None,
    replace: bool = False,
) -> tuple[list[nspawn.Machine], Settings]:
    """Boot a fresh machine for every droplet of the stack (`instances`), all with the stack's user-data (and
    `vendor_data`, as a cloud adds its own), and their database.

    Machines left from before go first, with their key and secret: this run makes its own. With
    `replace`, the Volume, the app's secret and the SSH key (the stack's config) stay for the new ones.
    """
    down_all(keep_volumes=replace)
    first = nspawn.Machine()
    settings = rehearsal_settings(stack, overrides, first.public_key())
    if replace and settings.server.instances > 1:
        raise nspawn.RehearsalError(
            "replace moves one droplet's Volume to a new droplet; droplets behind a balancer have none"
        )
    # A machine for each droplet, in the slot of its place in the rollout: the first's is the one made above.
    machines = [first if member.first else nspawn.Machine(nspawn.Slot(member.index)) for member in members(settings)]
    with timings.step("build"):
        image = nspawn.build_image(progress)
    with timings.step("boot"):
        if settings.server.database == "postgres":
            fleet.start_database(settings.app.name, [machine.address for machine in machines], progress)
        for machine in machines:
            machine.up(
                image,
                # The same user-data for every droplet of the stack, but for the host keys made for each.
                render_user_data(settings, machine.new_host_keys()),
                progress,
                trusted_ca=acme.api_certificate() if settings.server_tls else None,
                hosts=dict.fromkeys(settings.app.site.host_names, machine.address),
                vendor_data=vendor_data,
                size=nspawn.droplet_size(settings.server.size),
                volume=volume_of(settings),
            )
        if settings.server_tls:
            acme.start(first, progress)
    return machines, settings


def up(stack: str, overrides: Mapping[str, Any], replace: bool = False) -> tuple[str, str, Timings]:
    """Boot a fresh machine with the stack's user-data and deploy the app; returns its URL and release.

    `replace` does what a droplet's replacement does: the new machine gets the old one's Volume.
    """
    if replace:
        running_machine()
    timings = Timings()
    machines, settings = boot_all(stack, overrides, timings, replace=replace)
    with timings.step("cloud-init"):
        # The machines boot together; each is waited for in turn.
        for machine in machines:
            result = machine.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_SECONDS, progress)
            if not result.ok or result.recoverable_errors:
                raise nspawn.RehearsalError(
                    f"cloud-init reported problems on {machine.slot.name}:\n"
                    + json.dumps({"errors": result.errors, "recoverable_errors": result.recoverable_errors}, indent=2)
                    + "\n--- /var/log/cloud-init-output.log (end)\n"
                    + machine.cloud_init_output()
                    + "\n--- the machine's units\n"
                    + machine.failed_units_report()
                )
    with timings.step("deploy"):
        release_id, ran = roll_out(machines, settings)
    report = parse_deploy_output(ran["deploy"])
    url = report.url
    if settings.server.behind_balancer:
        servers = {machine.slot.name: machine.address for machine in machines}
        url = fleet.start_balancer(servers, settings, progress)
    progress(f"release {release_id} is live at {url}")
    for warning in report.warnings:
        progress(f"warning: {warning}")
    if url.startswith("https:") and settings.server.behind_balancer:
        resolve = f"--resolve {settings.app.site.domain}:{fleet.BALANCER_TLS_PORT}:{fleet.BALANCER_ADDRESS}"
        trust = (
            "--cacert YOUR-CA.pem"
            if settings.app.site.balancer_certificate
            else f"--cacert {fleet.BALANCER_DIR / 'site.crt'}"
        )
        progress(f"the balancer holds its certificate: curl {resolve} {trust} {url}")
    elif url.startswith("https:"):
        progress(f"its certificate comes from Pebble: curl --cacert {acme.PEBBLE_DIR / 'roots.pem'} {url}")
    return url, release_id, timings


def redeploy(stack: str, overrides: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Deploy the app as it is now to the running machine, like a second `pulumi up`.

    Returns the release id and the steps that ran (nothing, if nothing changed), with their output.
    """
    machines = running_machines()
    machine = machines[0]
    settings = rehearsal_settings(stack, overrides, machine.public_key())
    if settings.server.instances != len(machines):
        raise nspawn.RehearsalError(
            f"instances = {settings.server.instances}, but {len(machines)} machine(s) are up: "
            "scripts/rehearse up boots the stack's machines afresh"
        )
    volume = volume_of(settings)
    # A larger volumeSize grows the Volume before the deploy, as `pulumi up` resizes it first.
    if volume is not None and machine.grow_volume(volume):
        progress(f"deploy: the Volume {volume.name} is {volume.gib} GiB now")
    return roll_out(machines, settings)


def down_all(keep_volumes: bool = False) -> None:
    """Remove every machine, the balancer and the database; the first machine, which holds what they share, last."""
    fleet.down(progress)
    for slot in reversed(nspawn.machines_up()):
        nspawn.Machine(slot).down(progress, keep_volumes=keep_volumes)
    nspawn.Machine().down(progress, keep_volumes=keep_volumes)


def down() -> None:
    down_all()


def rollback(stack: str, overrides: Mapping[str, Any], release_id: str | None = None) -> str:
    """Switch each running machine in turn back to the previous release (or `release_id`); returns the live release."""
    machines = running_machines()
    settings = rehearsal_settings(stack, overrides, machines[0].public_key())
    live = ""
    for machine in machines:
        result = ssh_target(machine).ssh(rollback_command(settings, release_id))
        if result.returncode != 0:
            raise DeployError(f"rollback failed on {machine.slot.name}:\n{result.stderr.strip()}")
        live = result.stdout.strip().splitlines()[-1]
    return live


def run_once(stack: str, overrides: Mapping[str, Any], argv: list[str]) -> int:
    """Run a one-off command in the live release on the running machine; its output and exit code pass through."""
    return on_server(stack, overrides, lambda settings: run_command(settings, argv))


def on_server(stack: str, overrides: Mapping[str, Any], command_for: Callable[[Settings], str]) -> int:
    """An admin's command over SSH on the running machine (`logs_command`, say); output and exit code pass through."""
    machine = running_machine()
    settings = rehearsal_settings(stack, overrides, machine.public_key())
    return ssh_target(machine).stream(command_for(settings))
