"""The off-site copies on the server: the script against a real S3 server (moto's) with the real age, and the
agent's part (the bucket from the deploy's stdin, the restore from off-site, the failure told) under the fake."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import re
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agent import backup, notify, offsite
from agent.cli import main
from agent.system import Completed
from tests.conftest import OFFSITE_IDENTITY, OFFSITE_RECIPIENT
from tests.unit.agent_server import (
    ENVIRONMENT,
    PUBLIC_IPV4,
    bundle_of,
    config_of,
    deploy,
    first_booted,
    live_server,
    with_certificate,
)

BUCKET = "weather-backups"
BACKUPS = "/var/backups/weather"
NOW = datetime.datetime(2026, 12, 1, 3, 0, tzinfo=datetime.UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def target(endpoint: str, tmp_path: Path) -> Path:
    bucket = f"b{tmp_path.name.lower().replace('_', '-')[-40:]}"
    given = {
        "endpoint": endpoint,
        # moto's own region: it makes buckets elsewhere only with a location it knows.
        "region": "us-east-1",
        "bucket": bucket,
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    offsite.connect(given).create_bucket(Bucket=bucket)
    path = tmp_path / "offsite.json"
    path.write_text(json.dumps(given))
    return path


def s3(target: Path) -> Any:
    return offsite.connect(offsite.read_target(target))


def bucket_of(target: Path) -> str:
    return offsite.read_target(target)["bucket"]


def a_backup(backups: Path, stamp: str, text: str = "state") -> Path:
    backups.mkdir(exist_ok=True)
    archive = backups / f"{stamp}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("notes.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return archive


def upload(target: Path, backups: Path, days: int = 7) -> int:
    client = s3(target)
    return offsite.upload(client, bucket_of(target), backups, days, OFFSITE_RECIPIENT, NOW)


def test_each_backup_goes_up_encrypted_checked_and_marked(target: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    archive = a_backup(backups, "20261201T020000Z")

    assert upload(target, backups) == 0

    held = s3(target).get_object(Bucket=bucket_of(target), Key="20261201T020000Z.tar.gz.age")
    data = held["Body"].read()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert not data.startswith(gzip.compress(b"")[:2]) and b"notes.txt" not in data
    assert held["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    mark = backups / "20261201T020000Z.tar.gz.offsite"
    assert mark.read_text().split() == ["20261201T020000Z.tar.gz.age", str(len(data)), hashlib.sha256(data).hexdigest()]
    assert mark.stat().st_mode & 0o777 == 0o600
    # What decrypts with the identity is the backup itself.
    identity = tmp_path / "identity"
    identity.write_text(OFFSITE_IDENTITY + "\n")
    plain = subprocess.run(["age", "-d", "-i", str(identity)], input=data, capture_output=True, check=True).stdout
    assert plain == archive.read_bytes()
    assert sorted(p.name for p in backups.iterdir()) == ["20261201T020000Z.tar.gz", "20261201T020000Z.tar.gz.offsite"]


def test_a_marked_backup_is_not_sent_again_and_old_copies_go_but_the_newest(target: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    client, bucket = s3(target), bucket_of(target)
    for stamp in ("20261101T020000Z", "20261120T020000Z"):
        client.put_object(Bucket=bucket, Key=f"{stamp}.tar.gz.age", Body=b"old")
    client.put_object(Bucket=bucket, Key="unrelated.txt", Body=b"kept")
    a_backup(backups, "20261130T020000Z")
    (backups / "20261130T020000Z.tar.gz.offsite").write_text("already\n")
    a_backup(backups, "not-a-stamp")

    assert upload(target, backups, days=7) == 0

    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    # The marked backup was not sent; the old copies went, the newest of them stayed.
    assert keys == ["20261120T020000Z.tar.gz.age", "unrelated.txt"]


def test_retention_keeps_the_copies_within_the_days(target: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    for stamp in ("20261120T020000Z", "20261126T020000Z", "20261130T020000Z", "20261201T020000Z"):
        a_backup(backups, stamp)

    assert upload(target, backups, days=6) == 0

    assert sorted(offsite.objects(s3(target), bucket_of(target))) == [
        "20261126T020000Z.tar.gz.age",
        "20261130T020000Z.tar.gz.age",
        "20261201T020000Z.tar.gz.age",
    ]


def test_an_unreachable_bucket_leaves_the_backup_unmarked_and_fails(tmp_path: Path, capsys: Any) -> None:
    backups = tmp_path / "backups"
    a_backup(backups, "20261201T020000Z")
    given = {"endpoint": f"http://127.0.0.1:{free_port()}", "region": "fra1", "bucket": BUCKET}
    given |= {"access_key_id": "testing", "secret_access_key": "s3cr3t-never-shown"}
    path = tmp_path / "offsite.json"
    path.write_text(json.dumps(given))

    assert offsite.main(["upload", str(path), str(backups), "7", OFFSITE_RECIPIENT]) == 1

    assert sorted(p.name for p in backups.iterdir()) == ["20261201T020000Z.tar.gz"]
    err = capsys.readouterr().err
    assert "the off-site copy of 20261201T020000Z.tar.gz failed (EndpointConnectionError" in err
    assert "s3cr3t-never-shown" not in err


def test_a_bucket_that_holds_other_bytes_is_not_taken_for_a_copy(target: Path, tmp_path: Path) -> None:
    class Lying:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

        def head_object(self, **asked: Any) -> Any:
            return {**self.client.head_object(**asked), "ContentLength": 1}

    backups = tmp_path / "backups"
    a_backup(backups, "20261201T020000Z")

    assert offsite.upload(Lying(s3(target)), bucket_of(target), backups, 7, OFFSITE_RECIPIENT, NOW) == 1
    assert not (backups / "20261201T020000Z.tar.gz.offsite").exists()


def test_an_age_that_fails_is_a_failed_upload(target: Path, tmp_path: Path, capsys: Any) -> None:
    backups = tmp_path / "backups"
    a_backup(backups, "20261201T020000Z")

    assert offsite.upload(s3(target), bucket_of(target), backups, 7, "age1notarecipient", NOW) == 1
    assert "CalledProcessError" in capsys.readouterr().err


def test_list_and_fetch_give_back_what_was_checked(target: Path, tmp_path: Path, capsys: Any) -> None:
    backups = tmp_path / "backups"
    a_backup(backups, "20261201T020000Z")
    a_backup(backups, "20261130T020000Z")
    assert upload(target, backups) == 0
    capsys.readouterr()

    assert offsite.main(["list", str(target)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == ["20261130T020000Z", "20261201T020000Z"]

    fetched = tmp_path / "fetched.age"
    assert offsite.main(["fetch", str(target), "20261201T020000Z", str(fetched)]) == 0
    assert fetched.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert fetched.stat().st_mode & 0o777 == 0o600

    # An object whose bytes are not those its upload checked is not kept, and the failure says what was read
    # and what the server answered.
    client = s3(target)
    client.put_object(Bucket=bucket_of(target), Key="20261129T020000Z.tar.gz.age", Body=b"x", Metadata={"sha256": "0"})
    capsys.readouterr()
    assert offsite.main(["fetch", str(target), "20261129T020000Z", str(tmp_path / "bad")]) == 1
    assert not list(tmp_path.glob("bad*"))
    err = capsys.readouterr().err
    assert "the off-site backup 20261129T020000Z was not fetched (Mismatch: 20261129T020000Z.tar.gz.age: read 1 " in err
    assert f"SHA-256 {hashlib.sha256(b'x').hexdigest()}; the server answered " in err
    assert "x-amz-meta-sha256: 0" in err.lower()
    assert offsite.main(["fetch", str(target), "nope", "x"]) == 2


def test_old_copies_are_pruned_locally_only_once_checked_off_site(tmp_path: Path) -> None:
    backups, incoming = tmp_path / "backups", tmp_path / "incoming"
    incoming.mkdir()
    for stamp in ("20200101T020000Z", "20200102T020000Z", "20200103T020000Z"):
        a_backup(backups, stamp)
    (backups / "20200101T020000Z.tar.gz.offsite").write_text("checked\n")

    backup.main(["keep", str(incoming), str(backups), "7", "offsite"])

    assert sorted(p.name for p in backups.iterdir()) == ["20200102T020000Z.tar.gz", "20200103T020000Z.tar.gz"]


# Other servers' answers: moto's, with the headers spelled as other S3-compatible servers spell them.

Headers = list[tuple[str, str]]


def go_canonical(headers: Headers) -> Headers:
    """Go's net/http (MinIO, SeaweedFS, Garage's gateway...): `X-Amz-Meta-Sha256`, `Etag`."""
    return [("-".join(part.capitalize() for part in name.split("-")), value) for name, value in headers]


def upper_case_metadata(headers: Headers) -> Headers:
    return [(name.upper() if name.lower().startswith("x-amz-meta-") else name, value) for name, value in headers]


def mixed_case_metadata(headers: Headers) -> Headers:
    return [("X-amz-Meta-SHA256" if name.lower() == "x-amz-meta-sha256" else name, value) for name, value in headers]


def no_metadata(headers: Headers) -> Headers:
    """A server that keeps no user metadata."""
    return [(name, value) for name, value in headers if not name.lower().startswith("x-amz-meta-")]


def multipart_etag(headers: Headers) -> Headers:
    """An ETag as a multipart upload's (the MD5 of the parts' MD5s, and their count): not the object's MD5."""
    return [
        (
            name,
            f'"{hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()}-2"'
            if name.lower() == "etag"
            else value,
        )
        for name, value in headers
    ]


