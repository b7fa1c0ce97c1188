"""The program's host keys under mocks: each droplet boots with its own, every connection pins it."""

from __future__ import annotations

from typing import Any

import yaml

from tests.pulumi_harness import (
    DROPLET_IPV4,
    TEST_HOST_KEYS,
    ProgramRun,
    droplet_id,
    droplet_ipv4,
    reveal,
    run_program,
)

DROPLET = "digitalocean:index/droplet:Droplet"
HOST_KEY = "pulumi-python:dynamic:Resource"
STACK_TAG = "flask-droplet:test"


def ran(config: dict[str, Any], **options: Any) -> ProgramRun:
    run = run_program(config, **options)
    assert run.error is None, run.error
    return run


def fleet_config(good_config: dict[str, Any]) -> dict[str, Any]:
    return {**good_config, "instances": 3, "database": "postgres", "https": False}


def existing_droplet(image: str = "ubuntu-24-04-x64") -> dict[str, Any]:
    return {
        "id": int(droplet_id(0)),
        "name": "web-droplet-1a2b3c4",
        "region": "nyc3",
        "image": image,
        "size": "s-1vcpu-1gb",
        "tags": ["flask-droplet", STACK_TAG],
        "volumeIds": [],
    }


def test_the_droplet_installs_the_programs_host_keys_as_its_only_ones(good_config: dict[str, Any]) -> None:
    run = ran(good_config)

    user_data = yaml.safe_load(reveal(run.one(DROPLET).inputs["userData"]))
    assert user_data["ssh_deletekeys"] is True
    assert user_data["ssh_keys"] == TEST_HOST_KEYS[0].as_dict()
    assert "ssh_genkeytypes" not in user_data


def test_every_step_of_the_deploy_pins_the_droplets_host_key(good_config: dict[str, Any]) -> None:
    run = ran(good_config)

    steps = [r for r in run.resources if r.type.startswith("command:remote:")]
    assert len(steps) == 5  # wait for cloud-init, the deploy script, the agent, the bundle, the deploy
    for step in steps:
        connection = reveal(step.inputs["connection"])
        assert connection["host"] == DROPLET_IPV4
        assert connection["hostKey"] == TEST_HOST_KEYS[0].ed25519_public, step.name


def test_each_droplet_of_a_fleet_has_its_own_keys_and_each_deploy_pins_its_own(good_config: dict[str, Any]) -> None:
    run = ran(fleet_config(good_config))

    keys = sorted(r.name for r in run.of_type(HOST_KEY))
    assert keys == ["web-2-droplet-host-key", "web-3-droplet-host-key", "web-droplet-host-key"]
    for index, name in enumerate(("app", "app-2", "app-3")):
        deploy = run.named(f"{name}-deploy")
        connection = reveal(deploy.inputs["connection"])
        assert connection["host"] == droplet_ipv4(index)
        assert connection["hostKey"] == TEST_HOST_KEYS[index].ed25519_public, name


def test_known_hosts_pins_each_droplets_key_for_the_user(good_config: dict[str, Any]) -> None:
    run = ran(fleet_config(good_config))

    lines = run.outputs["known_hosts"].splitlines()
    assert lines == [
        f"{droplet_ipv4(index)} ssh-ed25519 {TEST_HOST_KEYS[index].ed25519_public.split()[1]}" for index in range(3)
    ]


def test_the_keys_stay_as_made_while_the_droplet_stays(good_config: dict[str, Any]) -> None:
    kept = ran(good_config, existing_droplets=[existing_droplet()]).one(HOST_KEY)

    assert kept.ignore_changes == ("generation",)


def test_a_replaced_droplet_gets_new_keys(good_config: dict[str, Any]) -> None:
    """A new image replaces the droplet (with allowReplace): its keys are made again, with a new generation."""
    before = ran(good_config, existing_droplets=[existing_droplet()]).one(HOST_KEY)
    replacing = {**good_config, "image": "170000001", "allowReplace": True}

    after = ran(replacing, existing_droplets=[existing_droplet()]).one(HOST_KEY)

    assert after.ignore_changes == ()
    assert after.inputs["generation"] != before.inputs["generation"]


def test_the_private_keys_are_not_in_any_output(good_config: dict[str, Any]) -> None:
    run = ran(good_config)

    exported = repr(run.outputs)
    assert "PRIVATE KEY" not in exported
    assert TEST_HOST_KEYS[0].ed25519_public.split()[1] in exported
