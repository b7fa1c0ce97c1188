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
MD5 as the ETag and its SHA-256; when its answer cannot say (no SHA-256 in the metadata it keeps,
an ETag that is not the MD5, as an encrypting server's), the object is read back and hashed instead.
Only then the mark is written: `state-backup.py keep` deletes no backup without one. Then the
objects older than DAYS days go, the newest always kept (the bucket's lifecycle rule deletes them a
day later, should this not run). An upload that fails leaves its backup
and its mark as they were, and the command ends with 1, so the unit fails and the webhooks are told.

`fetch` writes one object to TARGET once its size and SHA-256 match what its upload checked (or,
where the server keeps no SHA-256, its MD5 the ETag; else its size alone, and age's own
authentication of every chunk as it decrypts), and says which it checked.

Every answer is read as S3 defines it, not as one server spells it: HTTP header names are
case-insensitive, so `x-amz-meta-sha256` may come back as `X-Amz-Meta-Sha256` (Go's servers, MinIO's
among them, answer so, and botocore keeps the name as received in `Metadata`). A check that fails says
what was sent or expected and the headers the server answered, as it spelled them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
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

#: The object's metadata entry that holds its SHA-256 (sent as the header `x-amz-meta-sha256`).
SHA256_METADATA = "sha256"
#: An ETag that is an MD5: S3's for an object put in one request and not encrypted with a key of KMS or
#: the client's. A multipart upload's is `MD5-PARTS`, an encrypted object's may be anything.
MD5_ETAG = re.compile(r'"?([0-9a-fA-F]{32})"?')
#: What a check reports of an answer: the headers it reads.
CHECKED_HEADERS = ("content-length", "etag", "x-amz-meta-")
#: Where `connect`'s clients keep an answer's headers as the server spelled them (botocore's own
#: `ResponseMetadata.HTTPHeaders` has them in lower case).
RECEIVED = "ReceivedHeaders"

Client = Any
"""boto3's S3 client (boto3 has no types of its own)."""
Answer = dict[str, Any]
"""A parsed answer of the client (`head_object`, `get_object`)."""


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
    client = boto3.client(
        "s3",
        endpoint_url=target["endpoint"],
        region_name=target["region"],
        aws_access_key_id=target["access_key_id"],
        aws_secret_access_key=target["secret_access_key"],
        config=config,
    )
    for operation in ("HeadObject", "GetObject"):
        client.meta.events.register(f"after-call.s3.{operation}", keep_headers_as_received)
    return client


def keep_headers_as_received(http_response: Any, parsed: Answer, **_: Any) -> None:
    """botocore's event after each call: the answer's headers, with their names as the server spelled them."""
    parsed.setdefault("ResponseMetadata", {})[RECEIVED] = [(str(k), str(v)) for k, v in http_response.headers.items()]


def metadata(answer: Answer) -> dict[str, str]:
    """The object's metadata by lower-case name: its names are HTTP headers', which are case-insensitive."""
    return {name.lower(): value for name, value in answer.get("Metadata", {}).items()}


def etag_md5(answer: Answer) -> str | None:
    """The MD5 that the ETag is (lower-case hex), or None when it is none (a multipart upload's, say)."""
    found = MD5_ETAG.fullmatch(answer.get("ETag", "").strip())
    return found.group(1).lower() if found else None


def as_received(answer: Answer) -> str:
    """The headers a check reads, as the server answered them: `Content-Length: 12, ETag: "...", ...`."""
    meta = answer.get("ResponseMetadata", {})
    headers = meta.get(RECEIVED) or sorted(meta.get("HTTPHeaders", {}).items())
    shown = [f"{name}: {value}" for name, value in headers if name.lower().startswith(CHECKED_HEADERS)]
    if not any(name.lower().startswith("x-amz-meta-") for name, _ in headers):
        shown.append("no x-amz-meta-* header")
    return ", ".join(shown)


class Digests:
    """The size, MD5 and SHA-256 of bytes as they pass."""

    def __init__(self) -> None:
        self.md5, self.sha256, self.size = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)

    def found(self) -> tuple[int, str, str]:
        return self.size, self.md5.hexdigest(), self.sha256.hexdigest()


