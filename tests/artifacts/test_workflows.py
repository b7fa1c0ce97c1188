"""The GitHub workflows: each Pulumi step a script of the project's, the actions at their Node 24 majors,
the CLI the tests run, timeouts that fit the suite; and the scripts they call, checked by shellcheck."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.artifacts.test_artifacts import run, tool
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.artifacts

WORKFLOWS = sorted((PROJECT_DIR / ".github/workflows").glob("*.yml"))
SETUP_ACTION = PROJECT_DIR / ".github/actions/pulumi/action.yml"
#: The first major of each action that runs on Node 24 (GitHub removes Node 20 from its runners in 2026).
NODE24_MAJORS = {"actions/checkout": 5, "actions/setup-python": 6, "pulumi/actions": 7}
#: What the test suite takes on a hosted runner, in minutes (40 to 45 measured), and the engine's first build.
SUITE_MINUTES = 45 + 5


def load(path: Path) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    return {("on" if key is True else key): value for key, value in loaded.items()}


def steps() -> list[dict[str, Any]]:
    found = [step for path in WORKFLOWS for job in load(path)["jobs"].values() for step in job.get("steps", [])]
    return found + load(SETUP_ACTION)["runs"]["steps"]


def test_every_step_that_runs_pulumi_is_a_script_of_the_project() -> None:
    runs = [str(step["run"]) for step in steps() if "run" in step]
    called = {" ".join(line.split()[:2]) for text in runs for line in text.splitlines() if line.startswith("scripts/")}

    assert not [line for text in runs for line in text.splitlines() if re.match(r"\s*(sudo\s+)?pulumi\b", line)]
    assert [step for step in steps() if str(step.get("uses", "")).startswith("pulumi/actions")] == [
        {"uses": "pulumi/actions@v7", "with": {"pulumi-version": engine_version()}}
    ]
    assert {
        "scripts/preview-comment --stack",
        "scripts/review-stack up",
        "scripts/review-stack down",
        "scripts/review-stack prune",
        "scripts/stack-up --stack",
        "scripts/drift-check --stack",
    } <= called
    for script in {line.split()[0] for line in called}:
        assert (PROJECT_DIR / script).stat().st_mode & 0o111, script


def engine_version() -> str:
    """The `pulumi` CLI the engine tests run (tests/tools/engine/cli/go.mod), without its `v`."""
    pinned = re.search(
        r"github.com/pulumi/pulumi/pkg/v3 v(\S+)", (PROJECT_DIR / "tests/tools/engine/cli/go.mod").read_text()
    )
    assert pinned is not None
    return pinned[1]


def test_every_action_is_pinned_to_a_node24_major() -> None:
    used = [str(step["uses"]) for step in steps() if "uses" in step and not str(step["uses"]).startswith("./")]

    assert used
    for uses in used:
        name, _, ref = uses.partition("@")
        major = re.fullmatch(r"v(\d+)", ref)
        assert major is not None, f"{uses}: pin a major tag (or a commit with its tag in a comment)"
        assert int(major[1]) >= NODE24_MAJORS[name], f"{uses}: runs on Node 20"


def test_every_job_has_a_timeout_and_the_suite_has_room() -> None:
    jobs = {f"{path.stem}.{name}": job for path in WORKFLOWS for name, job in load(path)["jobs"].items()}

    assert all("timeout-minutes" in job for job in jobs.values()), [
        n for n, j in jobs.items() if "timeout-minutes" not in j
    ]
    suite = [job for job in jobs.values() if any(".ci/run" in str(step.get("run")) for step in job["steps"])]
    assert len(suite) == 1
    assert suite[0]["timeout-minutes"] >= SUITE_MINUTES * 1.4


def test_production_updates_run_one_at_a_time() -> None:
    production = load(PROJECT_DIR / ".github/workflows/production.yml")

    assert production["concurrency"] == {"group": "pulumi-production", "cancel-in-progress": False}
    assert production["on"]["push"] == {"branches": ["main"]}


@pytest.mark.parametrize("script", ["pr-comment", "preview-comment", "review-stack", "stack-up", "drift-check"])
def test_the_workflows_scripts_are_shellcheck_clean(script: str) -> None:
    result = run([tool("shellcheck"), "--severity=style", "--shell=bash", str(PROJECT_DIR / "scripts" / script)])

    assert result.returncode == 0, result.stdout
