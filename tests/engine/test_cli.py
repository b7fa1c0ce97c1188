"""The program under the real `pulumi` CLI and Python language host, as a user runs it.

DigitalOcean's and pulumi-command's providers cannot be built on these machines (their Go
modules are not served here; see docs/testing.md), so a preview goes as far as the
engine goes without them: the engine checks the stack's config against Pulumi.yaml, the
program validates its settings, and its first call to DigitalOcean (the invokes that read the
account before any resource is declared) asks the engine for the DigitalOcean provider. What
is asserted here is everything before that point.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import do_api
from tests.engine.conftest import Workspace, copy_project, engine_env
from tests.pulumi_harness import PROJECT_DIR

pytestmark = pytest.mark.engine

#: The version of pulumi-digitalocean's Python SDK in requirements.txt: the provider it asks for.
DIGITALOCEAN_SDK = re.search(
    r"^pulumi-digitalocean==(\S+)$", (PROJECT_DIR / "requirements.txt").read_text(), re.MULTILINE
)[1]  # type: ignore[index]
#: The engine's words when the program first calls on DigitalOcean.
ASKS_FOR_THE_PROVIDER = (
    f"no resource plugin 'pulumi-resource-digitalocean' found in the workspace at version v{DIGITALOCEAN_SDK}"
)


#: The stack file this repository ships as an example.
EXAMPLE_STACK = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())["config"]


def output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def assert_reached_digitalocean(done: subprocess.CompletedProcess[str]) -> None:
    """The engine ran the program, which validated its settings and then called on DigitalOcean."""
    text = output(done)
    assert ASKS_FOR_THE_PROVIDER in text, text
    assert "Traceback" not in text, text
    assert "problem(s) in the stack config" not in text, text
    assert "is not a setting of this project" not in text, text


def assert_stopped_before_any_resource(done: subprocess.CompletedProcess[str]) -> None:
    """The preview failed before the program declared anything: no provider was even asked for."""
    text = output(done)
    assert done.returncode != 0, text
    assert "no resource plugin" not in text, text
    assert "Traceback" not in text, text


def stack_resources(space: Workspace) -> list[dict[str, object]]:
    exported = yaml.safe_load(space.ok("stack", "export"))
    return list(exported["deployment"].get("resources") or [])


def test_the_engine_is_the_pinned_release(workspace: Workspace) -> None:
    pinned = re.search(
        r"github.com/pulumi/pulumi/pkg/v3 (v\S+)", (PROJECT_DIR / "tests/tools/engine/cli/go.mod").read_text()
    )
    assert pinned is not None
    assert workspace.ok("version").strip() == pinned[1]


def test_the_example_stack_runs_the_program_until_it_calls_on_digitalocean(workspace: Workspace) -> None:
    """Pulumi.dev.yaml as shipped: the engine accepts its values, the program its settings."""
    done = workspace.pulumi("preview")

    assert_reached_digitalocean(done)
    assert stack_resources(workspace) == []


def test_a_value_of_the_wrong_type_is_refused_by_the_engine(workspace: Workspace) -> None:
    workspace.ok("config", "set", "workers", "two")

    done = workspace.pulumi("preview")

    assert_stopped_before_any_resource(done)
    assert "Stack 'dev' with configuration key 'workers' must be of type 'integer'" in output(done)
    assert stack_resources(workspace) == []


def test_an_undeclared_key_is_refused_with_the_key_it_resembles(workspace: Workspace) -> None:
    """The engine passes a key Pulumi.yaml does not declare through unread: a typo must not be ignored."""
    workspace.ok("config", "set", "worker", "3")

    done = workspace.pulumi("preview")

    assert_stopped_before_any_resource(done)
    text = output(done)
    assert "flask-droplet:worker is not a setting of this project" in text
    assert "did you mean flask-droplet:workers?" in text
    assert "pulumi config rm flask-droplet:worker" in text


def test_the_programs_own_refusals_come_together_before_any_resource(workspace: Workspace) -> None:
    workspace.ok("config", "set", "size", "huge")
    workspace.ok("config", "set", "healthPath", "healthz")

    done = workspace.pulumi("preview")

    assert_stopped_before_any_resource(done)
    text = output(done)
    assert "2 problem(s) in the stack config" in text
    assert "flask-droplet:size = 'huge': expected a DigitalOcean droplet size slug" in text
    assert "flask-droplet:healthPath = 'healthz'" in text
    assert stack_resources(workspace) == []


def test_secrets_stay_encrypted_in_the_stack_file_and_out_of_the_preview(workspace: Workspace) -> None:
    secret = "s3cr3t-engine-value-0a1b2c"
    workspace.ok("config", "set", "--secret", "appEnv", f'{{"SECRET_KEY": "{secret}"}}')
    workspace.ok("config", "set", "--secret", "digitalocean:token", f"dop_v1_{secret}")

    done = workspace.pulumi("preview", "--diff")

    assert_reached_digitalocean(done)
    stack_file = (workspace.project / "Pulumi.dev.yaml").read_text()
    config = yaml.safe_load(stack_file)["config"]
    assert set(config["flask-droplet:appEnv"]) == {"secure"}
    assert set(config["digitalocean:token"]) == {"secure"}
    assert secret not in stack_file
    assert secret not in output(done)


def test_a_wrong_token_is_one_line_with_the_config_problems_and_no_traceback(workspace: Workspace) -> None:
    """DigitalOcean's 401 for the account's first read, told with the config's own problem, before any provider."""
    with do_api.serving() as api:
        workspace.ok("config", "set", "digitalocean:apiEndpoint", do_api.endpoint(api))
        workspace.ok("config", "set", "--secret", "digitalocean:token", "dop_v1_expired-0a1b2c")
        workspace.ok("config", "set", "size", "huge")

        done = workspace.pulumi("preview")

    assert_stopped_before_any_resource(done)
    text = output(done)
    assert "2 problem(s) in the stack config" in text
    assert "flask-droplet:size = 'huge'" in text
    assert "digitalocean:token = ********: DigitalOcean refused it (401 Unable to authenticate you)" in text
    assert "Program failed with an unhandled exception" not in text
    assert "dop_v1_expired" not in text
    assert stack_resources(workspace) == []