def digests(path: Path) -> tuple[int, str, str]:
    """The file's size, MD5 and SHA-256 (hex)."""
    seen = Digests()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            seen.update(chunk)
    return seen.found()


def described(size: int, md5: str, sha256: str) -> str:
    return f"{size} bytes, MD5 {md5}, SHA-256 {sha256}"


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
                Metadata={SHA256_METADATA: sha256},
            )
        how = check_upload(client, bucket, name, (size, md5, sha256))
    finally:
        encrypted.unlink(missing_ok=True)
    mark = archive.with_name(archive.name.removesuffix(ARCHIVE) + MARK)
    mark.write_text(f"{name} {size} {sha256}\n")
    mark.chmod(0o600)
    print(f"uploaded {name} ({size} bytes, SHA-256 {sha256}), checked by {how}")
    return name


def check_upload(client: Client, bucket: str, name: str, sent: tuple[int, str, str]) -> str:
    """How the object was found to hold the bytes sent (size, MD5, SHA-256); Mismatch when it does not.

    The server's answer to HEAD is enough when it has the size, the MD5 as ETag and the SHA-256 sent; when
    it lacks one of these (a server that keeps no metadata, an ETag that is not the MD5), the object is
    read back and hashed."""
    size, _, sha256 = sent
    held = client.head_object(Bucket=bucket, Key=name)
    length, etag, told = held.get("ContentLength"), etag_md5(held), metadata(held).get(SHA256_METADATA)
    if (length is not None and length != size) or (told is not None and told != sha256):
        raise Mismatch(f"{name}: sent {described(*sent)}; the server answered {as_received(held)}")
    if (length, etag, told) == sent:
        return "the server's answer (its size, its ETag the MD5, the SHA-256 in its metadata)"
    why = "no SHA-256 in its metadata" if told is None else "no Content-Length" if length is None else ""
    why = why or f"an ETag that is not the MD5 ({held.get('ETag')})"
    got = client.get_object(Bucket=bucket, Key=name)
    seen = Digests()
    for chunk in got["Body"].iter_chunks(CHUNK):
        seen.update(chunk)
    if seen.found() != sent:
        raise Mismatch(
            f"{name}: sent {described(*sent)}, read back {described(*seen.found())}; "
            f"the server answered {as_received(got)}"
        )
    return f"reading it back and hashing it (the server answered {why})"


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
    """One object into `target`, kept only when its size and SHA-256 are those its upload checked.

    Where the server keeps no SHA-256, the ETag is checked when it is an MD5, and else the size alone
    (age authenticates every chunk as it decrypts); the line printed says which."""
    key = name + OBJECT
    got = client.get_object(Bucket=bucket, Key=key)
    partial = target.with_name(target.name + PARTIAL)
    seen = Digests()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        for chunk in got["Body"].iter_chunks(CHUNK):
            seen.update(chunk)
            file.write(chunk)
    size, md5, sha256 = seen.found()
    length, etag, told = got.get("ContentLength"), etag_md5(got), metadata(got).get(SHA256_METADATA)
    if told is not None:
        how = "its SHA-256, the one its upload checked"
    elif etag == md5:
        how = "its ETag, the MD5 (the server answered no SHA-256 in its metadata)"
    else:
        how = "its size alone (the server answered no SHA-256 in its metadata, and an ETag that is not the MD5)"
    if (length is not None and length != size) or told not in (None, sha256):
        partial.unlink()
        raise Mismatch(f"{key}: read {described(size, md5, sha256)}; the server answered {as_received(got)}")
    partial.rename(target)
    print(f"fetched {key} ({size} bytes, SHA-256 {sha256}), checked by {how}", file=sys.stderr)


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
        from botocore.exceptions import BotoCoreError, ClientError

        target = read_target(Path(argv[1]))
        try:
            fetch(connect_to(target), target["bucket"], argv[2], Path(argv[3]))
        except (BotoCoreError, ClientError, Mismatch) as error:
            print(f"the off-site backup {argv[2]} was not fetched ({type(error).__name__}: {error})", file=sys.stderr)
            return 1
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
