"""The suite runs from a clone alone: a test that reaches beside the repository fails."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import PROJECT_DIR, OutsideRepositoryError

BESIDE = PROJECT_DIR.parent / "shared" / "schemas" / "cloud-config-v1.schema.json"


def test_opening_a_file_beside_the_repository_is_refused() -> None:
    with pytest.raises(OutsideRepositoryError, match="only inside the repository"):
        BESIDE.read_text()


def test_listing_a_directory_beside_the_repository_is_refused() -> None:
    with pytest.raises(OutsideRepositoryError):
        os.listdir(BESIDE.parent)


def test_passing_a_path_beside_the_repository_to_a_program_is_refused() -> None:
    with pytest.raises(OutsideRepositoryError):
        subprocess.run(["cat", str(BESIDE)], check=False)


def test_files_inside_the_repository_and_of_the_system_stay_readable() -> None:
    assert (PROJECT_DIR / "Pulumi.yaml").read_text()
    assert (PROJECT_DIR / "tests" / ".." / "README.md").read_text()
    with open("/etc/os-release") as system_file:
        assert system_file.read()
