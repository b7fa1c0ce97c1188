"""The rehearsal's stand-in for the off-site bucket: an S3-compatible server the machine reaches.

With offsiteRegion, a droplet copies its backups to a Spaces bucket the program made. The
rehearsal has no Spaces: it takes the S3-compatible server at `REHEARSAL_OFFSITE_ENDPOINT`
(moto's server in the tests, `moto_server -H ADDRESS`), makes the stack's bucket there if it is
not there yet, and gives the machine that endpoint where a droplet gets Spaces'. The endpoint
is the rehearsal's alone: a stack on DigitalOcean has no setting for it.
"""

from __future__ import annotations

import os

from agent.offsite import connect
from core.settings import Settings
from rehearsal import nspawn

ENDPOINT_VARIABLE = "REHEARSAL_OFFSITE_ENDPOINT"
#: moto takes any key; a real server's would come from its own settings.
ACCESS_KEY_ID = os.environ.get("REHEARSAL_OFFSITE_ACCESS_KEY_ID", "rehearsal")
SECRET_ACCESS_KEY = os.environ.get("REHEARSAL_OFFSITE_SECRET_ACCESS_KEY", "rehearsal-secret")
#: The region the stand-in makes buckets in without a location of their own (moto's).
REGION = "us-east-1"


def bucket_name(settings: Settings) -> str:
    return f"{settings.app.name}-{settings.server.stack_name}-backups".lower()


def bucket_for(settings: Settings) -> dict[str, str] | None:
    """What the machine's off-site file holds, as `OffsiteStorage.target` is on DigitalOcean; None without
    offsiteRegion."""
    if not (settings.backups.offsite_region and settings.backups.days):
        return None
    endpoint = os.environ.get(ENDPOINT_VARIABLE)
    if not endpoint:
        raise nspawn.RehearsalError(
            f"offsiteRegion is set: the rehearsal copies the backups to the S3-compatible server at "
            f"${ENDPOINT_VARIABLE} (e.g. moto_server -H ADDRESS -p 5000, at an address the machine reaches)"
        )
    target = {
        "endpoint": endpoint,
        "region": REGION,
        "bucket": bucket_name(settings),
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }
    ensure_bucket(target)
    return target


def ensure_bucket(target: dict[str, str]) -> None:
    """The bucket, made as the program makes it on Spaces, when the server does not hold it yet."""
    s3 = connect(target)
    names = [bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])]
    if target["bucket"] not in names:
        s3.create_bucket(Bucket=target["bucket"])