def readme_digitalocean_commands() -> list[str]:
    """The README's "On DigitalOcean" block, a line a command, up to the first one that changes resources."""
    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme[readme.index("## On DigitalOcean") :]
    block = section[section.index("```sh\n") + len("```sh\n") : section.index("```\n", section.index("```sh\n") + 6)]
    commands = [line for line in block.splitlines() if line.strip()]
    return commands[: next(i for i, line in enumerate(commands) if line.startswith("pulumi up"))]


def test_the_readme_commands_for_digitalocean_as_written(engine_bin: Path, tmp_path: Path) -> None:
    """From a clone with nothing made yet: the virtualenv, the stack, each config line, the preview.

    `ifconfig.me` is out of reach here, so `curl` answers for it alone with a documentation address.
    """
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", str(home / ".ssh/id_ed25519")],
        check=True,
        timeout=60,
    )
    shims = tmp_path / "shims"
    shims.mkdir()
    curl = shims / "curl"
    curl.write_text('#!/bin/sh\n[ "$*" = "-s https://ifconfig.me" ] && exec echo 198.51.100.7\nexit 6\n')
    curl.chmod(0o755)
    project = copy_project(tmp_path / "project")
    (project / ".venv").unlink()
    env = engine_env(engine_bin, tmp_path)
    env["PATH"] = f"{shims}:{env['PATH']}"
    space = Workspace(project, env)
    commands = readme_digitalocean_commands()
    assert commands[0].startswith("python3 -m venv .venv") and commands[-1] == "pulumi preview"

    for command in commands[:-1]:
        done = space.run(command, stdin="")
        assert done.returncode == 0, f"{command}\n{output(done)}"
    done = space.run(commands[-1])

    assert_reached_digitalocean(done)
    config = yaml.safe_load((project / "Pulumi.dev.yaml").read_text())["config"]
    assert config["flask-droplet:adminCidrs"] == ["198.51.100.7/32"]
    assert config["flask-droplet:sshPublicKeys"] == [(home / ".ssh/id_ed25519.pub").read_text().strip()]
    assert set(config["flask-droplet:sshPrivateKey"]) == {"secure"}


def test_pulumi_new_from_a_copy_of_this_repository(engine_bin: Path, tmp_path: Path) -> None:
    """`pulumi new` with this repository as its template, under a project name of the user's own."""
    (tmp_path / "home").mkdir()
    template = copy_project(tmp_path / "template")
    (template / ".venv").unlink()
    env = engine_env(engine_bin, tmp_path)
    here = Workspace(tmp_path, env)

    made = here.pulumi(
        "new", str(template), "--dir", "site", "--name", "mysite", "--stack", "staging", "--yes",
        "--generate-only", "--config", "digitalocean:token=dop_v1_example",
    )  # fmt: skip
    assert made.returncode == 0, output(made)
    assert "pulumi config set --path 'adminCidrs[0]'" in output(made)  # the template's quickstart

    site = Workspace(tmp_path / "site", env)
    (site.project / ".venv").symlink_to(PROJECT_DIR / ".venv")
    assert yaml.safe_load((site.project / "Pulumi.yaml").read_text())["name"] == "mysite"
    site.ok("stack", "init", "staging")
    site.ok("config", "set", "--path", "adminCidrs[0]", "198.51.100.7/32")
    site.ok(
        "config",
        "set",
        "--path",
        "sshPublicKeys[0]",
        EXAMPLE_STACK["flask-droplet:sshPublicKeys"][0],
    )
    site.ok("config", "set", "workers", "3")

    done = site.pulumi("preview")

    assert_reached_digitalocean(done)
    stack = yaml.safe_load((site.project / "Pulumi.staging.yaml").read_text())["config"]
    assert str(stack["mysite:workers"]) == "3"


def test_a_made_project_refuses_the_example_stack_files_keys_with_the_fix(engine_bin: Path, tmp_path: Path) -> None:
    """Pulumi.dev.yaml comes along with the template, its keys in this project's namespace."""
    (tmp_path / "home").mkdir()
    template = copy_project(tmp_path / "template")
    (template / ".venv").unlink()
    env = engine_env(engine_bin, tmp_path)
    made = Workspace(tmp_path, env).pulumi(
        "new", str(template), "--dir", "site", "--name", "mysite", "--stack", "dev", "--yes", "--generate-only"
    )
    assert made.returncode == 0, output(made)
    site = Workspace(tmp_path / "site", env)
    (site.project / ".venv").symlink_to(PROJECT_DIR / ".venv")
    site.ok("stack", "init", "dev")
    missing = site.pulumi("preview")
    # The engine's own check: adminCidrs has no default, and flask-droplet:adminCidrs is not this project's.
    assert_stopped_before_any_resource(missing)
    assert "Stack 'dev' is missing configuration value 'adminCidrs'" in output(missing)
    site.ok("config", "set", "--path", "adminCidrs[0]", "198.51.100.7/32")

    done = site.pulumi("preview")

    assert_stopped_before_any_resource(done)
    text = output(done)
    assert "flask-droplet:workers belongs to the project 'flask-droplet', and this project is 'mysite'" in text
    assert "Rename the key in Pulumi.dev.yaml to mysite:workers" in text
