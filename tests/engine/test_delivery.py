"""The workflows' steps (scripts/preview-comment, review-stack, stack-up, drift-check) under the real engine.

No provider can run here, so the stack is tests/engine/shop: a droplet, its Volume and a release as dynamic
resources kept as files in a directory that stands in for the cloud. Each step runs as the workflow runs it,
in a checkout that holds only what the repository does (no review stack's file), against one file backend.
What is left to the workflow is what talks to GitHub: posting the comment's file, listing open pull requests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import PASSPHRASE, Workspace, engine_env
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.engine

SHOP = Path(__file__).parent / "shop"
#: The secret the production stack holds, which review stacks take and no comment may show.
APP_ENV = '{"SECRET_KEY":"shop-secret-3f9a"}'
#: The longest a step may take here (each runs the CLI a few times on a program of seconds).
STEP_TIMEOUT_SECONDS = 240


@dataclass
class Repository:
    """A checkout of tests/engine/shop, its file backend and the directory that stands in for the cloud."""

    space: Workspace
    world: Path
    backend: Path

    @property
    def project(self) -> Path:
        return self.space.project

    def step(self, script: str, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """scripts/SCRIPT ARGS, as the workflow runs it, in this checkout."""
        return subprocess.run(
            [str(PROJECT_DIR / "scripts" / script), *args, "--cwd", str(self.project)],
            env={**self.space.env, **(extra or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=STEP_TIMEOUT_SECONDS,
        )

    def fresh_checkout(self) -> None:
        """What a workflow's checkout holds: the repository's files, no review stack's file."""
        for stack_file in self.project.glob("Pulumi.pr-*.yaml"):
            stack_file.unlink()

    def resources(self) -> list[dict[str, object]]:
        """What the cloud holds: each resource's properties."""
        return [json.loads(path.read_text()) for path in sorted(self.world.glob("*.json"))]

    def tagged(self, stack: str) -> list[dict[str, object]]:
        return [resource for resource in self.resources() if resource.get("tag") == f"shop:{stack}"]

    def stacks(self) -> list[str]:
        return [entry["name"] for entry in json.loads(self.space.ok("stack", "ls", "--json"))]


@pytest.fixture
def repository(engine_bin: Path, tmp_path: Path) -> Repository:
    """The shop's checkout with its production stack up (the review stacks take its config)."""
    (tmp_path / "home").mkdir()
    (tmp_path / "world").mkdir()
    project = tmp_path / "shop"
    shutil.copytree(SHOP, project)
    (project / ".venv").symlink_to(PROJECT_DIR / ".venv")
    env = engine_env(engine_bin, tmp_path, {"SHOP_WORLD": str(tmp_path / "world")})
    repo = Repository(Workspace(project, env), tmp_path / "world", tmp_path / "backend")
    repo.space.ok("stack", "init", "production")
    repo.space.ok("config", "set", "--secret", "appEnv", APP_ENV)
    merged = repo.step("stack-up", "--stack", "production")
    assert merged.returncode == 0, merged.stderr
    return repo


def droplet(resources: list[dict[str, object]]) -> dict[str, object]:
    [found] = [resource for resource in resources if "size" in resource]
    return found


def release(resources: list[dict[str, object]]) -> dict[str, object]:
    [found] = [resource for resource in resources if "release" in resource]
    return found


def test_a_pull_requests_review_stack_comes_up_updates_and_leaves_nothing(repository: Repository) -> None:
    comment = repository.project.parent / "review.md"

    labelled = repository.step("review-stack", "up", "7", "--comment", str(comment))

    assert labelled.returncode == 0, labelled.stderr
    url = labelled.stdout.strip()
    assert url.startswith("https://") and url.endswith(".droplets.test")
    assert comment.read_text().startswith(f"Review stack `pr-7` is up at {url}\n")
    assert f"- `url`: `{url}`" in comment.read_text()
    assert "alerts" not in comment.read_text()
    assert "pr-7" in repository.stacks()
    # The template's values over production's: the smallest size, no protection, no alerts; its secret kept.
    first = repository.tagged("pr-7")
    assert droplet(first)["size"] == "s-1vcpu-512mb-10gb"
    assert repository.space.ok("config", "get", "production", "--stack", "pr-7").strip() == "false"
    assert repository.space.ok("config", "get", "appEnv", "--stack", "pr-7").strip() == APP_ENV
    assert APP_ENV not in comment.read_text() and "shop-secret" not in labelled.stdout + labelled.stderr
    assert len(repository.tagged("production")) == 3

    # A push: a new release of the app, in a new checkout of the branch.
    repository.fresh_checkout()
    project_file = repository.project / "Pulumi.yaml"
    project_file.write_text(project_file.read_text().replace('default: "1"', 'default: "2"'))
    pushed = repository.step("review-stack", "up", "7", "--comment", str(comment))

    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == url
    second = repository.tagged("pr-7")
    assert release(second)["release"] == "2"
    assert droplet(second) == droplet(first)  # updated in place, the same droplet
    assert comment.read_text().startswith(f"Review stack `pr-7` is up at {url}\n")

    repository.fresh_checkout()
    closed = repository.step("review-stack", "down", "7", "--comment", str(comment))

    assert closed.returncode == 0, closed.stderr
    assert comment.read_text().startswith("Review stack `pr-7` was destroyed and removed from the backend.")
    assert repository.tagged("pr-7") == []
    assert "pr-7" not in repository.stacks()
    assert not (repository.backend / ".pulumi/stacks/shop/pr-7.json").exists()
    assert not (repository.project / "Pulumi.pr-7.yaml").exists()
    # Production is untouched by all of it.
    assert len(repository.tagged("production")) == 3
    assert droplet(repository.tagged("production"))["size"] == "s-2vcpu-4gb"

    again = repository.step("review-stack", "down", "7")
    assert again.returncode == 0, again.stderr
    assert "nothing to remove" in again.stdout


