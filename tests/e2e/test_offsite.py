"""Off-site copies from the booted rehearsal to an S3-compatible server (moto's) on a host of its own.

moto's server and a webhook receiver run in a network namespace this module makes, at
addresses of the rehearsal's network that the machine reaches through the host, as a droplet
reaches Spaces and a webhook. Then, in order, as docs/offsite.md tells the disaster: a backup
goes up encrypted and checked, old copies go, the machine and its Volume are destroyed, a new
one restores the newest copy and serves the data written before; last, with the server stopped,
a backup stays here and its failed upload is told.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError

from agent.offsite import connect
from core.plan import restore_offsite_command
from rehearsal import nspawn, offsite, run
from tests.conftest import OFFSITE_CONFIG, OFFSITE_IDENTITY
from tests.e2e.conftest import Rehearsal, bring_up, host_namespace, pinned_host_key
from tests.e2e.test_notes import NOTES
from tests.e2e.test_notify import Receiver
from tests.e2e.test_volume import add_note, note_texts

pytestmark = pytest.mark.e2e

NETNS = "fdoffsite"
HOST_VETH = "ve-fd-offsite"
HOST_ADDRESS = "10.213.9.5"
SERVER_ADDRESS = "10.213.9.6"
S3_PORT = 5000
RECEIVER_PORT = 8099
ENDPOINT = f"http://{SERVER_ADDRESS}:{S3_PORT}"
CONFIG: dict[str, Any] = {
    **NOTES,
    **OFFSITE_CONFIG,
    "offsiteDays": 3,
    "notifyWebhooks": [f"http://{SERVER_ADDRESS}:{RECEIVER_PORT}/plain/t0ken"],
}
WAIT_SECONDS = 90
SQLITE_HEADER = b"SQLite format 3\0"
GZIP_MAGIC = b"\x1f\x8b"


class Host:
    """The namespace's two servers: moto's S3 and the webhook receiver."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.s3: subprocess.Popen[bytes] | None = None

    def start_s3(self) -> None:
        moto = [str(Path(sys.executable).parent / "moto_server"), "-H", SERVER_ADDRESS, "-p", str(S3_PORT)]
        self.s3 = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, *moto], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return
            except BotoCoreError:  # not up yet
                time.sleep(0.5)
        pytest.fail("moto's server did not start within 30 s")

    def stop_s3(self) -> None:
        if self.s3 is not None:
            self.s3.terminate()
            self.s3.wait(timeout=10)
            self.s3 = None

    def client(self) -> Any:
        return connect(
            {
                "endpoint": ENDPOINT,
                "region": offsite.REGION,
                "bucket": "",
                "access_key_id": offsite.ACCESS_KEY_ID,
                "secret_access_key": offsite.SECRET_ACCESS_KEY,
            }
        )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Host]:
    with host_namespace(NETNS, HOST_VETH, HOST_ADDRESS, SERVER_ADDRESS):
        receiver = Receiver(
            tmp_path_factory.mktemp("receiver") / "received.jsonl", NETNS, SERVER_ADDRESS, RECEIVER_PORT
        )
        receiver.start()
        found = Host(receiver)
        found.start_s3()
        monkeypatch_module.setenv(offsite.ENDPOINT_VARIABLE, ENDPOINT)
        yield found
        found.stop_s3()
        receiver.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def rehearsal(host: Host) -> Iterator[Rehearsal]:
    yield from bring_up(CONFIG)


def sudo(rehearsal: Rehearsal, command: str) -> Any:
    return rehearsal.host().run(f"sudo sh -c {json.dumps(command)}")


def started(rehearsal: Rehearsal) -> str:
    """When the off-site unit last started (0 before it ever has)."""
    unit = f"{rehearsal.layout.offsite_unit}.service"
    return str(sudo(rehearsal, f"systemctl show -P ExecMainStartTimestampMonotonic {unit}").stdout.strip())


def backup_and_upload(rehearsal: Rehearsal) -> tuple[str, str]:
    """A backup taken now, and the result of the off-site unit's run that it started."""
    unit = f"{rehearsal.layout.offsite_unit}.service"
    before = started(rehearsal)
    taken = sudo(rehearsal, f"/bin/bash {rehearsal.layout.deploy_script} backup")
    assert taken.rc == 0, taken.stderr
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        state = sudo(rehearsal, f"systemctl show -P ActiveState {unit}").stdout.strip()
        if started(rehearsal) != before and state in ("inactive", "failed"):
            return str(taken.stdout.strip()), str(sudo(rehearsal, f"systemctl show -P Result {unit}").stdout.strip())
        time.sleep(1)
    pytest.fail(f"{unit} did not run to its end within {WAIT_SECONDS} s of the backup")


