"""The suite runs from a clone alone: a test that reaches beside the repository fails."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import PROJECT_DIR, WATCHING_BESIDE, OutsideRepositoryError

#: A neighbour of the repository that never exists: the guard must refuse it before any open.
BESIDE = PROJECT_DIR.parent / f"{PROJECT_DIR.name}-neighbour" / "settings.json"

watched = pytest.mark.skipif(
    not WATCHING_BESIDE, reason=f"the clone sits directly in {PROJECT_DIR.parent}, whose other entries are not watched"
)


@watched
def test_opening_a_file_beside_the_repository_is_refused() -> None:
    with pytest.raises(OutsideRepositoryError, match="only inside the repository"):
        BESIDE.read_text()


@watched
def test_listing_a_directory_beside_the_repository_is_refused() -> None:
    with pytest.raises(OutsideRepositoryError):
        os.listdir(BESIDE.parent)


@watched
def test_passing_a_path_beside_the_repository_to_a_program_is_refused() -> None:
    with pytest.raises(OutsideRepositoryError):
        subprocess.run(["cat", str(BESIDE)], check=False)


def test_files_inside_the_repository_and_of_the_system_stay_readable() -> None:
    assert (PROJECT_DIR / "Pulumi.yaml").read_text()
    assert (PROJECT_DIR / "tests" / ".." / "README.md").read_text()
    with open("/etc/os-release") as system_file:
        assert system_file.read()
