"""What DigitalOcean's provider and API do to this program, which mocks alone would not show.

Each test pins the program's side: the inputs and resource options that keep the
provider from replacing what holds data, and the refusals, before any resource, of the
changes DigitalOcean would only do by replacing it or would answer with an error. The
mocks answer the program's invokes as the provider does (its field names, its words).
The behaviour each relies on is quoted where the program makes the choice.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.deployment import DIAL_BUDGET_SECONDS, DIAL_ERROR_LIMIT, PER_DIAL_TIMEOUT_SECONDS, dial_wait_seconds
from components.fleet import VPC_DELETE_TIMEOUT
from components.monitoring import uptime_regions
from components.webserver import key_name
from core.cloudinit import render_user_data
from core.settings import SettingsError, parse_settings, ssh_key_fingerprint
from core.sshagent import SSHD_MAX_AUTH_TRIES, private_key_public_line
from tests.conftest import example_public_key
from tests.do_api import AccountAnswer
from tests.pulumi_harness import (
    DEFAULT_VPC_ID,
    DISTRIBUTION_IMAGES,
    PROJECT_DIR,
    STACK,
    TEST_HOST_KEYS,
    Account,
    ProgramRun,
    default_vpc,
    droplet_id,
    run_program,
)

DROPLET = "digitalocean:index/droplet:Droplet"
SSH_KEY = "digitalocean:index/sshKey:SshKey"
VOLUME = "digitalocean:index/volume:Volume"
VPC = "digitalocean:index/vpc:Vpc"
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
DATABASE_DB = "digitalocean:index/databaseDb:DatabaseDb"
UPTIME_ALERT = "digitalocean:index/uptimeAlert:UptimeAlert"
DNS_RECORD = "digitalocean:index/dnsRecord:DnsRecord"
STACK_TAG = f"flask-droplet:{STACK}"
#: The periods DigitalOcean's uptime alerts take (`period` in `digitalocean/uptime/resource_uptime_alert.go`).
UPTIME_ALERT_PERIODS = ("2m", "3m", "5m", "10m", "15m", "30m", "1h")


def ran(config: dict[str, Any], **options: Any) -> ProgramRun:
    run = run_program(config, **options)
    assert run.error is None, run.error
    return run


def refused(config: dict[str, Any], **options: Any) -> str:
    """The refusal's text; asserts nothing was declared before it."""
    run = run_program(config, **options)
    assert isinstance(run.error, SettingsError), run.error
    assert run.resources == []
    return str(run.error)


def droplet_of_stack(index: int = 0, **fields: Any) -> dict[str, Any]:
    """One of the stack's droplets as `getDroplets` lists it (named by Pulumi: its logical name and a suffix)."""
    logical = "web-droplet" if index == 0 else f"web-{index + 1}-droplet"
    return {
        "id": int(droplet_id(index)),
        "name": f"{logical}-1a2b3c4",
        "region": "nyc3",
        "image": "ubuntu-24-04-x64",
        "size": "s-1vcpu-1gb",
        "tags": ["flask-droplet", STACK_TAG],
        "vpcUuid": DEFAULT_VPC_ID,
        "volumeIds": [],
        "ipv6Address": f"2001:db8::{10 + index}",
        **fields,
    }


def postgres(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**config, "database": "postgres", **extra}


# 1. SSH keys: ForceNew on the droplet (`ssh_keys`) and on the key (`public_key`).


def test_item_01_ssh_key_changes_replace_neither_droplet_nor_key(good_config: dict[str, Any]) -> None:
    first, second = example_public_key("a"), example_public_key("b")
    both = ran({**good_config, "sshPublicKeys": [first, second]})
    # The first key removed, and the second's comment edited.
    edited = second.rsplit(" ", 1)[0] + " laptop@home"
    rotated = ran({**good_config, "sshPublicKeys": [edited]}, agent_keys=[second])

    def keys(run: ProgramRun) -> dict[str, Any]:
        return {key.name: key for key in run.of_type(SSH_KEY)}

    second_name = key_name("web", ssh_key_fingerprint(second))
    assert sorted(keys(both)) == sorted([key_name("web", ssh_key_fingerprint(first)), second_name])
    # The second key is the same resource after the first is gone and its comment changed: not replaced.
    assert list(keys(rotated)) == [second_name]
    assert keys(rotated)[second_name].urn == keys(both)[second_name].urn
    assert "publicKey" in keys(rotated)[second_name].ignore_changes
    # Existing stacks named keys by position: the alias carries each over where it stands today.
    assert keys(both)[second_name].alias_names == ("web-key-1",)
    assert keys(rotated)[second_name].alias_names == ("web-key-0",)
    # The droplet keeps the keys it was created with: a new list would replace it.
    for run in (both, rotated):
        droplet = run.one(DROPLET)
        assert {"sshKeys", "userData"} <= set(droplet.ignore_changes)
        assert all(key.urn in droplet.dependencies for key in run.of_type(SSH_KEY))
    assert both.one(DROPLET).inputs["sshKeys"] == [ssh_key_fingerprint(first), ssh_key_fingerprint(second)]
    assert ssh_key_fingerprint(edited) == ssh_key_fingerprint(second)


