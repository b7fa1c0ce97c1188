"""Off-site copies of the backups: a module of the server agent, run on its own by boto3's Python.

    APP-offsite.py upload OFFSITE_FILE BACKUPS DAYS RECIPIENT   (the off-site unit, after each backup)
    APP-offsite.py list OFFSITE_FILE                             (the agent's restore --offsite)
    APP-offsite.py fetch OFFSITE_FILE NAME TARGET                (the same, for the one it restores)

OFFSITE_FILE (root's, mode 0600, from the deploy's stdin) says where the bucket is and holds the key
that reaches it: {"endpoint", "region", "bucket", "access_key_id", "secret_access_key"}.

`upload` takes each backup BACKUPS/STAMP.tar.gz that has no mark STAMP.tar.gz.offsite yet, encrypts
it with age to RECIPIENT (the droplet holds no identity that could read it back) and puts it in
the bucket as STAMP.tar.gz.age, with its MD5 as Content-MD5 (the server refuses bytes that differ)
and its SHA-256 in the object's metadata. It is then checked: the server must answer its size, its
MD5 as the ETag and its SHA-256. Only then the mark is written: `state-backup.py keep` deletes no
backup without one. Then the objects older than DAYS days go, the newest always kept (the bucket's
lifecycle rule deletes them a day later, should this not run). An upload that fails leaves its backup
and its mark as they were, and the command ends with 1, so the unit fails and the webhooks are told.

`fetch` writes one object to TARGET once its size and SHA-256 match what its upload checked.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The backups' names, as state-backup.py stamps them.
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ARCHIVE = ".tar.gz"
#: An object's name: the backup's, encrypted.
OBJECT = ARCHIVE + ".age"
#: Beside a backup once its off-site copy has been checked.
MARK = ARCHIVE + ".offsite"
PARTIAL = ".partial"
CHUNK = 1024 * 1024
USAGE = (
    "usage: offsite.py upload OFFSITE_FILE BACKUPS DAYS RECIPIENT | list OFFSITE_FILE | fetch OFFSITE_FILE NAME TARGET"
)

Client = Any
"""boto3's S3 client (boto3 has no types of its own)."""


class Mismatch(Exception):
    """What the server holds is not what was sent."""


def read_target(path: Path) -> dict[str, str]:
    target = json.loads(path.read_text())
    return {key: str(target[key]) for key in ("endpoint", "region", "bucket", "access_key_id", "secret_access_key")}


def connect(target: dict[str, str]) -> Client:
    """An S3 client for the bucket's endpoint (Spaces', or the rehearsal's stand-in)."""
    import boto3
    from botocore.config import Config

    config = Config(
        # Spaces and other S3-compatible servers take Content-MD5; boto3's default CRC headers are AWS's own.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.client(
        "s3",
        endpoint_url=target["endpoint"],
        region_name=target["region"],
        aws_access_key_id=target["access_key_id"],
        aws_secret_access_key=target["secret_access_key"],
        config=config,
    )


def digests(path: Path) -> tuple[int, str, str]:
    """The file's size, MD5 and SHA-256 (hex)."""
    md5, sha256, size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return size, md5.hexdigest(), sha256.hexdigest()


