"""The app's state on its Volume: mounted before use, kept when the droplet is replaced, never formatted again.

The rehearsal's Volume is a sparse file given to the machine as a loop device, at the
path DigitalOcean gives a Volume (/dev/disk/by-id/scsi-0DO_Volume_NAME).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from core.plan import parse_deploy_output
from rehearsal import nspawn, run
from rehearsal.deploy import DeployError
from tests.e2e.conftest import Rehearsal, bring_up
from tests.e2e.test_notes import NOTES

pytestmark = pytest.mark.e2e

STATE_DIR = "/var/lib/notes"
CAP_SYS_RESOURCE = 24
DEVICE = "/dev/disk/by-id/scsi-0DO_Volume_notes-dev-state"


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up(NOTES)


def note_texts(rehearsal: Rehearsal) -> list[str]:
    status, _, body = rehearsal.get("/api/notes")
    assert status == 200, body
    return [note["text"] for note in json.loads(body)["notes"]]


def add_note(rehearsal: Rehearsal, text: str) -> None:
    status, _ = rehearsal.post_json("/api/notes", {"text": text})
    assert status == 201


def file_system_uuid(rehearsal: Rehearsal) -> str:
    return str(rehearsal.host().check_output(f"blkid -s UUID -o value {DEVICE}"))


def serving(rehearsal: Rehearsal, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if rehearsal.get("/health")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def deploy_again(rehearsal: Rehearsal) -> tuple[int, str]:
    """The deploy script run again by hand on the live release's bundle: its exit code and its log."""
    layout = rehearsal.layout
    result = rehearsal.host().run(
        f"sudo /bin/bash {layout.deploy_script} {rehearsal.release_id} {layout.bundle(rehearsal.release_id)} </dev/null"
    )
    return result.rc, result.stderr


def test_the_state_directory_is_the_volume_file_system(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    mount = json.loads(host.check_output(f"findmnt --json --output SOURCE,FSTYPE,OPTIONS --target {STATE_DIR}"))
    found = mount["filesystems"][0]

    assert found["source"] == DEVICE
    assert found["fstype"] == "ext4"
    assert {"nodev", "nosuid", "noexec", "noatime"} <= set(found["options"].split(","))
    assert host.service("var-lib-notes.mount").is_enabled
    assert host.file(f"{STATE_DIR}/notes.db").exists
    assert host.file(STATE_DIR).user == "notes"


def test_notes_survive_a_replacement_without_a_new_file_system(rehearsal: Rehearsal, figures: list[str]) -> None:
    add_note(rehearsal, "written before the replacement")
    uuid = file_system_uuid(rehearsal)
    old_machine = rehearsal.machine.instance_id

    start = time.monotonic()
    url, release_id, timings = run.up("dev", NOTES, replace=True)
    seconds = time.monotonic() - start
    rehearsal.machine = nspawn.Machine()

    assert rehearsal.machine.instance_id != old_machine
    assert (url, release_id) == (rehearsal.url, rehearsal.release_id)
    assert "written before the replacement" in note_texts(rehearsal)
    assert file_system_uuid(rehearsal) == uuid
    add_note(rehearsal, "written after the replacement")
    figures.append(f"scripts/rehearse replace: the new machine serves the data after {seconds:.1f} s ({timings})")


def test_without_its_volume_the_app_does_not_start_on_the_disk_underneath(rehearsal: Rehearsal) -> None:
    rehearsal.machine.reboot(run.progress, volume=None)
    # The boot finishes (degraded: the mount failed), and SSH is up for the deploy.
    assert rehearsal.machine.wait_for_boot() == "degraded"
    host = rehearsal.host()

    assert not host.mount_point(STATE_DIR).exists
    assert host.run("sudo systemctl start notes.service").rc != 0
    assert rehearsal.get("/api/notes")[0] >= 500
    # Nothing was written to the root disk where the Volume belongs.
    assert host.run(f"sudo find {STATE_DIR} -mindepth 1 -print -quit").stdout == ""

    code, log = deploy_again(rehearsal)
    assert code == 1
    assert f"the Volume is not attached: {DEVICE} does not exist" in log


def test_with_its_volume_back_the_notes_are_back(rehearsal: Rehearsal) -> None:
    volume = run.volume_of(rehearsal.settings)
    assert volume is not None
    rehearsal.machine.reboot(run.progress, volume=volume)

    assert serving(rehearsal)
    assert {"written before the replacement", "written after the replacement"} <= set(note_texts(rehearsal))


def test_a_server_without_a_volume_moves_its_state_onto_a_new_one(rehearsal: Rehearsal) -> None:
    # A stack from before Volumes: its state on the droplet's disk. The old Volume stays aside.
    run.up("dev", {**NOTES, "volumeSize": 0}, replace=True)
    rehearsal.machine = nspawn.Machine()
    add_note(rehearsal, "written on the droplet's disk")
    volume = run.volume_of(rehearsal.settings)
    assert volume is not None

    # That Volume holds notes of its own: the deploy keeps both and says so.
    rehearsal.machine.reboot(run.progress, volume=volume)
    assert serving(rehearsal)
    with pytest.raises(DeployError, match="the Volume already holds data and so does /var/lib/notes"):
        run.redeploy("dev", NOTES)
    assert note_texts(rehearsal) == ["written on the droplet's disk"]

    # An empty Volume takes the state; the copy on the droplet's disk stays aside.
    volume.image.unlink()
    rehearsal.machine.reboot(run.progress, volume=volume)
    assert serving(rehearsal)
    run.redeploy("dev", NOTES)

    host = rehearsal.host()
    assert host.mount_point(STATE_DIR).exists
    assert note_texts(rehearsal) == ["written on the droplet's disk"]
    assert host.file(f"{STATE_DIR}.before-volume/notes.db").exists


def test_a_larger_volume_size_grows_the_file_system_or_says_how(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    before = int(host.check_output(f"df --output=size -B1M {STATE_DIR} | tail -1"))
    _, ran = run.redeploy("dev", {**NOTES, "volumeSize": 11})
    after = int(host.check_output(f"df --output=size -B1M {STATE_DIR} | tail -1"))
    warnings = parse_deploy_output(ran["deploy"]).warnings

    # Growing ext4 online takes CAP_SYS_RESOURCE, which a droplet's root has; a rehearsal run in a container
    # whose own root lacks it cannot grant it: the deploy then goes on and says what to run.
    bounding = int(host.check_output("awk '/^CapBnd/ {print $2}' /proc/1/status"), 16)
    if bounding & (1 << CAP_SYS_RESOURCE):
        assert after - before > 900
        assert not [w for w in warnings if "Volume" in w]
    else:
        assert after == before
        assert any("growing it online failed" in w and f"resize2fs {DEVICE}" in w for w in warnings), warnings


def test_down_removes_the_volume(rehearsal: Rehearsal) -> None:
    assert any(nspawn.VOLUME_DIR.iterdir())
    run.down()

    assert not nspawn.VOLUME_DIR.exists()