def account_key(owner: str, public_key: str, ident: int = 1) -> dict[str, Any]:
    """An SSH key as `getSshKeys` lists it: registered by a stack (`owner` its tag), or by the user (a name)."""
    fingerprint = ssh_key_fingerprint(public_key)
    name = f"{owner} {fingerprint}" if owner.startswith("flask-droplet:") else owner
    return {"id": ident, "name": name, "publicKey": public_key, "fingerprint": fingerprint}


def authorized_keys(run: ProgramRun) -> list[str]:
    """The deploy user's keys in the manifest the deploy ships, as the droplet gets them."""
    manifest = json.loads(deployed_file(run, "server/manifest.json"))
    entry = next(e for e in manifest if e["path"] == "/home/deploy/.ssh/authorized_keys")
    assert (entry["owner"], entry["mode"], entry.get("deploy")) == ("deploy:deploy", "0600", True)
    return [line for line in entry["content"].splitlines() if line and not line.startswith("#")]


def test_item_01_a_key_the_account_holds_is_used_as_it_is_never_registered_again(
    good_config: dict[str, Any],
) -> None:
    key = example_public_key("a")
    # The user's first droplet made them register it (DigitalOcean asks for a key then).
    account = Account(ssh_keys=[account_key("laptop", key)])
    first = ran(good_config, account=account)
    # The next run, with the droplet there, makes the same choice.
    second = ran(good_config, account=Account(droplets=[droplet_of_stack()], ssh_keys=[account_key("laptop", key)]))

    for run in (first, second):
        assert run.of_type(SSH_KEY) == []
        assert run.one(DROPLET).inputs["sshKeys"] == [ssh_key_fingerprint(key)]
        assert authorized_keys(run) == [key]
    # Nothing paid for waits on a registration that could fail: the Volume comes after the keys.
    assert ran(good_config).one(SSH_KEY).urn in ran(good_config).one(VOLUME).dependencies


def test_item_01_a_key_this_stack_registered_stays_its_own(good_config: dict[str, Any]) -> None:
    key = example_public_key("a")
    own = ran(good_config, account=Account(droplets=[droplet_of_stack()], ssh_keys=[account_key(STACK_TAG, key)]))

    assert own.one(SSH_KEY).inputs["name"] == f"{STACK_TAG} {ssh_key_fingerprint(key)}"
    assert own.one(SSH_KEY).urn in own.one(DROPLET).dependencies


def test_item_01_two_stacks_share_a_key_and_either_outlives_the_other(good_config: dict[str, Any]) -> None:
    key = example_public_key("a")
    dev = account_key("flask-droplet:dev", key)
    # The production stack comes up while dev holds the key: it uses dev's.
    production = ran(good_config, account=Account(ssh_keys=[dev]))
    assert production.of_type(SSH_KEY) == []
    # dev is destroyed, its key with it: production's next run registers the key as its own, and its droplet,
    # created with dev's key, stays as it is (its keys are not an input that changes it).
    after = ran(good_config, account=Account(droplets=[droplet_of_stack()]))
    assert after.one(SSH_KEY).inputs["name"] == f"{STACK_TAG} {ssh_key_fingerprint(key)}"
    droplet = after.one(DROPLET)
    assert "sshKeys" in droplet.ignore_changes
    assert droplet.inputs["sshKeys"] == production.one(DROPLET).inputs["sshKeys"]


def test_item_01_a_fingerprint_the_account_does_not_hold_is_refused_by_name(good_config: dict[str, Any]) -> None:
    held, missing = example_public_key("b"), example_public_key("c")
    config = {**good_config, "sshKeyFingerprints": [ssh_key_fingerprint(missing), "4711"]}

    message = refused(config, account=Account(ssh_keys=[account_key("laptop", held, ident=12)]))

    assert f"flask-droplet:sshKeyFingerprints = '{ssh_key_fingerprint(missing)}': expected a key this" in message
    assert "flask-droplet:sshKeyFingerprints = '4711'" in message
    assert f"it holds {ssh_key_fingerprint(held)} (laptop)" in message
    # By fingerprint or by id, a key the account holds reaches the deploy user with its public key.
    for wanted in (ssh_key_fingerprint(held), "12"):
        run = ran(
            {**good_config, "sshKeyFingerprints": [wanted]},
            account=Account(ssh_keys=[account_key("laptop", held, ident=12)]),
        )
        assert authorized_keys(run) == [good_config["sshPublicKeys"][0], held]