def test_the_nightly_prune_removes_the_review_stacks_of_closed_pull_requests(repository: Repository) -> None:
    for number in ("3", "4"):
        assert repository.step("review-stack", "up", number).returncode == 0
    open_list = repository.project.parent / "open-prs.txt"
    open_list.write_text("4\n11\n")
    repository.fresh_checkout()

    pruned = repository.step("review-stack", "prune", "--open", str(open_list))

    assert pruned.returncode == 0, pruned.stderr
    assert sorted(repository.stacks()) == ["pr-4", "production"]
    assert repository.tagged("pr-3") == []
    assert len(repository.tagged("pr-4")) == 3


def test_the_merge_updates_production_and_reports_its_outputs(repository: Repository) -> None:
    repository.space.ok("config", "set", "release", "5", "--stack", "production")
    summary = repository.project.parent / "summary.md"
    summary.write_text("before\n")

    merged = repository.step("stack-up", "--stack", "production", "--summary", str(summary))

    assert merged.returncode == 0, merged.stderr
    assert release(repository.tagged("production"))["release"] == "5"
    url = repository.space.ok("stack", "output", "url", "--stack", "production").strip()
    text = summary.read_text()
    assert text.startswith("before\n## `pulumi up` of `production`\n")
    assert f"- `url`: `{url}`" in text
    assert '- `alerts`: `["ops@example.org"]`' in text


def test_two_production_ups_started_together_both_finish_one_after_the_other(repository: Repository) -> None:
    repository.space.ok("config", "set", "release", "6", "--stack", "production")
    locks = repository.backend / ".pulumi/locks"
    command = [str(PROJECT_DIR / "scripts/stack-up"), "--stack", "production", "--cwd", str(repository.project)]
    env = {**repository.space.env, "SHOP_DELAY": "4"}

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(locks.rglob("*.json")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert any(locks.rglob("*.json")), "the first update never took the stack's lock"
    second = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=240)
    _, first_err = first.communicate(timeout=240)

    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    assert "Another update holds the stack production: waiting for it to finish." in second.stderr
    assert "waiting" not in first_err
    assert release(repository.tagged("production"))["release"] == "6"


def test_a_change_made_outside_pulumi_fails_the_drift_check(repository: Repository) -> None:
    summary = repository.project.parent / "summary.md"
    quiet = repository.step("drift-check", "--stack", "production", "--summary", str(summary))
    assert quiet.returncode == 0, quiet.stderr
    assert "no drift" in summary.read_text()

    # A resize in the control panel: the droplet's file in the cloud says another size.
    [path] = [path for path in repository.world.glob("*.json") if '"size": "s-2vcpu-4gb"' in path.read_text()]
    path.write_text(path.read_text().replace("s-2vcpu-4gb", "s-8vcpu-16gb"))
    summary.write_text("")

    drifted = repository.step("drift-check", "--stack", "production", "--summary", str(summary))

    assert drifted.returncode == 1, drifted.stdout
    assert "production: drift" in drifted.stderr
    text = summary.read_text()
    assert text.startswith("## `production`: drift\n")
    assert 'size: "s-8vcpu-16gb" => "s-2vcpu-4gb"' in text
    # Nothing was changed by the check: the cloud still holds the hand-made size.
    assert droplet(repository.tagged("production"))["size"] == "s-8vcpu-16gb"


