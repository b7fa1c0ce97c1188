"""Reading the stack's config: every key of the project's namespace is one Pulumi.yaml declares."""

from __future__ import annotations

from typing import Any

import pulumi

from components.config import ConfigError, undeclared_keys
from tests.pulumi_harness import run_program


def test_an_undeclared_key_is_refused_before_any_resource(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "worker": 3})

    assert isinstance(run.error, ConfigError)
    assert run.resources == []
    assert str(run.error) == (
        "1 problem(s) in the stack config:\n"
        "  - flask-droplet:worker is not a setting of this project (Pulumi.yaml declares every one); "
        "did you mean flask-droplet:workers? Remove it with: pulumi config rm flask-droplet:worker"
    )


def test_an_undeclared_key_is_reported_with_the_other_problems(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "sise": "s-2vcpu-2gb", "healthPath": "healthz"})

    assert isinstance(run.error, ConfigError)
    assert run.error.problems[0].startswith("flask-droplet:sise is not a setting of this project")
    assert run.error.problems[1].startswith("flask-droplet:healthPath = 'healthz'")


def test_a_config_error_is_shown_by_pulumi_without_a_traceback(good_config: dict[str, Any]) -> None:
    """The CLI's Python host prints a `RunError`'s message alone, and any other error with its traceback."""
    run = run_program({**good_config, "size": "huge"})

    assert isinstance(run.error, pulumi.RunError)


def test_other_namespaces_and_declared_keys_pass() -> None:
    keys = ["flask-droplet:workers", "digitalocean:token", "pulumi:tags", "command:anything"]

    assert undeclared_keys(keys, "flask-droplet", "dev") == []


def test_a_project_made_by_pulumi_new_names_the_template_projects_keys() -> None:
    problems = undeclared_keys(["flask-droplet:region", "mysite:region"], "mysite", "dev")

    assert problems == [
        "flask-droplet:region belongs to the project 'flask-droplet', and this project is 'mysite': "
        "its settings are mysite:KEY. Rename the key in Pulumi.dev.yaml to mysite:region"
    ]