def test_item_01_a_key_added_or_removed_is_a_deploy_and_no_droplet_is_replaced(good_config: dict[str, Any]) -> None:
    old, new = example_public_key("a"), example_public_key("n")
    account = Account(droplets=[droplet_of_stack()], ssh_keys=[account_key(STACK_TAG, old)])
    before = ran({**good_config, "sshPublicKeys": [old]}, account=account)
    both = ran({**good_config, "sshPublicKeys": [old, new]}, account=account)
    rotated = ran({**good_config, "sshPublicKeys": [new]}, account=account, agent_keys=[new])

    assert authorized_keys(before) == [old]
    assert authorized_keys(both) == [old, new]
    assert authorized_keys(rotated) == [new]
    for run in (both, rotated):
        droplet = run.one(DROPLET)
        # The droplet keeps the keys and user-data it was created with; the deploy carries the change.
        assert {"sshKeys", "userData"} <= set(droplet.ignore_changes)
        assert host_key_generation(run) == host_key_generation(before)
        assert deploy_triggers(run)["bundle"] != deploy_triggers(before)["bundle"]


def host_key_generation(run: ProgramRun) -> Any:
    return next(r for r in run.resources if r.name == "web-droplet-host-key").inputs["generation"]


def deploy_triggers(run: ProgramRun) -> dict[str, Any]:
    """Each deploy step's triggers, by the step's name without the droplet's."""
    return {
        r.name.rsplit("-", 1)[-1]: r.inputs.get("triggers")
        for r in run.resources
        if r.type in ("command:remote:Command", "command:remote:CopyToRemote")
    }


def deployed_file(run: ProgramRun, name: str) -> str:
    """A file of the release bundle the deploy uploads."""
    bundle = next(r for r in run.resources if r.type == "command:remote:CopyToRemote" and r.name.endswith("-bundle"))
    asset = bundle.inputs["source"]
    assert isinstance(asset, pulumi.FileAsset)
    with tarfile.open(str(asset.path)) as tar:
        member = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(name)))
        assert member is not None
        return member.read().decode()


# 1b. The account's first read: a token that cannot work is one line, before anything else.


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "digitalocean:token = ********: DigitalOcean refused it (401 Unable to authenticate you): the token is"),
        (403, "digitalocean:token = ********: DigitalOcean refused a read with it (403 You do not have access"),
        (429, "answered 429 API Rate limit exceeded.: this account's rate limit"),
        (500, "answered 500 Server was unable to give you a response.: a fault on DigitalOcean's side"),
    ],
)
def test_item_01b_an_api_refusal_is_one_line_before_any_read(
    good_config: dict[str, Any], status: int, words: str
) -> None:
    run = run_program(good_config, account=Account(api=AccountAnswer(status=status)))

    assert isinstance(run.error, SettingsError) and isinstance(run.error, pulumi.RunError)
    assert words in str(run.error)
    assert len(run.error.problems) == 1
    assert run.calls == [] and run.resources == []


def test_item_01b_a_wrong_token_is_told_with_config_problems_together(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "digitalocean:token": "dop_v1_wrong", "workers": 999})

    assert isinstance(run.error, SettingsError)
    message = str(run.error)
    assert "flask-droplet:workers = 999" in message and "401 Unable to authenticate you" in message
    assert "dop_v1_wrong" not in message
    assert run.resources == []


