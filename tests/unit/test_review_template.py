"""review/Pulumi.pr.yaml, the values a pull request's review stack takes over the production stack's config."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from core.slugs import DROPLET_SIZES
from delivery.stacks import read_template
from tests.pulumi_harness import PROJECT_DIR, run_program

TEMPLATE = PROJECT_DIR / "review/Pulumi.pr.yaml"
DROPLET = "digitalocean:index/droplet:Droplet"
VOLUME = "digitalocean:index/volume:Volume"
MONITORING = ("digitalocean:index/monitorAlert:MonitorAlert", "digitalocean:index/uptimeCheck:UptimeCheck")


def review_values() -> dict[str, Any]:
    """The template's values, by key (without the project's namespace)."""
    return {key.split(":", 1)[1]: value for key, value in read_template(TEMPLATE).items()}


def test_every_value_is_a_key_of_the_project() -> None:
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]

    assert all(key.startswith("flask-droplet:") for key in read_template(TEMPLATE))
    assert set(review_values()) <= set(declared)


def test_a_production_stack_with_the_template_over_it_is_small_unprotected_and_silent(
    good_config: dict[str, Any],
) -> None:
    production = {
        **good_config,
        "production": True,
        "size": "s-2vcpu-4gb",
        "workers": 5,
        "volumeSize": 50,
        "alertEmails": ["ops@example.org"],
        "stackName": "shop",
    }
    assert run_program(production).error is None

    over = {**production, **review_values()}
    # As scripts/review-stack makes the stack's config: a key the template sets to null is taken out.
    review = run_program({key: value for key, value in over.items() if value is not None})

    assert review.error is None, review.error
    [droplet] = review.of_type(DROPLET)
    assert droplet.inputs["size"] == DROPLET_SIZES[0] == "s-1vcpu-512mb-10gb"
    assert [resource.name for resource in review.resources if resource.protect] == []
    assert review.of_type(VOLUME) == []
    assert [resource for resource in review.resources if resource.type in MONITORING] == []
    assert review.outputs["url"].startswith("https://")
    # Its own name in the account: the Pulumi stack's, never production's stackName.
    assert "flask-droplet:shop" not in droplet.inputs["tags"]


def test_a_secret_key_is_only_ever_taken_out_never_given_in_plain_text() -> None:
    """The engine refuses a stack whose secret key is in plain text: the template can only take one out."""
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    secret = {key for key, declaration in declared.items() if declaration.get("secret")}

    given = {key: value for key, value in review_values().items() if key in secret}

    assert given and all(value is None for value in given.values()), given


def test_a_template_with_an_encrypted_value_is_refused(tmp_path: Any) -> None:
    template = tmp_path / "Pulumi.pr.yaml"
    template.write_text("config:\n  flask-droplet:appEnv:\n    secure: v1:abc\n")

    with pytest.raises(Exception, match="appEnv"):
        read_template(template)