def test_a_backup_goes_off_site_encrypted_and_its_checksum_matches(rehearsal: Rehearsal, host: Host) -> None:
    add_note(rehearsal, "written before the disaster")
    name, result = backup_and_upload(rehearsal)

    assert result == "success"
    held = host.client().get_object(Bucket=offsite.bucket_name(rehearsal.settings), Key=f"{name}.tar.gz.age")
    data = held["Body"].read()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert not data.startswith(GZIP_MAGIC) and SQLITE_HEADER not in data
    digest = hashlib.sha256(data).hexdigest()
    assert held["Metadata"]["sha256"] == digest
    mark = sudo(rehearsal, f"cat {rehearsal.layout.backups}/{name}.tar.gz.offsite").stdout.split()
    assert mark == [f"{name}.tar.gz.age", str(len(data)), digest]
    # The bucket's key is root's alone, and the identity is nowhere on the machine.
    assert sudo(rehearsal, f"stat -c %U:%a {rehearsal.layout.offsite_file}").stdout.strip() == "root:600"
    # A pattern that matches the identity, though its own text (in sudo's log of this command) does not.
    pattern = f"{OFFSITE_IDENTITY[:20]}[{OFFSITE_IDENTITY[20]}]{OFFSITE_IDENTITY[21:]}"
    found = sudo(rehearsal, f"grep -rlE '{pattern}' /etc /srv /var/lib /var/log /var/backups 2>/dev/null")
    assert found.stdout == ""


def test_retention_keeps_the_copies_of_the_days_configured(rehearsal: Rehearsal, host: Host) -> None:
    client = host.client()
    for old in ("20200101T020000Z", "20200102T020000Z"):
        client.put_object(Bucket=offsite.bucket_name(rehearsal.settings), Key=f"{old}.tar.gz.age", Body=b"old")
    newest, result = backup_and_upload(rehearsal)

    assert result == "success"
    keys = sorted(
        item["Key"] for item in client.list_objects_v2(Bucket=offsite.bucket_name(rehearsal.settings))["Contents"]
    )
    assert not [key for key in keys if key.startswith("2020")]
    assert f"{newest}.tar.gz.age" in keys


def test_with_the_machine_and_its_volume_gone_a_new_one_restores_the_newest_copy(
    rehearsal: Rehearsal, host: Host, figures: list[str]
) -> None:
    newest = sorted(
        item["Key"]
        for item in host.client().list_objects_v2(Bucket=offsite.bucket_name(rehearsal.settings))["Contents"]
    )[-1]
    # The disaster: droplet and Volume both gone. Then the stack is brought up again, on an empty Volume.
    run.down()
    assert not nspawn.VOLUME_DIR.exists()
    start = time.monotonic()
    rehearsal.url, rehearsal.release_id, _ = run.up("dev", CONFIG)
    rehearsal.machine = nspawn.Machine()
    assert "written before the disaster" not in note_texts(rehearsal)

    # The documented command: the identity on the restore's stdin, over SSH.
    restored = subprocess.run(
        [
            "ssh",
            *pinned_host_key(rehearsal.machine),
            "-i",
            str(rehearsal.machine.private_key),
            "-o",
            "BatchMode=yes",
            f"deploy@{rehearsal.machine.address}",
            restore_offsite_command(rehearsal.settings),
        ],
        input=OFFSITE_IDENTITY + "\n",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.monotonic() - start

    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip() == newest.removesuffix(".tar.gz.age")
    assert "off-site backups: " in restored.stderr
    assert "written before the disaster" in note_texts(rehearsal)
    assert OFFSITE_IDENTITY not in restored.stderr + restored.stdout
    figures.append(f"disaster recovery: a new machine serves the off-site backup's data after {seconds:.1f} s")


def test_with_the_server_stopped_the_backup_stays_and_the_failed_upload_is_told(
    rehearsal: Rehearsal, host: Host
) -> None:
    host.stop_s3()
    name, result = backup_and_upload(rehearsal)

    assert result == "exit-code"
    backups = rehearsal.layout.backups
    assert sudo(rehearsal, f"test -f {backups}/{name}.tar.gz").rc == 0
    assert sudo(rehearsal, f"test -e {backups}/{name}.tar.gz.offsite").rc != 0
    result = sudo(rehearsal, f"systemctl show -P Result {rehearsal.layout.backup_unit}.service").stdout.strip()
    assert result == "success"
    (told,) = host.receiver.wait_for(
        lambda message: json.loads(message["body"])["event"] == "offsite-upload-failed", count=1
    )
    assert json.loads(told["body"])["unit"] == f"{rehearsal.layout.offsite_unit}.service"