def test_item_01b_a_token_from_the_environment_is_named_as_set_there(
    good_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_wrong")
    config = {**good_config, "digitalocean:token": ""}

    message = str(run_program(config).error)

    assert "DIGITALOCEAN_TOKEN = ********: DigitalOcean refused it (401" in message
    assert "export DIGITALOCEAN_TOKEN=dop_v1_..." in message


def test_item_01_the_fingerprint_is_digitaloceans_md5_of_the_key() -> None:
    # The value `ssh-keygen -l -E md5 -f` prints for this key line (without its "MD5:" prefix).
    key = example_public_key("a")
    assert re.fullmatch(r"([0-9a-f]{2}:){15}[0-9a-f]{2}", ssh_key_fingerprint(key))
    assert ssh_key_fingerprint(key) == ssh_key_fingerprint(key.replace("test@example", "other comment"))


# 2. The certificate alert's period: required by DigitalOcean, sent empty by the provider when unset.


def test_item_02_uptime_alert_sends_period(good_config: dict[str, Any]) -> None:
    run = ran({**good_config, "alertEmails": ["ops@example.org"]})

    alerts = {alert.inputs["type"]: alert.inputs for alert in run.of_type(UPTIME_ALERT)}
    assert sorted(alerts) == ["down", "latency", "ssl_expiry"]
    for kind, alert in alerts.items():
        assert alert.get("period") in UPTIME_ALERT_PERIODS, kind


# 3. The region's first VPC becomes its default, which DigitalOcean never deletes.


def test_item_03_the_regions_first_vpc_is_refused(good_config: dict[str, Any]) -> None:
    message = refused(postgres(good_config), account=Account(vpcs=[]))

    assert "flask-droplet:region = 'nyc3': this account has no VPC in nyc3 yet" in message
    assert "doctl vpcs create --name default-nyc3 --region nyc3" in message
    # A region that has its default takes the stack's own VPC beside it.
    run = ran(postgres(good_config), account=Account(vpcs=[default_vpc("nyc3")]))
    assert run.one(VPC).inputs["region"] == "nyc3"
    # One droplet alone needs no VPC, and asks for none.
    assert "digitalocean:index/getVpc:getVpc" not in ran(good_config, account=Account(vpcs=[])).calls


def test_item_03_a_stack_whose_vpc_became_the_default_is_told_how_to_destroy(good_config: dict[str, Any]) -> None:
    own = default_vpc("nyc3", name="network-1a2b3c4", description=f"{STACK_TAG}: the app's droplets, their balancer")

    message = refused(postgres(good_config), account=Account(vpcs=[own]))

    assert "this stack's VPC (network-1a2b3c4) is the region's default" in message
    assert "doctl vpcs update ITS_ID --default=true" in message


# 4. The cluster's delete returns before it leaves the VPC ("Can not delete VPC with members").


def test_item_04_vpc_delete_waits_for_the_cluster_to_leave(good_config: dict[str, Any]) -> None:
    run = ran(postgres(good_config))

    vpc, cluster = run.one(VPC), run.one(CLUSTER)
    # The provider retries the VPC's delete for its delete timeout (2 minutes unless told).
    assert vpc.delete_timeout == VPC_DELETE_TIMEOUT == "20m"
    # Deleted after the cluster, which takes its address in it.
    assert vpc.urn in cluster.dependencies
    fleet = ran(postgres(good_config, instances=2, https=False))
    assert fleet.one(VPC).delete_timeout == "20m"


# 5. A new size is a resize in place, powered off, and with the disk's resize it could never be undone.


def test_item_05_size_is_a_resize_that_can_be_undone_one_droplet_at_a_time(good_config: dict[str, Any]) -> None:
    config = postgres(good_config, instances=3, https=False, size="s-2vcpu-2gb")
    # In the stack's VPC already, as a fleet's droplets are.
    existing = [droplet_of_stack(index, vpcUuid="network-id") for index in range(3)]
    run = ran(config, existing_droplets=existing)

    droplets = sorted(run.of_type(DROPLET), key=lambda d: d.name)
    assert [d.name for d in droplets] == ["web-2-droplet", "web-3-droplet", "web-droplet"]
    first, second, third = droplets[2], droplets[0], droplets[1]
    for droplet in (first, second, third):
        assert droplet.inputs["resizeDisk"] is False
        assert droplet.inputs["size"] == "s-2vcpu-2gb"
        # A resize needs no allowReplace: nothing is replaced.
        assert "userData" in droplet.ignore_changes
    # One droplet after another: the balancer always has the others while one is powered off.
    assert first.urn in second.dependencies and second.urn in third.dependencies


# 6. The stores that hold data: a Volume's name and description and a database's name are ForceNew; a region
# change replaces the VPC (ForceNew `region`) and with it the cluster (ForceNew `private_network_uuid`).


def test_item_06_app_name_keeps_the_volume_and_the_database(good_config: dict[str, Any]) -> None:
    run = ran(postgres(good_config))
    assert "description" in run.one(VOLUME).ignore_changes
    assert "name" in run.one(DATABASE_DB).ignore_changes

    attached = [droplet_of_stack(volumeIds=["volume-1"])]
    volume = {"id": "volume-1", "name": "weather-test-state", "region": "nyc3", "size": 10}
    renamed = refused({**good_config, "appName": "forecast"}, account=Account(droplets=attached, volumes=[volume]))
    assert "flask-droplet:appName = 'forecast'" in renamed
    assert "none named forecast-test-state is in nyc3" in renamed and "the app's data lost" in renamed
    # The same name finds its Volume, and goes ahead.
    ran(good_config, account=Account(droplets=attached, volumes=[volume]))


def test_item_06_a_region_change_on_a_postgres_stack_is_refused_unless_allowed(good_config: dict[str, Any]) -> None:
    config = postgres(good_config, volumeSize=0, region="ams3")
    existing = [droplet_of_stack(region="nyc3")]

    message = refused(config, existing_droplets=existing)

    assert "flask-droplet:allowReplace = false" in message
    assert "web-droplet (region nyc3 -> ams3" in message
    assert "the stack's VPC and its database cluster are replaced with them, and the database is lost" in message
    allowed = ran({**config, "allowReplace": True}, existing_droplets=existing)
    assert allowed.one(VPC).inputs["region"] == allowed.one(CLUSTER).inputs["region"] == "ams3"


def test_item_06_moving_into_the_stacks_vpc_replaces_the_droplet_only_when_allowed(good_config: dict[str, Any]) -> None:
    # A one-droplet stack that takes a database: its droplet, in the region's default VPC, moves into the stack's.
    existing = [droplet_of_stack(vpcUuid=DEFAULT_VPC_ID)]

    message = refused(postgres(good_config), existing_droplets=existing)

    assert "web-droplet (into the stack's VPC)" in message
    assert "(the Volume weather-test-state stays)" in message


# 7. Standby nodes: every plan but the smallest.


def test_item_07_standby_nodes_need_a_larger_plan(good_config: dict[str, Any]) -> None:
    message = refused(postgres(good_config, databaseNodes=2))

    assert "flask-droplet:databaseNodes = 2: expected 1 with databaseSize = 'db-s-1vcpu-1gb'" in message
    run = ran(postgres(good_config, databaseNodes=2, databaseSize="db-s-1vcpu-2gb"))
    assert run.one(CLUSTER).inputs["nodeCount"] == 2


# 8. volumeSize back to 0: leaving out volume_ids detaches nothing, and an attached Volume's delete answers 409.


def test_item_08_volume_size_to_zero_is_refused_while_attached(good_config: dict[str, Any]) -> None:
    attached = [droplet_of_stack(volumeIds=["volume-1"])]

    message = refused({**good_config, "volumeSize": 0}, existing_droplets=attached)

    assert "flask-droplet:volumeSize = 0: this stack's droplet keeps /var/lib/weather on a Volume" in message
    assert "doctl compute volume-action detach VOLUME_ID DROPLET_ID" in message
    # Detached first (as the message says), the Volume goes.
    run = ran({**good_config, "volumeSize": 0}, existing_droplets=[droplet_of_stack()])
    assert run.of_type(VOLUME) == []


# 9. An ignored input is carried into a replacement: the new droplet would boot the first user-data.


def test_item_09_a_replaced_droplet_boots_the_current_user_data(good_config: dict[str, Any]) -> None:
    config = {**good_config, "image": "170000001", "allowReplace": True}
    old_image = [droplet_of_stack(image="ubuntu-24-04-x64")]

    replaced = ran(config, existing_droplets=old_image).one(DROPLET)
    kept = ran(good_config, existing_droplets=[droplet_of_stack()]).one(DROPLET)

    assert replaced.ignore_changes == ()
    settings = parse_settings(config, PROJECT_DIR, STACK)
    assert replaced.inputs["userData"] == render_user_data(settings, TEST_HOST_KEYS[0])
    assert replaced.delete_before_replace
    assert set(kept.ignore_changes) == {"image", "userData", "sshKeys"}
    # Without allowReplace the new image is refused, and says what the replacement loses.
    message = refused({**config, "allowReplace": False}, existing_droplets=old_image)
    assert "web-droplet (image ubuntu-24-04-x64 -> 170000001)" in message
    assert "Each new droplet boots from the current user-data" in message


# 9b. An image has two names, its slug and its id; DigitalOcean lists a droplet's by its slug, while the
# provider compares `image` with the name the droplet was created with.


def test_item_09b_the_same_image_under_its_other_name_is_no_change(good_config: dict[str, Any]) -> None:
    by_id = {**good_config, "image": str(DISTRIBUTION_IMAGES[0]["id"])}

    kept = ran(by_id, existing_droplets=[droplet_of_stack(image="ubuntu-24-04-x64")])

    assert "image" in kept.one(DROPLET).ignore_changes
    assert kept.named("web-droplet-host-key").ignore_changes == ("generation",)


def test_item_09b_a_fleet_looks_its_image_up_once(good_config: dict[str, Any]) -> None:
    by_id = postgres(good_config, instances=3, https=False, image=str(DISTRIBUTION_IMAGES[0]["id"]))
    existing = [droplet_of_stack(index, image="ubuntu-24-04-x64", vpcUuid="network-id") for index in range(3)]

    run = ran(by_id, existing_droplets=existing)

    assert run.calls.count("digitalocean:index/getImage:getImage") == 1
    assert all("image" in droplet.ignore_changes for droplet in run.of_type(DROPLET))


def test_item_09b_a_slug_after_a_snapshot_is_a_new_image_refused_without_allow_replace(
    good_config: dict[str, Any],
) -> None:
    # A droplet made from a snapshot (which has no slug) is listed by the snapshot's id.
    snapshot = [droplet_of_stack(image="170000001")]

    message = refused(good_config, existing_droplets=snapshot)
    replaced = ran({**good_config, "allowReplace": True}, existing_droplets=snapshot).one(DROPLET)

    assert "web-droplet (image 170000001 -> ubuntu-24-04-x64)" in message
    assert replaced.ignore_changes == ()


def test_item_09b_a_slug_digitalocean_no_longer_serves_is_another_image(good_config: dict[str, Any]) -> None:
    by_id = {**good_config, "image": str(DISTRIBUTION_IMAGES[0]["id"])}

    message = refused(by_id, existing_droplets=[droplet_of_stack(image="ubuntu-23-10-x64")])

    assert "web-droplet (image ubuntu-23-10-x64 -> 169034872)" in message


# 10. MaxAuthTries 3 against the SSH agent's keys, offered in the agent's order.


def test_item_10_agent_keys_past_max_auth_tries_are_refused(good_config: dict[str, Any]) -> None:
    stack_key = good_config["sshPublicKeys"][0]
    others = [example_public_key(seed) for seed in "xyz"]

    message = refused(good_config, agent_keys=[*others, stack_key])

    assert "flask-droplet:sshPrivateKey is not set" in message
    assert "it is key 4 of 4 there" in message and "fail2ban" in message
    assert "no SSH agent is running" in refused(good_config, agent_keys=None)
    assert "none of its 3 keys" in refused(good_config, agent_keys=others)
    ran(good_config, agent_keys=[*others[:2], stack_key])
    private_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
    ran({**good_config, "sshPrivateKey": private_key}, agent_keys=None)


def openssh_private_key(public_key: str) -> str:
    """An OpenSSH private key file whose public part is `public_key` (the private part is not read)."""

    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    blob = base64.b64decode(public_key.split()[1])
    body = b"openssh-key-v1\0" + string(b"none") + string(b"none") + string(b"") + struct.pack(">I", 1)
    body += string(blob) + string(b"\0" * 8)
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + 70] for i in range(0, len(encoded), 70)]
    return "\n".join(["-----BEGIN OPENSSH PRIVATE KEY-----", *lines, "-----END OPENSSH PRIVATE KEY-----", ""])