def neither(headers: Headers) -> Headers:
    return multipart_etag(no_metadata(go_canonical(headers)))


class Respelled:
    """A WSGI app around moto's, whose answers' headers `spelling` rewrites."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.spelling: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            return start_response(status, self.spelling(headers) if self.spelling else headers, exc_info)

        return self.app(environ, start)


@pytest.fixture(scope="module")
def respelled_server() -> Iterator[tuple[str, Respelled]]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = Respelled(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def respelled(respelled_server: tuple[str, Respelled], tmp_path: Path) -> Iterator[tuple[Path, Respelled]]:
    """The bucket file of a bucket on the server whose answers a test respells."""
    endpoint, app = respelled_server
    bucket = f"r{tmp_path.name.lower().replace('_', '-')[-40:]}"
    given = {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket}
    given |= {"access_key_id": "testing", "secret_access_key": "testing"}
    offsite.connect(given).create_bucket(Bucket=bucket)
    path = tmp_path / "offsite.json"
    path.write_text(json.dumps(given))
    yield path, app
    app.spelling = None


def decrypted(data: bytes, tmp_path: Path) -> bytes:
    identity = tmp_path / "identity"
    identity.write_text(OFFSITE_IDENTITY + "\n")
    return subprocess.run(["age", "-d", "-i", str(identity)], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    ("spelling", "upload_checked", "fetch_checked"),
    [
        (go_canonical, "the server's answer (its size, its ETag the MD5, the SHA-256 in its metadata)", "its SHA-256"),
        (upper_case_metadata, "the server's answer", "its SHA-256, the one its upload checked"),
        (mixed_case_metadata, "the server's answer", "its SHA-256, the one its upload checked"),
        (
            no_metadata,
            "reading it back and hashing it (the server answered no SHA-256 in its metadata)",
            "its ETag, the MD5 (the server answered no SHA-256 in its metadata)",
        ),
        (
            multipart_etag,
            "reading it back and hashing it (the server answered an ETag that is not the MD5 (",
            "its SHA-256, the one its upload checked",
        ),
        (
            neither,
            "reading it back and hashing it (the server answered no SHA-256 in its metadata)",
            "its size alone (the server answered no SHA-256 in its metadata, and an ETag that is not the MD5)",
        ),
    ],
)
def test_other_servers_spellings_are_uploaded_marked_and_restored(
    respelled: tuple[Path, Respelled],
    tmp_path: Path,
    capsys: Any,
    spelling: Any,
    upload_checked: str,
    fetch_checked: str,
) -> None:
    target, app = respelled
    backups = tmp_path / "backups"
    archive = a_backup(backups, "20261201T020000Z")
    app.spelling = spelling

    assert upload(target, backups) == 0, capsys.readouterr().err

    out = capsys.readouterr().out
    assert f"checked by {upload_checked}" in out
    assert (backups / "20261201T020000Z.tar.gz.offsite").exists()
    # The restore's part: listed, fetched, checked as the server's answers allow, and what decrypts is the backup.
    assert offsite.main(["list", str(target)]) == 0
    assert capsys.readouterr().out.split()[0] == "20261201T020000Z"
    fetched = tmp_path / "fetched.age"
    assert offsite.main(["fetch", str(target), "20261201T020000Z", str(fetched)]) == 0
    assert f"checked by {fetch_checked}" in capsys.readouterr().err
    assert decrypted(fetched.read_bytes(), tmp_path) == archive.read_bytes()


def test_the_sha256_is_read_whatever_the_spelling_of_its_header(respelled: tuple[Path, Respelled]) -> None:
    target, app = respelled
    client, bucket = s3(target), bucket_of(target)
    client.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"sha256": "abc"})
    for spelling in (go_canonical, upper_case_metadata, mixed_case_metadata):
        app.spelling = spelling
        held = client.head_object(Bucket=bucket, Key="k")
        # botocore keeps the name as the server spelled it: a plain lookup of "sha256" misses it.
        assert "sha256" not in held["Metadata"]
        assert offsite.metadata(held) == {"sha256": "abc"}


def test_a_copy_that_differs_is_refused_saying_what_was_sent_and_the_headers_as_received(
    respelled: tuple[Path, Respelled], tmp_path: Path, capsys: Any
) -> None:
    target, app = respelled
    backups = tmp_path / "backups"
    a_backup(backups, "20261201T020000Z")

    def tampered(headers: Headers) -> Headers:
        return [(n, "0" * 64 if n == "X-Amz-Meta-Sha256" else v) for n, v in go_canonical(headers)]

    app.spelling = tampered
    assert upload(target, backups) == 1

    assert not (backups / "20261201T020000Z.tar.gz.offsite").exists()
    err = capsys.readouterr().err
    sent = re.search(r"sent (\d+) bytes, MD5 ([0-9a-f]{32}), SHA-256 ([0-9a-f]{64}); the server answered (.*)\)", err)
    assert sent, err
    answered = sent.group(4)
    assert f"Content-Length: {sent.group(1)}" in answered
    assert f'Etag: "{sent.group(2)}"' in answered
    assert f"X-Amz-Meta-Sha256: {'0' * 64}" in answered

    # Read back, the bytes that differ are said with the headers of the answer that carried them.
    app.spelling = neither
    client = s3(target)
    client.put_object(Bucket=bucket_of(target), Key="20261201T020000Z.tar.gz.age", Body=b"other")
    md5 = hashlib.md5(b"other", usedforsecurity=False).hexdigest()
    read_back = rf"read back 5 bytes, MD5 {md5}, .*; the server answered .*Content-Length: 5"
    with pytest.raises(offsite.Mismatch, match=read_back):
        offsite.check_upload(client, bucket_of(target), "20261201T020000Z.tar.gz.age", (5, "0" * 32, "0" * 64))


def test_a_fetch_whose_size_differs_is_refused_whatever_the_server_keeps(
    respelled: tuple[Path, Respelled], tmp_path: Path
) -> None:
    class Longer:
        def __init__(self, client: Any) -> None:
            self.client = client

        def get_object(self, **asked: Any) -> Any:
            return {**self.client.get_object(**asked), "ContentLength": 6}

    target, app = respelled
    s3(target).put_object(Bucket=bucket_of(target), Key="20261201T020000Z.tar.gz.age", Body=b"short")
    app.spelling = neither

    with pytest.raises(offsite.Mismatch, match=r"read 5 bytes, .*; the server answered .*Content-Length: 5"):
        offsite.fetch(Longer(s3(target)), bucket_of(target), "20261201T020000Z", tmp_path / "bad")
    assert not list(tmp_path.glob("bad*"))


# The agent's part, under the fake.


def bucket_stdin(endpoint: str = "https://fra1.digitaloceanspaces.com") -> str:
    given = {
        "endpoint": endpoint,
        # moto's own region: it makes buckets elsewhere only with a location it knows.
        "region": "us-east-1",
        "bucket": BUCKET,
        "access_key_id": "DO00",
        "secret_access_key": "k",
    }
    return json.dumps(given)


def test_the_deploy_keeps_the_bucket_root_alone_and_installs_age_and_boto3() -> None:
    server, config = first_booted(), config_of("ip")
    with_certificate(server, config, config.host_names)
    release = bundle_of("ip")
    server.files[release.path] = release.data
    server.stdin = json.dumps({"environment": ENVIRONMENT, "webhooks": [], "offsite": json.loads(bucket_stdin())})

    assert main([release.release_id, release.path, PUBLIC_IPV4], server, config) == 0, server.stderr

    assert json.loads(server.files[config.layout.offsite_file]) == json.loads(bucket_stdin())
    assert server.modes[config.layout.offsite_file] == ("root:root", 0o600)
    assert server.ran("apt-get", "install", "--yes", "--quiet", "--no-install-recommends", "age")
    pip = server.ran(f"/opt/flaskdroplet/boto3-{config.boto3_version}/bin/pip")
    assert pip and pip[0][-1] == f"boto3=={config.boto3_version}"
    assert not server.exists(config.layout.notify_file)
    # The unit and its script are there, and the backup starts the unit once it succeeds.
    assert "OnSuccess=weather-offsite.service" in str(server.files["/etc/systemd/system/weather-backup.service"])
    assert server.exists(config.layout.offsite_script)


def test_a_deploy_without_the_bucket_removes_it_and_a_bad_one_is_refused() -> None:
    server, config, release = live_server()
    server.files[config.layout.offsite_file] = bucket_stdin()
    assert deploy(server, config, release) == 0
    assert not server.exists(config.layout.offsite_file)

    server.files[release.path] = release.data
    server.stdin = json.dumps({"environment": ENVIRONMENT, "webhooks": [], "offsite": {"bucket": 1}})
    assert main([release.release_id, release.path, PUBLIC_IPV4], server, config) == 1
    assert "the off-site bucket on the deploy's stdin does not read as JSON" in "".join(server.stderr)


def test_a_failed_upload_is_told_as_itself() -> None:
    server, config, _ = live_server()
    server.files[config.layout.notify_file] = json.dumps(
        {"webhooks": [{"form": "json", "url": "https://hooks.example/x"}]}
    )
    server.answer("systemctl", "show", "--property=Result", "--value", stdout="exit-code\n")

    assert main(["notify", "unit-failed", "weather-offsite.service"], server, config) == 0

    (post,) = server.posts
    told = json.loads(post[1])
    assert told["event"] == notify.OFFSITE_FAILED
    assert told["summary"] == f"the off-site copy of a backup failed; the backup stays in {BACKUPS}"


def restorable(server: Any, config: Any, names: str = "20261130T020000Z 10\n20261201T020000Z 12\n") -> None:
    server.files[config.layout.offsite_file] = bucket_stdin()
    script = [config.layout.offsite_python, config.layout.offsite_script]
    server.answer(*script, "list", stdout=names)
    server.stdin = OFFSITE_IDENTITY + "\n"

    def decrypted(argv: list[str]) -> Completed:
        server.files[argv[argv.index("--output") + 1]] = b"tar.gz"
        return Completed(0)

    server.answer_with(("age", "--decrypt"), decrypted)
    server.answer("tar", "-xzf")

    def took(argv: list[str]) -> Completed:
        server.files[f"{BACKUPS}/20261202T020000Z.tar.gz"] = b""
        return Completed(0)

    server.answer_with(("systemctl", "start", "weather-backup.service"), took)


def test_restore_from_off_site_fetches_the_newest_decrypts_it_with_the_identity_and_restores_it() -> None:
    server, config, _ = live_server()
    restorable(server, config)

    assert main(["restore", "--offsite"], server, config) == 0, server.stderr

    assert server.stdout == ["20261201T020000Z"]
    fetch = [
        config.layout.offsite_python,
        config.layout.offsite_script,
        "fetch",
        config.layout.offsite_file,
        "20261201T020000Z",
    ]
    assert server.ran(*fetch)
    (age,) = server.ran("age", "--decrypt")
    assert age[:4] == ["age", "--decrypt", "--identity", "-"]
    # The identity went on stdin alone: on no command line, in no file, in no log line.
    assert all(OFFSITE_IDENTITY not in " ".join(argv) for argv in server.commands)
    assert all(OFFSITE_IDENTITY not in str(content) for content in server.files.values())
    assert all(OFFSITE_IDENTITY not in line for line in server.stderr)
    assert server.exists(f"{BACKUPS}/20261201T020000Z.tar.gz.offsite")
    assert server.ran("tar", "-xzf", f"{BACKUPS}/20261201T020000Z.tar.gz")
    assert "off-site backups: 20261130T020000Z 20261201T020000Z" in "".join(server.stderr)


def test_restore_from_off_site_says_what_is_missing() -> None:
    server, config, _ = live_server()
    failures = []

    def failure() -> str:
        return [line.split("FAILED: ", 1)[1] for line in server.stderr if "FAILED: " in line][-1]

    assert main(["restore", "--offsite"], server, config) == 1
    failures.append(failure())
    restorable(server, config)
    server.stdin = ""
    assert main(["restore", "--offsite"], server, config) == 1
    failures.append(failure())
    server.stdin = OFFSITE_IDENTITY
    assert main(["restore", "--offsite", "20250101T000000Z"], server, config) == 1
    failures.append(failure())
    server.answer(config.layout.offsite_python, config.layout.offsite_script, "fetch", returncode=1)
    assert main(["restore", "--offsite"], server, config) == 1
    failures.append(failure())
    server.answer(config.layout.offsite_python, config.layout.offsite_script, "fetch")
    server.answer("age", "--decrypt", returncode=1)
    assert main(["restore", "--offsite"], server, config) == 1
    failures.append(failure())
    server.answer(config.layout.offsite_python, config.layout.offsite_script, "list", stdout="")
    assert main(["restore", "--offsite"], server, config) == 1
    failures.append(failure())
    server.answer(config.layout.offsite_python, config.layout.offsite_script, "list", returncode=1)
    assert main(["restore", "--offsite"], server, config) == 1
    failures.append(failure())

    assert failures == [
        "off-site copies are off on this server (offsiteRegion is empty, or no release has been deployed)",
        "no age identity on stdin: run the stack's restore_offsite output, which pipes `pulumi config get "
        'offsiteIdentity` into this command: eval "$(pulumi stack output restore_offsite) [BACKUP]"',
        "no off-site backup '20250101T000000Z'; off-site backups: 20261130T020000Z 20261201T020000Z",
        "the off-site backup 20261201T020000Z could not be fetched whole (above); nothing has changed",
        "the off-site backup 20261201T020000Z does not decrypt with the identity given (); "
        "is it the stack's offsiteIdentity? Nothing has changed",
        "the off-site bucket holds no backup to restore",
        "the off-site backups cannot be listed (above); nothing has changed",
    ]
    assert not server.ran("tar", "-xzf")


def test_the_tools_pins_agree() -> None:
    from core.policy import BOTO3_VERSION

    assert boto3.__version__ == BOTO3_VERSION