def test_the_preview_comment_of_a_redeploy_passes(repository: Repository) -> None:
    repository.space.ok("config", "set", "release", "2", "--stack", "production")
    comment = repository.project.parent / "preview.md"

    previewed = repository.step("preview-comment", "--stack", "production", "--comment", str(comment))

    assert previewed.returncode == 0, previewed.stderr
    lines = comment.read_text().splitlines()
    assert lines[0] == "**`production`: no droplet or Volume would be replaced or deleted** (1 to update)."
    assert previewed.stdout.strip() == lines[0]
    assert "<!-- flask-droplet:preview:production -->" in lines
    assert '      release: "1" => "2"' in lines
    assert "! ~  pulumi-python:dynamic:Release release (update)" in lines
    assert not any("Droplet" in line for line in lines)
    assert "shop-secret" not in comment.read_text()
    assert release(repository.tagged("production"))["release"] == "1"  # a preview changes nothing


def test_the_preview_comment_names_a_replaced_droplet_and_fails_for_production(repository: Repository) -> None:
    repository.space.ok("config", "set", "image", "170000001", "--stack", "production")
    comment = repository.project.parent / "preview.md"

    previewed = repository.step("preview-comment", "--stack", "production", "--comment", str(comment))

    assert previewed.returncode == 1, previewed.stderr
    text = comment.read_text()
    # The engine stops at the protected droplet: the replacement is named from its refusal.
    assert text.splitlines()[0] == (
        "**`production`: replaces the droplet `web` (protected: `production: true`)**, which the update refuses: "
        "this check fails."
    )
    assert "currently marked for protection" in text
    assert droplet(repository.tagged("production"))["image"] == "ubuntu-24-04-x64"


def test_a_replacement_is_shown_in_the_diff_once_production_is_lifted(repository: Repository) -> None:
    # The way to go ahead on purpose: production lifted by an update of its own, then the change.
    repository.space.ok("config", "set", "production", "false", "--stack", "production")
    assert repository.step("stack-up", "--stack", "production").returncode == 0
    repository.space.ok("config", "set", "image", "170000001", "--stack", "production")
    comment = repository.project.parent / "preview.md"

    previewed = repository.step("preview-comment", "--stack", "production", "--comment", str(comment))

    assert previewed.returncode == 0, previewed.stderr
    lines = comment.read_text().splitlines()
    assert lines[0] == "**`production`: replaces or deletes the droplet `web` (replace)**."
    assert "+ +- pulumi-python:dynamic:Droplet web (replace)" in lines
    assert '      image: "ubuntu-24-04-x64" => "170000001"' in lines


def test_the_same_replacement_on_a_stack_that_is_not_production_is_named_and_passes(repository: Repository) -> None:
    assert repository.step("review-stack", "up", "9").returncode == 0
    repository.fresh_checkout()
    template = repository.project / "review/Pulumi.pr.yaml"
    values = yaml.safe_load(template.read_text())
    values["config"]["shop:image"] = "170000001"
    template.write_text(yaml.safe_dump(values))
    # The review stack's file as the step makes it, then its preview.
    assert repository.step("review-stack", "up", "9").returncode == 0
    repository.space.ok("config", "set", "image", "170000002", "--stack", "pr-9")
    comment = repository.project.parent / "preview.md"

    previewed = repository.step("preview-comment", "--stack", "pr-9", "--comment", str(comment))

    assert previewed.returncode == 0, previewed.stderr
    assert comment.read_text().splitlines()[0] == "**`pr-9`: replaces or deletes the droplet `web` (replace)**."


def test_a_preview_that_fails_fails_the_check_and_says_why(repository: Repository) -> None:
    repository.space.ok("config", "set", "size", "s-4vcpu-8gb", "--stack", "production")
    comment = repository.project.parent / "preview.md"

    previewed = repository.step(
        "preview-comment", "--stack", "production", "--comment", str(comment), extra={"PULUMI_CONFIG_PASSPHRASE": "no"}
    )

    assert previewed.returncode == 1
    text = comment.read_text()
    assert text.splitlines()[0].startswith("**`production`: the preview failed**")
    assert "passphrase" in text
    assert PASSPHRASE not in text


def test_a_cloud_that_cannot_be_read_fails_the_drift_check_as_an_error_not_as_drift(repository: Repository) -> None:
    summary = repository.project.parent / "summary.md"

    failed = repository.step(
        "drift-check", "--stack", "production", "--summary", str(summary), extra={"SHOP_WORLD": "/nonexistent"}
    )

    assert failed.returncode == 1
    assert "production: the drift check failed" in failed.stderr
    text = summary.read_text()
    assert text.startswith("## `production`: the drift check failed\n")
    assert "/nonexistent" in text
