"""A droplet, its Volume and a release, as dynamic resources kept as files in $SHOP_WORLD.

The directory stands in for the cloud: `pulumi refresh` reads each resource back from it, so a file
changed by hand is a change made in the control panel. A release takes $SHOP_DELAY seconds (0 unset),
as a deploy takes a while.
"""

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult


class Cloud(ResourceProvider):
    """Each resource a JSON file in $SHOP_WORLD named by its id; a change of `replace_on` replaces it."""

    def __init__(self, replace_on: tuple[str, ...] = ()) -> None:
        self.replace_on = replace_on

    @staticmethod
    def file(resource_id: str) -> Path:
        return Path(os.environ["SHOP_WORLD"]) / f"{resource_id}.json"

    def create(self, props: dict[str, Any]) -> CreateResult:
        resource_id = uuid.uuid4().hex
        state = {key: value for key, value in props.items() if not key.startswith("__")}
        self.file(resource_id).write_text(json.dumps(state))
        return CreateResult(resource_id, state)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, json.loads(self.file(id_).read_text()))

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in news if not key.startswith("__") and olds.get(key) != news[key]]
        return DiffResult(
            changes=bool(changed),
            replaces=[key for key in changed if key in self.replace_on],
            delete_before_replace=False,
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        state = {key: value for key, value in news.items() if not key.startswith("__")}
        self.file(id_).write_text(json.dumps(state))
        return UpdateResult(state)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self.file(id_).unlink()


class Droplet(Resource, name="Droplet"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(Cloud(replace_on=("image",)), name, props, opts)


class Volume(Resource, name="Volume"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(Cloud(replace_on=("size_gib",)), name, props, opts)


class Deploy(Cloud):
    def create(self, props: dict[str, Any]) -> CreateResult:
        time.sleep(float(os.environ.get("SHOP_DELAY", "0")))
        return super().create(props)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        time.sleep(float(os.environ.get("SHOP_DELAY", "0")))
        return super().update(id_, olds, news)


class Release(Resource, name="Release"):
    def __init__(self, name: str, props: dict[str, Any]) -> None:
        super().__init__(Deploy(), name, props)


config = pulumi.Config()
stack = pulumi.get_stack()
# As the project's production stack: what holds the site and its data refuses to be deleted or replaced.
kept = pulumi.ResourceOptions(protect=config.get_bool("production") or False)
droplet = Droplet(
    "web", {"size": config.require("size"), "image": config.require("image"), "tag": f"shop:{stack}"}, kept
)
volume = Volume("state", {"size_gib": 10, "droplet": droplet.id, "tag": f"shop:{stack}"}, kept)
release = Release(
    "release",
    {
        "release": config.require("release"),
        "droplet": droplet.id,
        "env": config.require_secret("appEnv"),
        "tag": f"shop:{stack}",
    },
)
pulumi.export("url", droplet.id.apply(lambda droplet_id: f"https://{droplet_id[:12]}.droplets.test"))
pulumi.export("release_id", release.id)
pulumi.export("alerts", config.get_object("alertEmails") or None)
