"""The app's processes (workers) and scheduled jobs, released with the app.

Each release holds `server/processes.json` (rendered by `core/render.py`): its
processes and jobs, and the text of their units. A release's processes first run as
candidates, from its own directory, beside the live ones; one that exits within
`PROCESS_SETTLE_SECONDS` stops the deploy before the switch. Once the release is live, its
units are installed (those of processes and jobs it no longer has stopped and removed)
and its processes restarted on it. A rollback does the same with the release it returns to.

With several droplets, the first runs every process and every job; the others run the
processes not marked `droplets: first`, and no jobs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from agent import strict
from agent.config import PROCESS_SETTLE_SECONDS
from agent.context import Agent
from agent.inputs import Process, Schedule
from agent.release import release_properties

UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Spec:
    processes: tuple[Process, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    units: dict[str, str] = field(default_factory=dict)
    """Unit file name: its text."""

    @classmethod
    def loads(cls, text: str | None) -> Spec:
        """A release's `processes.json`; none for a release made before it existed."""
        if not text:
            return cls()
        data: dict[str, Any] = json.loads(text)
        return cls(
            processes=tuple(_process(item) for item in data.get("processes", [])),
            schedules=tuple(_schedule(item) for item in data.get("schedules", [])),
            units={str(name): str(text) for name, text in data.get("units", {}).items()},
        )

    def for_droplet(self, first: bool) -> Spec:
        """What this droplet runs: everything on the first; elsewhere the processes of every droplet, no jobs."""
        if first:
            return self
        processes = tuple(process for process in self.processes if not process.first_only)
        names = {process.unit for process in processes}
        return Spec(processes, (), {name: text for name, text in self.units.items() if name in names})

    @property
    def timers(self) -> list[str]:
        return [f"{schedule.unit}.timer" for schedule in self.schedules]


def _defaults(cls: type[Process] | type[Schedule]) -> dict[str, object]:
    return {item.name: item.default for item in dataclasses.fields(cls) if item.default is not dataclasses.MISSING}


def _process(item: dict[str, Any]) -> Process:
    """A process of `processes.json`; one of a release made before `droplets` (with `first_only`, or neither,
    and the defaults left out) read as today's."""
    if "droplets" not in item:
        first_only = item.get("first_only", False)
        rest = {key: value for key, value in item.items() if key != "first_only"}
        item = {**_defaults(Process), **rest, "droplets": "first" if first_only else "all"}
    return strict.read(Process, item, "a process")


def _schedule(item: dict[str, Any]) -> Schedule:
    """A job of `processes.json`; one of a release made before `when` read as today's."""
    if "when" not in item:
        item = {**_defaults(Schedule), **item, "when": " ".join(item.get("calendar", []))}
    return strict.read(Schedule, item, "a scheduled job")


def read(agent: Agent, directory: str) -> Spec:
    """The processes and jobs of the release in `directory`, as this droplet runs them."""
    return Spec.loads(agent.system.read_text(f"{directory}/server/processes.json")).for_droplet(is_first(agent))


# The droplet's place in its fleet


def role_file(agent: Agent) -> str:
    return agent.config.layout.role_file


def is_first(agent: Agent) -> bool:
    """Whether this droplet runs the jobs (alone, or the fleet's first); the last deploy said."""
    return (agent.system.read_text(role_file(agent)) or "").strip() != "secondary"


def record_role(agent: Agent, secondary: bool) -> None:
    agent.system.make_dirs(agent.config.layout.root)
    agent.system.write_file(role_file(agent), "secondary\n" if secondary else "first\n")


# Checks


def check_calendars(agent: Agent, release_id: str, spec: Spec) -> None:
    """Each job's times, read by the systemd that will run them, before anything changes."""
    for schedule in spec.schedules:
        checked = agent.system.run(["systemd-analyze", "calendar", "--iterations=1", *schedule.calendar])
        if not checked.ok:
            said = " ".join((checked.stderr or checked.stdout).split())
            agent.fail(
                f"release {release_id}: the job {schedule.name}'s time {' | '.join(schedule.calendar)} is refused by "
                f"this server's systemd ({said}); nothing has changed"
            )


def installed_units(agent: Agent) -> list[str]:
    """The app's process and job units installed now, by file name."""
    prefixes = (f"{agent.config.app_name}-process-", f"{agent.config.app_name}-schedule-")
    return [name for name in agent.system.listdir(UNIT_DIR) if name.startswith(prefixes)]


def installed_processes(agent: Agent) -> list[str]:
    return [name for name in installed_units(agent) if name.startswith(f"{agent.config.app_name}-process-")]


def installed_timers(agent: Agent) -> list[str]:
    return [name for name in installed_units(agent) if name.endswith(".timer")]


# Candidates


def candidate_unit(agent: Agent, process: Process) -> str:
    return f"{agent.config.app_name}-candidate-{process.name}.service"


