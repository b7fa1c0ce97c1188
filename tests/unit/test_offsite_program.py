"""The off-site copies under mocks: the bucket, its lifecycle rule and the droplet's key, or none of it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from agent.inputs import DeployInput
from core.settings import SettingsError, age_recipient, parse_settings
from tests.conftest import OFFSITE_CONFIG, OFFSITE_IDENTITY, OFFSITE_RECIPIENT
from tests.pulumi_harness import (
    PROJECT_DIR,
    SPACES_ACCESS_KEY,
    SPACES_PROVIDER_CONFIG,
    SPACES_SECRET_KEY,
    ProgramRun,
    is_secret,
    reveal,
    run_program,
)

BUCKET = "digitalocean:index/spacesBucket:SpacesBucket"
SPACES_KEY = "digitalocean:index/spacesKey:SpacesKey"
OFFSITE = "flaskdroplet:ops:OffsiteStorage"


@pytest.fixture
def copied(good_config: dict[str, Any]) -> ProgramRun:
    result = run_program({**good_config, **OFFSITE_CONFIG, "offsiteDays": 10, **SPACES_PROVIDER_CONFIG})
    assert result.error is None, result.error
    return result


def deploy_stdin(run: ProgramRun) -> str:
    (deploy,) = [r for r in run.of_type("command:remote:Command") if r.name == "app-deploy"]
    assert is_secret(deploy.inputs["stdin"])
    return str(reveal(deploy.inputs["stdin"]))


def test_a_private_bucket_in_the_region_given_with_a_lifecycle_rule_past_the_days_kept(copied: ProgramRun) -> None:
    (bucket,) = copied.of_type(BUCKET)

    assert bucket.inputs["region"] == "fra1"
    assert bucket.inputs["acl"] == "private"
    (rule,) = bucket.inputs["lifecycleRules"]
    assert rule["enabled"] is True
    assert rule["expiration"] == {"days": 11}
    assert rule["abortIncompleteMultipartUploadDays"] == 1
    assert copied.outputs["offsite_bucket"] == "offsite-bucket-a1b2c3d"


def test_the_droplets_key_reaches_that_bucket_alone_and_reaches_it_as_a_secret(copied: ProgramRun) -> None:
    (key,) = copied.of_type(SPACES_KEY)
    assert key.inputs["grants"] == [{"bucket": "offsite-bucket-a1b2c3d", "permission": "readwrite"}]

    given = DeployInput.from_json(deploy_stdin(copied))
    assert given.webhooks == ()
    assert given.offsite and dataclasses.asdict(given.offsite) == {
        "endpoint": "https://fra1.digitaloceanspaces.com",
        "region": "fra1",
        "bucket": "offsite-bucket-a1b2c3d",
        "access_key_id": SPACES_ACCESS_KEY,
        "secret_access_key": SPACES_SECRET_KEY,
    }
    # The droplet gets the recipient, never the identity.
    assert OFFSITE_IDENTITY not in deploy_stdin(copied)
    for resource in copied.resources:
        assert OFFSITE_IDENTITY not in json.dumps(resource.inputs, default=str)
        if resource.type == SPACES_KEY:
            continue  # the key's own record holds what the provider made
        assert SPACES_SECRET_KEY not in json.dumps(
            {k: v for k, v in resource.inputs.items() if not is_secret(v)}, default=str
        )
    assert OFFSITE_IDENTITY not in json.dumps(copied.outputs, default=str)


def test_the_restore_command_sends_the_identity_on_stdin(copied: ProgramRun) -> None:
    command = copied.outputs["restore_offsite"]

    assert command.startswith("pulumi config get offsiteIdentity | ssh deploy@203.0.113.10 ")
    assert command.endswith("restore --offsite")


def test_without_an_offsite_region_nothing_is_made(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "offsiteIdentity": OFFSITE_IDENTITY, **SPACES_PROVIDER_CONFIG})
    assert run.error is None, run.error

    assert not run.of_type(BUCKET) and not run.of_type(SPACES_KEY) and not run.of_type(OFFSITE)
    assert run.outputs["offsite_bucket"] is None and run.outputs["restore_offsite"] is None
    assert DeployInput.from_json(deploy_stdin(run)).offsite is None


def test_without_the_accounts_spaces_key_nothing_is_made_and_the_message_says_how(
    good_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPACES_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("SPACES_SECRET_ACCESS_KEY", raising=False)
    run = run_program({**good_config, **OFFSITE_CONFIG})

    assert run.error is not None
    assert "digitalocean:spacesAccessId and digitalocean:spacesSecretKey is not set" in str(run.error)
    assert not run.of_type(BUCKET) and not run.of_type(SPACES_KEY)


def test_the_recipient_is_the_identitys_and_the_settings_hold_no_more(good_config: dict[str, Any]) -> None:
    settings = parse_settings({**good_config, **OFFSITE_CONFIG}, PROJECT_DIR)

    assert age_recipient(OFFSITE_IDENTITY) == OFFSITE_RECIPIENT == settings.backups.offsite_recipient
    # age-keygen's whole file reads too.
    assert age_recipient(f"# created: today\n# public key: {OFFSITE_RECIPIENT}\n{OFFSITE_IDENTITY}\n") == (
        OFFSITE_RECIPIENT
    )
    assert OFFSITE_IDENTITY not in repr(settings)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"offsiteRegion": "nyc1"}, "flask-droplet:offsiteRegion = 'nyc1': expected a Spaces region (nyc3, "),
        ({"offsiteRegion": "fra1"}, "flask-droplet:offsiteIdentity is not set, and offsiteRegion is"),
        ({**OFFSITE_CONFIG, "backupDays": 0}, "flask-droplet:offsiteRegion = 'fra1': expected empty with backupDays 0"),
        ({**OFFSITE_CONFIG, "offsiteDays": 0}, "flask-droplet:offsiteDays = 0: expected"),
        (
            {**OFFSITE_CONFIG, "offsiteIdentity": "AGE-SECRET-KEY-1NOTAKEY"},
            "flask-droplet:offsiteIdentity = ********: expected an age identity",
        ),
    ],
)
def test_off_site_settings_that_cannot_work_are_refused_by_name(
    good_config: dict[str, Any], given: dict[str, Any], problem: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings({**good_config, **given}, PROJECT_DIR)

    assert any(line.startswith(problem) for line in raised.value.problems), raised.value.problems
    assert "NOTAKEY" not in str(raised.value)