def test_item_10_a_private_key_the_droplet_would_refuse_is_refused(good_config: dict[str, Any]) -> None:
    other = example_public_key("o")

    message = refused({**good_config, "sshPrivateKey": openssh_private_key(other)}, agent_keys=None)

    assert f"its public key ({ssh_key_fingerprint(other)}) is none of sshPublicKeys" in message
    assert "********" in message and "BEGIN" not in message
    ran({**good_config, "sshPrivateKey": openssh_private_key(good_config["sshPublicKeys"][0])}, agent_keys=None)
    assert private_key_public_line(openssh_private_key(other)) == other.rsplit(" ", 1)[0]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_item_10_the_public_key_read_is_the_one_ssh_keygen_writes(tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", str(key)], check=True)

    public = key.with_suffix(".pub").read_text().split()
    assert private_key_public_line(key.read_text()) == f"{public[0]} {public[1]}"


def test_item_10_the_check_counts_the_tries_sshd_allows() -> None:
    sshd = (PROJECT_DIR / "cloud-init" / "sshd.conf.j2").read_text()
    assert re.search(r"^MaxAuthTries (\d+)$", sshd, re.MULTILINE)[1] == str(SSHD_MAX_AUTH_TRIES)  # type: ignore[index]


# 11. DNS records beside whatever the zone holds.


def record(name: str, kind: str, value: str, ident: int = 1) -> dict[str, Any]:
    """A record as `getRecords` lists it."""
    return {"id": ident, "domain": "example.org", "name": name, "type": kind, "value": value, "ttl": 1800}


def test_item_11_records_already_in_the_zone_are_refused(good_config: dict[str, Any]) -> None:
    config = {**good_config, "domain": "weather.example.org", "dnsZone": "example.org", "wwwAlias": True}

    cname = refused(config, account=Account(records=[record("www.weather", "CNAME", "weather.example.org.")]))
    old_a = refused(config, account=Account(records=[record("weather", "A", "198.51.100.7")]))

    assert "the zone already has CNAME weather.example.org. at 'www.weather'" in cname
    assert "the zone already has A 198.51.100.7 at 'weather'" in old_a
    # An existing stack's own records (one A, the AAAA at its droplet) are no problem; a second A is.
    own = [record("weather", "A", "203.0.113.50"), record("weather", "AAAA", "2001:db8::10", 2)]
    kept = ran(config, account=Account(droplets=[droplet_of_stack()], records=own))
    assert sorted(r.inputs["type"] for r in kept.of_type(DNS_RECORD)) == ["A", "A", "AAAA", "AAAA"]
    second = [*own, record("weather", "A", "198.51.100.7", 3)]
    assert "A 198.51.100.7 at 'weather'" in refused(
        config, account=Account(droplets=[droplet_of_stack()], records=second)
    )
    # Records of other names are left alone.
    ran(config, account=Account(records=[record("mail", "A", "198.51.100.9")]))


def test_item_11_a_zone_the_account_does_not_hold_is_refused_by_name_with_the_others(
    good_config: dict[str, Any],
) -> None:
    config = {**good_config, "domain": "weather.example.org", "dnsZone": "example.org"}

    message = refused({**config, "alertEmails": ["oncall@example.net"]}, account=Account(domains=["example.net"]))

    assert "flask-droplet:dnsZone = 'example.org': expected a domain this DigitalOcean account holds" in message
    assert "doctl compute domain create example.org" in message
    assert "404" not in message
    assert "flask-droplet:alertEmails = 'oncall@example.net'" in message
    ran(config, account=Account(domains=["example.org"]))


def test_item_11_a_lost_droplet_comes_back_and_its_records_stay_the_stacks(good_config: dict[str, Any]) -> None:
    config = {**good_config, "domain": "weather.example.org", "dnsZone": "example.org"}
    # The droplet was deleted by hand: DigitalOcean keeps the Reserved IP, unassigned, and the records stay.
    own = [record("weather", "A", "203.0.113.50"), record("weather", "AAAA", "2001:db8::99", 2)]
    kept_ip = {"ipAddress": "203.0.113.50", "region": "nyc3", "dropletId": 0, "urn": "do:reservedip:203.0.113.50"}

    back = ran(config, account=Account(records=own, reserved_ips=[kept_ip]))

    # The next run makes the droplet and declares the same records, the AAAA at the new droplet.
    assert back.one(DROPLET).inputs["region"] == "nyc3"
    assert sorted((r.inputs["type"], r.inputs["name"]) for r in back.of_type(DNS_RECORD)) == [
        ("A", "weather"),
        ("AAAA", "weather"),
    ]
    # A Reserved IP some droplet holds, another region's, or an address that is none of the account's: not ours.
    for reserved_ips in ([{**kept_ip, "dropletId": 4711}], [{**kept_ip, "region": "ams3"}], []):
        message = refused(config, account=Account(records=own, reserved_ips=reserved_ips))
        assert "the zone already has A 203.0.113.50, AAAA 2001:db8::99 at 'weather'" in message


# 12. Alerts: DigitalOcean refuses uptime alerts to an address not verified on the account, after the check.


def test_item_12_an_alert_address_the_account_has_not_verified_is_refused_before_any_resource(
    good_config: dict[str, Any],
) -> None:
    other = refused({**good_config, "alertEmails": ["ops@example.org", "oncall@example.net"]})
    unverified = refused(
        {**good_config, "alertEmails": ["ops@example.org"]},
        account=Account(api=AccountAnswer(email="ops@example.org", email_verified=False)),
    )

    assert "flask-droplet:alertEmails = 'oncall@example.net': expected an address verified on the" in other
    assert "this token's account is ops@example.org" in other
    assert "'ops@example.org'" not in other
    assert "flask-droplet:alertEmails = 'ops@example.org': DigitalOcean sends alerts only to verified" in unverified
    # In any case, the account's own verified address is the one alerts go to.
    ran({**good_config, "alertEmails": ["OPS@example.org"]})


# 13. Regions: DigitalOcean's list of those open to new droplets, not the SDK's enum.


@pytest.mark.parametrize("region", ["atl1", "ric1"])
def test_item_13_new_regions_are_accepted_and_probed_from_nearby(good_config: dict[str, Any], region: str) -> None:
    run = ran({**good_config, "region": region, "alertEmails": ["ops@example.org"]})

    assert run.one(DROPLET).inputs["region"] == region
    assert uptime_regions(region) == ("us_east", "us_west")


def test_item_13_a_region_closed_to_new_droplets_is_refused(good_config: dict[str, Any]) -> None:
    message = refused({**good_config, "region": "nyc2"})

    assert message.splitlines()[-1].startswith(
        "  - flask-droplet:region = 'nyc2': expected a region that takes new droplets now, one of ams3, atl1"
    )
    assert "nyc2" not in message.split("one of", 1)[1]
    # A stack already there keeps deploying to its droplets.
    ran({**good_config, "region": "nyc2", "volumeSize": 0}, existing_droplets=[droplet_of_stack(region="nyc2")])


# 14. pulumi-command's dial budget: its waits between failed dials, as Pulumi's retry.Until spaces them.


def test_item_14_dial_budget_lasts_ten_minutes_of_refused_dials(good_config: dict[str, Any]) -> None:
    # The limit before this lasted about 2.7 minutes of refused dials, not ten.
    assert 155 < dial_wait_seconds(40) < 165
    assert DIAL_BUDGET_SECONDS <= dial_wait_seconds(DIAL_ERROR_LIMIT) < DIAL_BUDGET_SECONDS + 6
    # And when every dial waits out its timeout instead, well under an hour.
    assert dial_wait_seconds(DIAL_ERROR_LIMIT) + (DIAL_ERROR_LIMIT + 1) * PER_DIAL_TIMEOUT_SECONDS < 35 * 60
    connection = ran(good_config).named("app-deploy").inputs["connection"]
    connection = connection.get("value", connection)
    assert (connection["dialErrorLimit"], connection["perDialTimeout"]) == (DIAL_ERROR_LIMIT, PER_DIAL_TIMEOUT_SECONDS)


# 12. Names unique in the account: a Volume's in its region, the stack's tag among all droplets.


def test_item_12_stack_name_keeps_two_checkouts_apart(good_config: dict[str, Any]) -> None:
    default = ran(good_config)
    own = ran({**good_config, "stackName": "alice-dev"})

    # Every stack so far: PROJECT:STACK and APP-STACK-state, as before.
    assert default.one(DROPLET).inputs["tags"] == ["flask-droplet", STACK_TAG]
    assert default.one(VOLUME).inputs["name"] == "weather-test-state"
    # Its own name keeps another checkout's droplets out of the stack's guards, and its Volume's name free.
    assert own.one(DROPLET).inputs["tags"] == ["flask-droplet", "flask-droplet:alice-dev"]
    assert own.one(VOLUME).inputs["name"] == "weather-alice-dev-state"
    assert "scsi-0DO_Volume_weather-alice-dev-state" in own.one(DROPLET).inputs["userData"]
    assert "flask-droplet:stackName = 'a b'" in refused({**good_config, "stackName": "a b"})


def test_the_agent_and_the_account_are_reported_together(good_config: dict[str, Any]) -> None:
    attached = [droplet_of_stack(volumeIds=["volume-1"])]

    message = refused({**good_config, "volumeSize": 0}, existing_droplets=attached, agent_keys=None)

    assert message.startswith("2 problem(s)")
    assert "flask-droplet:sshPrivateKey is not set" in message and "flask-droplet:volumeSize = 0" in message


def test_item_12_a_new_stack_name_on_a_stack_with_a_volume_is_refused(good_config: dict[str, Any]) -> None:
    # Tagged flask-droplet:test, the stack's tag without stackName.
    attached = [droplet_of_stack(volumeIds=["volume-1"])]
    config = {**good_config, "stackName": "alice-dev"}

    message = refused(config, existing_droplets=attached)

    assert "flask-droplet:stackName = 'alice-dev': no droplet is tagged flask-droplet:alice-dev" in message
    assert "an empty weather-alice-dev-state" in message
    # They may be another checkout's: allowReplace goes ahead, and nothing of theirs is touched.
    run = ran({**config, "allowReplace": True}, existing_droplets=attached)
    assert run.one(VOLUME).inputs["name"] == "weather-alice-dev-state"
    # Under its own name already, the stack goes ahead as any other.
    own = [droplet_of_stack(volumeIds=["volume-2"], tags=["flask-droplet", "flask-droplet:alice-dev"])]
    volume = {"id": "volume-2", "name": "weather-alice-dev-state", "region": "nyc3", "size": 10}
    ran(config, account=Account(droplets=own, volumes=[volume]))
