"""What DigitalOcean's provider and API do to this program, which mocks alone would not show.

Each test pins the program's side: the inputs and resource options that keep the
provider from replacing what holds data, and the refusals, before any resource, of the
changes DigitalOcean would only do by replacing it or would answer with an error. The
mocks answer the program's invokes as the provider does (its field names, its words).
The behaviour each relies on is quoted where the program makes the choice.
"""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.deployment import DIAL_BUDGET_SECONDS, DIAL_ERROR_LIMIT, PER_DIAL_TIMEOUT_SECONDS, dial_wait_seconds
from components.fleet import VPC_DELETE_TIMEOUT
from components.monitoring import uptime_regions
from components.webserver import key_name
from core.cloudinit import render_user_data
from core.settings import SettingsError, parse_settings, ssh_key_fingerprint
from core.sshagent import SSHD_MAX_AUTH_TRIES, private_key_public_line
from tests.conftest import example_public_key
from tests.pulumi_harness import (
    DEFAULT_VPC_ID,
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


def account_key(stack_tag: str, public_key: str, ident: int = 1) -> dict[str, Any]:
    """An SSH key as `getSshKeys` lists it, registered by the stack (named by its tag and fingerprint)."""
    fingerprint = ssh_key_fingerprint(public_key)
    return {"id": ident, "name": f"{stack_tag} {fingerprint}", "publicKey": public_key, "fingerprint": fingerprint}


def test_item_01_a_key_change_reaches_a_running_droplet_only_by_an_allowed_replacement(
    good_config: dict[str, Any],
) -> None:
    old, new = example_public_key("a"), example_public_key("n")
    config = {**good_config, "sshPublicKeys": [new]}
    account = Account(droplets=[droplet_of_stack()], ssh_keys=[account_key(STACK_TAG, old)])

    # The droplet's deploy user trusts the keys it was created with: a revoked key keeps working until it is new.
    message = refused(config, account=account)
    allowed = ran({**config, "allowReplace": True}, account=account)
    same = ran({**good_config, "sshPublicKeys": [old]}, account=account, agent_keys=[old])

    assert f"SSH key {ssh_key_fingerprint(new)} added, SSH key {ssh_key_fingerprint(old)} removed" in message
    assert "flask-droplet:allowReplace = false" in message
    droplet = allowed.one(DROPLET)
    assert droplet.ignore_changes == ()
    assert droplet.inputs["sshKeys"] == [ssh_key_fingerprint(new)]
    assert new in droplet.inputs["userData"] and old not in droplet.inputs["userData"]
    assert same.one(SSH_KEY).inputs["name"] == f"{STACK_TAG} {ssh_key_fingerprint(old)}"
    # Another stack's keys are its own business.
    ran(config, account=Account(droplets=[droplet_of_stack()], ssh_keys=[account_key("flask-droplet:prod", old)]))


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
    assert set(kept.ignore_changes) == {"userData", "sshKeys"}
    # Without allowReplace the new image is refused, and says what the replacement loses.
    message = refused({**config, "allowReplace": False}, existing_droplets=old_image)
    assert "web-droplet (image ubuntu-24-04-x64 -> 170000001)" in message
    assert "Each new droplet boots from the current user-data" in message


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