def stop_candidates(agent: Agent, spec: Spec) -> None:
    units = [candidate_unit(agent, process) for process in spec.processes]
    if units:
        agent.system.run(["systemctl", "stop", *units])
        agent.system.run(["systemctl", "reset-failed", *units])


def start_candidates(agent: Agent, directory: str, spec: Spec) -> str:
    """Each process of the release in `directory` started beside the live ones, and watched for
    `PROCESS_SETTLE_SECONDS`; "" when all still run, else what failed. They are stopped either way."""
    if not spec.processes:
        return ""
    system = agent.system
    release = directory.rsplit("/", 1)[-1]
    stop_candidates(agent, spec)
    dead = ""
    for process in spec.processes:
        agent.log(f"starting the process {process.name} of release {release} as a candidate: {process.command}")
        command = [
            "systemd-run",
            "--quiet",
            "--collect",
            f"--unit={candidate_unit(agent, process)}",
            "--property=Type=exec",
            f"--property=KillSignal={process.stop_signal}",
            "--property=KillMode=mixed",
            f"--property=TimeoutStopSec={process.stop_timeout}",
            *release_properties(agent, directory),
            "/bin/sh",
            "-c",
            f"exec {process.command}",
        ]
        if not system.run(command, output="stderr").ok:
            dead = process.name
            break
    for _ in range(PROCESS_SETTLE_SECONDS if not dead else 0):
        system.sleep(1)
        dead = next(
            (
                process.name
                for process in spec.processes
                if not system.run(["systemctl", "is-active", "--quiet", candidate_unit(agent, process)]).ok
            ),
            "",
        )
        if dead:
            break
    failure = ""
    if dead:
        process = next(process for process in spec.processes if process.name == dead)
        unit = candidate_unit(agent, process)
        system.run(["journalctl", "-u", unit, "-n", "30", "--no-pager"], output="stderr")
        failure = (
            f"release {release}: the process {dead} ({process.command}) exited within {PROCESS_SETTLE_SECONDS} s "
            f"of its start (its journal above: journalctl -u {unit})"
        )
    else:
        agent.log(f"the processes of release {release} run; stopping their candidates")
    stop_candidates(agent, spec)
    return failure


# The live units


def install(agent: Agent, spec: Spec, restart: bool) -> None:
    """The units of `spec` in place, those of processes and jobs it lacks stopped and removed, its processes
    and timers running; `restart` restarts every process (on the release now live), else only the changed."""
    system = agent.system
    wanted = set(spec.units)
    gone = [name for name in installed_units(agent) if name not in wanted]
    # A job's timer stops before its service goes; a process stops (within its stop timeout) before its unit.
    for name in sorted(gone, key=lambda unit: not unit.endswith(".timer")):
        agent.log(f"stopping and removing {name}: the release has no such process or job")
        system.run(["systemctl", "disable", "--quiet", "--now", name], output="stderr")
        system.remove(f"{UNIT_DIR}/{name}")
    changed = set()
    for name in sorted(spec.units):
        path = f"{UNIT_DIR}/{name}"
        if system.read_text(path) != spec.units[name]:
            system.write_file(path, spec.units[name])
            changed.add(name)
    if gone or changed:
        system.run(["systemctl", "daemon-reload"], output="stderr")
    if gone:
        system.run(["systemctl", "reset-failed", *gone])
    for process in spec.processes:
        agent.systemctl("enable", "--quiet", process.unit)
        verb = "restart" if restart or process.unit in changed else "start"
        agent.log(f"{verb}ing the process {process.name}")
        agent.systemctl(verb, process.unit)
    for timer in spec.timers:
        agent.systemctl("enable", "--quiet", timer)
        agent.systemctl("restart" if timer in changed else "start", timer)


def stop_all(agent: Agent) -> list[str]:
    """The app's timers and processes stopped (a restore, say); what was stopped, for `start_all`."""
    units = [*installed_timers(agent), *installed_processes(agent)]
    if units:
        agent.systemctl("stop", *units)
    return units


def start_all(agent: Agent, units: list[str]) -> None:
    if units:
        agent.systemctl("start", *units)


def summary(agent: Agent, spec: Spec) -> list[str]:
    """A line for each process (its state) and each job (its next run): what the deploy's output lists."""
    system, lines = agent.system, []
    for process in spec.processes:
        state = system.run(["systemctl", "is-active", process.unit]).stdout.strip() or "unknown"
        lines.append(f"process: {process.name} {state} ({process.unit}: {process.command})")
    for schedule in spec.schedules:
        timer = f"{schedule.unit}.timer"
        shown = system.run(["systemctl", "show", "-p", "NextElapseUSecRealtime", "--value", timer]).stdout.strip()
        lines.append(f"schedule: {schedule.name} next {shown or 'unknown'} ({timer}: {schedule.command})")
    return lines