def stamp_of(name: str, suffix: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(name.removesuffix(suffix), STAMP_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def encrypt(archive: Path, recipient: str, encrypted: Path) -> None:
    subprocess.run(
        ["age", "--encrypt", "--recipient", recipient, "--output", str(encrypted), str(archive)],
        check=True,
        capture_output=True,
        text=True,
    )


def upload_one(client: Client, bucket: str, archive: Path, recipient: str) -> str:
    """The backup encrypted, put and checked; the object's name."""
    name = archive.name.removesuffix(ARCHIVE) + OBJECT
    encrypted = archive.with_name(f".{name}{PARTIAL}")
    try:
        encrypt(archive, recipient, encrypted)
        size, md5, sha256 = digests(encrypted)
        with open(encrypted, "rb") as body:
            client.put_object(
                Bucket=bucket,
                Key=name,
                Body=body,
                ContentLength=size,
                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
                Metadata={"sha256": sha256},
            )
        held = client.head_object(Bucket=bucket, Key=name)
        found = (held["ContentLength"], held["ETag"].strip('"'), held.get("Metadata", {}).get("sha256"))
        if found != (size, md5, sha256):
            raise Mismatch(f"the bucket holds {found[0]} bytes, MD5 {found[1]}, SHA-256 {found[2]}")
    finally:
        encrypted.unlink(missing_ok=True)
    mark = archive.with_name(archive.name.removesuffix(ARCHIVE) + MARK)
    mark.write_text(f"{name} {size} {sha256}\n")
    mark.chmod(0o600)
    print(f"uploaded {name} ({size} bytes, SHA-256 {sha256}), checked")
    return name


def objects(client: Client, bucket: str) -> dict[str, int]:
    """The backups in the bucket, by name (STAMP.tar.gz.age), with their sizes."""
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if stamp_of(item["Key"], OBJECT) is not None:
                found[item["Key"]] = item["Size"]
    return found


def prune(client: Client, bucket: str, days: int, now: datetime.datetime) -> None:
    """The objects older than `days` days deleted, the newest always kept."""
    oldest = now - datetime.timedelta(days=days)
    for name in sorted(objects(client, bucket))[:-1]:
        stamp = stamp_of(name, OBJECT)
        if stamp is not None and stamp < oldest:
            client.delete_object(Bucket=bucket, Key=name)
            print(f"deleted {name} off-site, older than {days} days")


def upload(client: Client, bucket: str, backups: Path, days: int, recipient: str, now: datetime.datetime) -> int:
    """Every backup not yet copied, copied; the old copies pruned. 0, or 1 when an upload failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    failed = 0
    for archive in sorted(backups.glob("*" + ARCHIVE)):
        if stamp_of(archive.name, ARCHIVE) is None:
            continue
        if archive.with_name(archive.name.removesuffix(ARCHIVE) + MARK).exists():
            continue
        try:
            upload_one(client, bucket, archive, recipient)
        except (BotoCoreError, ClientError, OSError, subprocess.CalledProcessError, Mismatch) as error:
            failed += 1
            why = error.stderr.strip() if isinstance(error, subprocess.CalledProcessError) else str(error)
            print(
                f"the off-site copy of {archive.name} failed ({type(error).__name__}: {why}); it stays here",
                file=sys.stderr,
            )
    if failed:
        return 1
    try:
        prune(client, bucket, days, now)
    except (BotoCoreError, ClientError) as error:
        print(f"deleting old off-site copies failed ({type(error).__name__}: {error})", file=sys.stderr)
        return 1
    return 0


def fetch(client: Client, bucket: str, name: str, target: Path) -> None:
    """One object into `target`, kept only when its size and SHA-256 are those its upload checked."""
    key = name + OBJECT
    got = client.get_object(Bucket=bucket, Key=key)
    partial = target.with_name(target.name + PARTIAL)
    sha256, size = hashlib.sha256(), 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        for chunk in got["Body"].iter_chunks(CHUNK):
            sha256.update(chunk)
            size += len(chunk)
            file.write(chunk)
    expected = got.get("Metadata", {}).get("sha256")
    if size != got["ContentLength"] or sha256.hexdigest() != expected:
        partial.unlink()
        raise Mismatch(f"{key}: {size} bytes with SHA-256 {sha256.hexdigest()}, its upload checked {expected}")
    partial.rename(target)
    print(f"fetched {key} ({size} bytes, SHA-256 {expected})", file=sys.stderr)


def main(argv: list[str], connect_to: Callable[[dict[str, str]], Client] = connect) -> int:
    if len(argv) == 5 and argv[0] == "upload" and argv[3].isdigit():
        target = read_target(Path(argv[1]))
        now = datetime.datetime.now(datetime.UTC)
        return upload(connect_to(target), target["bucket"], Path(argv[2]), int(argv[3]), argv[4], now)
    if len(argv) == 2 and argv[0] == "list":
        target = read_target(Path(argv[1]))
        for name, size in sorted(objects(connect_to(target), target["bucket"]).items()):
            print(f"{name.removesuffix(OBJECT)} {size}")
        return 0
    if len(argv) == 4 and argv[0] == "fetch" and stamp_of(argv[2], "") is not None:
        target = read_target(Path(argv[1]))
        fetch(connect_to(target), target["bucket"], argv[2], Path(argv[3]))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
