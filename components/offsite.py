"""`OffsiteStorage`: the Spaces bucket that takes an encrypted copy of each backup, and the droplet's key to it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as digitalocean

from core.settings import Settings

#: The provider's own settings that make and change buckets: a Spaces key of the account
#: (DigitalOcean's API token makes keys, but a bucket is made through the S3 API, with a Spaces key).
SPACES_CONFIG = ("spacesAccessId", "spacesSecretKey")
#: The same, from the environment, where the provider also looks.
SPACES_ENVIRONMENT = ("SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY")
#: Days past `offsiteDays` after which the bucket itself deletes a copy the droplet has not pruned.
LIFECYCLE_GRACE_DAYS = 1


def spaces_endpoint(region: str) -> str:
    return f"https://{region}.digitaloceanspaces.com"


def spaces_key_problems(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Why the bucket could not be made: with offsiteRegion, the provider needs a Spaces key."""
    if settings.backups.offsite_region is None:
        return []
    environ = os.environ if environ is None else environ
    config = pulumi.Config("digitalocean")
    missing = [
        f"digitalocean:{key}"
        for key, variable in zip(SPACES_CONFIG, SPACES_ENVIRONMENT, strict=True)
        if not (config.get(key) or environ.get(variable))
    ]
    if not missing:
        return []
    return [
        f"flask-droplet:offsiteRegion = {settings.backups.offsite_region!r} needs a Spaces key of the account to "
        "make its "
        f"bucket, and {' and '.join(missing)} is not set: make one at cloud.digitalocean.com/spaces/access_keys, "
        "then pulumi config set digitalocean:spacesAccessId DO00... and "
        "pulumi config set --secret digitalocean:spacesSecretKey ..."
    ]


@dataclass(frozen=True)
class OffsiteStorageArgs:
    settings: Settings
    stack_tag: str
    """The droplets' PROJECT:STACK tag: names the droplet's key, so the account's key list says whose it is."""


class OffsiteStorage(pulumi.ComponentResource):
    """A private bucket in `offsiteRegion` and a key that may read and write that bucket alone.

    The bucket's lifecycle rule deletes copies a day after `offsiteDays`, should the droplet's own
    pruning not run. On a production stack the bucket is protected from `pulumi destroy`.
    """

    target: pulumi.Output[dict[str, str]]
    """What the droplet's off-site file holds: the endpoint, region, bucket and key (a secret)."""
    bucket_name: pulumi.Output[str]

    def __init__(self, name: str, args: OffsiteStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:ops:OffsiteStorage", name, None, opts)
        settings = args.settings
        region = settings.backups.offsite_region
        assert region is not None, "OffsiteStorage is made only with offsiteRegion"
        # Named by Pulumi with a random suffix: a bucket's name is unique across all of Spaces.
        bucket = digitalocean.SpacesBucket(
            f"{name}-bucket",
            region=region,
            acl="private",
            lifecycle_rules=[
                digitalocean.SpacesBucketLifecycleRuleArgs(
                    id="expire-backups",
                    enabled=True,
                    expiration=digitalocean.SpacesBucketLifecycleRuleExpirationArgs(
                        days=settings.backups.offsite_days + LIFECYCLE_GRACE_DAYS
                    ),
                    abort_incomplete_multipart_upload_days=1,
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, protect=settings.server.production),
        )
        key = digitalocean.SpacesKey(
            f"{name}-key",
            name=f"{args.stack_tag.replace(':', '-')}-backups",
            grants=[digitalocean.SpacesKeyGrantArgs(bucket=bucket.name, permission="readwrite")],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.bucket_name = bucket.name
        self.target = pulumi.Output.secret(
            pulumi.Output.all(bucket.name, key.access_key, key.secret_key).apply(
                lambda values: {
                    "endpoint": spaces_endpoint(region),
                    "region": region,
                    "bucket": values[0],
                    "access_key_id": values[1],
                    "secret_access_key": values[2],
                }
            )
        )
        self.register_outputs({"bucket_name": self.bucket_name})
