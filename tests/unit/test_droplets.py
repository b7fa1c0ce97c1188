"""The stack's droplets (`core/droplets.py`): their names and roles, and what replaces one."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from core.droplets import SECONDARY_DEPLOY_OPTIONS, Origin, members
from tests.unit.test_render import golden_settings

ORIGINS = [
    Origin(image, region, private_network)
    for image, region, private_network in itertools.product(
        ("ubuntu-24-04-x64", "debian-13-x64", "171234567"), ("nyc3", "fra1"), (False, True)
    )
]


def test_a_fleet_is_its_first_droplet_and_those_after_it_in_rollout_order() -> None:
    fleet = members(golden_settings("fleet"))
    assert [member.droplet_name("web") for member in fleet] == ["web-droplet", "web-2-droplet", "web-3-droplet"]
    assert [member.deployment_name for member in fleet] == ["app", "app-2", "app-3"]
    assert [member.first for member in fleet] == [True, False, False]
    assert [member.deploy_options for member in fleet] == [(), SECONDARY_DEPLOY_OPTIONS, SECONDARY_DEPLOY_OPTIONS]


def test_one_droplet_has_the_first_droplets_names_so_growing_keeps_it() -> None:
    (only,) = members(golden_settings("ip"))
    assert (only.droplet_name("web"), only.deployment_name, only.deploy_options) == ("web-droplet", "app", ())


@pytest.mark.parametrize(
    ("existing", "wanted", "changes"),
    [
        (Origin("ubuntu-24-04-x64", "nyc3", False), Origin("ubuntu-24-04-x64", "nyc3", False), []),
        (Origin("ubuntu-22-04-x64", "nyc3", False), Origin("ubuntu-24-04-x64", "nyc3", False), ["image"]),
        (Origin("ubuntu-24-04-x64", "nyc3", False), Origin("ubuntu-24-04-x64", "fra1", False), ["region"]),
        (Origin("ubuntu-24-04-x64", "nyc3", False), Origin("ubuntu-24-04-x64", "nyc3", True), ["into"]),
        # Out of the stack's VPC is no change: the provider leaves an unset `vpc_uuid` as it is.
        (Origin("ubuntu-24-04-x64", "nyc3", True), Origin("ubuntu-24-04-x64", "nyc3", False), []),
        # Compared as named: the caller names one image the same way on both sides.
        (Origin("171234567", "nyc3", False), Origin("ubuntu-24-04-x64", "nyc3", False), ["image"]),
        (Origin("171234567", "nyc3", False), Origin("171234568", "nyc3", False), ["image"]),
        (Origin("ubuntu-22-04-x64", "nyc3", False), Origin("debian-13-x64", "fra1", True), ["region", "image", "into"]),
    ],
)
def test_what_replaces_a_droplet(existing: Origin, wanted: Origin, changes: list[str]) -> None:
    assert [change.split()[0] for change in wanted.changes_from(existing)] == changes


def test_every_change_that_replaces_a_droplet_makes_it_new_host_keys() -> None:
    for existing, wanted in itertools.product(ORIGINS, ORIGINS):
        if wanted.changes_from(existing):
            assert wanted.generation != existing.generation, (existing, wanted)
        if wanted == existing:
            assert wanted.generation == existing.generation


def test_a_droplets_origin_is_its_image_region_and_network_and_nothing_else() -> None:
    settings = golden_settings("ip")
    resized = dataclasses.replace(settings, server=dataclasses.replace(settings.server, size="s-2vcpu-4gb"))
    assert Origin.wanted(resized, False) == Origin.wanted(settings, False)
    assert Origin.wanted(settings, False) == Origin(settings.server.image, settings.server.region, False)
