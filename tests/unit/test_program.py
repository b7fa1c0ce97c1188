"""The Pulumi program under mocks: the resource graph, the firewall, triggers, secrets, outputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.inputs import DeployInput
from components.monitoring import UPTIME_REGIONS, uptime_regions
from core.cloudinit import render_user_data
from core.settings import SettingsError, parse_settings, ssh_key_fingerprint
from tests.conftest import example_public_key
from tests.pulumi_harness import (
    AVAILABLE_REGIONS,
    DEPLOY_STDOUT,
    DROPLET_ID,
    DROPLET_IPV4,
    DROPLET_IPV6,
    PROJECT_DIR,
    RESERVED_IPV4,
    STACK,
    TEST_HOST_KEYS,
    Account,
    ProgramRun,
    is_secret,
    reveal,
    run_program,
)

DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"
SSH_KEY = "digitalocean:index/sshKey:SshKey"
HOST_KEY = "pulumi-python:dynamic:Resource"
RESERVED_IP = "digitalocean:index/reservedIp:ReservedIp"
ASSIGNMENT = "digitalocean:index/reservedIpAssignment:ReservedIpAssignment"
DNS_RECORD = "digitalocean:index/dnsRecord:DnsRecord"
VOLUME = "digitalocean:index/volume:Volume"
COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
MONITOR_ALERT = "digitalocean:index/monitorAlert:MonitorAlert"
UPTIME_CHECK = "digitalocean:index/uptimeCheck:UptimeCheck"
UPTIME_ALERT = "digitalocean:index/uptimeAlert:UptimeAlert"
WEB_SERVER = "flaskdroplet:infra:WebServer"
APP_DEPLOYMENT = "flaskdroplet:app:AppDeployment"
MONITORING = "flaskdroplet:ops:Monitoring"
ALERT_EMAILS = ["ops@example.org"]
STEPS = ("app-wait-for-cloud-init", "app-deploy-script", "app-agent", "app-bundle", "app-deploy")


@pytest.fixture
def run(good_config: dict[str, Any]) -> ProgramRun:
    result = run_program(good_config)
    assert result.error is None, result.error
    return result


@pytest.fixture
def watched(good_config: dict[str, Any]) -> ProgramRun:
    """The stack with alerts: addresses to send them to."""
    result = run_program({**good_config, "alertEmails": ALERT_EMAILS})
    assert result.error is None, result.error
    return result


def test_smoke_main_declares_the_whole_stack(run: ProgramRun) -> None:
    assert sorted(r.type for r in run.resources) == sorted(
        [
            *(WEB_SERVER, SSH_KEY, HOST_KEY, VOLUME, DROPLET, FIREWALL, RESERVED_IP, ASSIGNMENT),
            *(APP_DEPLOYMENT, COMMAND, COPY, COPY, COPY, COMMAND),
            MONITORING,
        ]
    )
    assert run.outputs["ipv4_address"] == RESERVED_IPV4
    # The URL is what the deploy reports: https:// once the site has its certificate.
    assert run.outputs["url"] == f"https://{RESERVED_IPV4}/"
    assert run.outputs["warnings"] == ["fail2ban is not running"]
    assert run.outputs["ssh"] == f"ssh deploy@{DROPLET_IPV4}"
    # The exact line that follows the site's logs, at the droplet's own address.
    assert run.outputs["logs"] == (
        f"ssh -t deploy@{DROPLET_IPV4} sudo /bin/bash /home/deploy/flaskdroplet/deploy.sh logs -f"
    )
    assert len(run.outputs["release_id"]) == 12


def test_children_are_parented_and_named_after_their_component(watched: ProgramRun) -> None:
    assert watched.of_type(MONITOR_ALERT) and watched.of_type(UPTIME_ALERT)
    for resource in watched.resources:
        if resource.type in (SSH_KEY, HOST_KEY, VOLUME, DROPLET, FIREWALL, RESERVED_IP, ASSIGNMENT, DNS_RECORD):
            assert resource.parent_types[-1] == WEB_SERVER
            assert resource.name.startswith("web-")
        elif resource.type.startswith("command:"):
            assert resource.parent_types[-1] == APP_DEPLOYMENT
            assert resource.name.startswith("app-")
        elif resource.type in (MONITOR_ALERT, UPTIME_CHECK, UPTIME_ALERT):
            assert resource.parent_types[-1] == MONITORING
            assert resource.name.startswith("monitoring-")
        else:
            assert resource.parent_types == ("pulumi:pulumi:Stack",)


def test_droplet_is_ubuntu_2404_with_monitoring_ipv6_tags_and_keys(
    run: ProgramRun, good_config: dict[str, Any]
) -> None:
    droplet = run.one(DROPLET).inputs
    key = run.one(SSH_KEY).inputs

    assert droplet["image"] == "ubuntu-24-04-x64"
    assert droplet["monitoring"] is True
    assert droplet["ipv6"] is True
    assert droplet["tags"] == ["flask-droplet", "flask-droplet:test"]
    assert droplet["sshKeys"] == [ssh_key_fingerprint(good_config["sshPublicKeys"][0])]
    assert key["publicKey"] == good_config["sshPublicKeys"][0]
    settings = parse_settings(good_config, PROJECT_DIR, STACK)
    assert droplet["userData"] == render_user_data(settings, TEST_HOST_KEYS[0])


def test_firewall_opens_ssh_to_admins_only_and_web_to_everyone(run: ProgramRun) -> None:
    firewall = run.one(FIREWALL).inputs
    inbound = {(r["protocol"], r.get("portRange")): r["sourceAddresses"] for r in firewall["inboundRules"]}

    assert firewall["dropletIds"] == [int(DROPLET_ID)]
    assert inbound == {
        ("tcp", "22"): ["203.0.113.7/32", "2001:db8::/64"],
        ("tcp", "80"): ["0.0.0.0/0", "::/0"],
        ("tcp", "443"): ["0.0.0.0/0", "::/0"],
        ("icmp", None): ["0.0.0.0/0", "::/0"],
    }
    assert {r["protocol"] for r in firewall["outboundRules"]} == {"tcp", "udp", "icmp"}


def test_deploy_steps_run_in_order_over_ssh_as_the_deploy_user(run: ProgramRun) -> None:
    steps = [run.named(name) for name in STEPS]

    for step in steps:
        connection = reveal(step.inputs["connection"])
        assert connection["host"] == DROPLET_IPV4
        assert connection["user"] == "deploy"
    assert "cloud-init status --wait" in steps[0].inputs["create"]
    assert steps[1].inputs["remotePath"] == "/home/deploy/flaskdroplet/deploy.sh"
    assert steps[2].inputs["remotePath"] == "/home/deploy/flaskdroplet/agent.pyz"
    release = run.outputs["release_id"]
    assert steps[3].inputs["remotePath"] == f"/home/deploy/flaskdroplet/bundles/{release}.tar.gz"
    bundle = f"/home/deploy/flaskdroplet/bundles/{release}.tar.gz"
    assert steps[4].inputs["create"] == (
        f"sudo /bin/bash /home/deploy/flaskdroplet/deploy.sh {release} {bundle} {RESERVED_IPV4}"
    )
    assert steps[4].inputs["logging"] == "stderr"
    assert steps[4].inputs["addPreviousOutputInEnv"] is False


def test_secrets_stay_secret(good_config: dict[str, Any]) -> None:
    secret = good_config["appEnv"]["SECRET_KEY"]
    private_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
    run = run_program({**good_config, "sshPrivateKey": private_key})
    assert run.error is None, run.error
    deploy = run.named("app-deploy")

    assert is_secret(deploy.inputs["stdin"])
    assert f'SECRET_KEY="{secret}"' in DeployInput.from_json(reveal(deploy.inputs["stdin"])).environment
    for name in STEPS:
        assert is_secret(run.named(name).inputs["connection"]), name
    assert is_secret(deploy.inputs["triggers"])
    for resource in run.resources:
        if resource.name == "app-deploy":
            continue
        assert secret not in repr(resource.inputs), resource.name
    assert secret not in run.named("web-droplet").inputs["userData"]
    assert secret not in repr(run.outputs)


def triggers(run: ProgramRun) -> dict[str, Any]:
    assert run.error is None, run.error
    return {name: reveal(run.named(name).inputs["triggers"]) for name in STEPS}


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {name for name in STEPS if before[name] != after[name]}


def test_nothing_changed_means_no_trigger_changes(good_config: dict[str, Any]) -> None:
    assert changed(triggers(run_program(good_config)), triggers(run_program(good_config))) == set()


def test_changed_app_redeploys_the_bundle_only(good_config: dict[str, Any], tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(PROJECT_DIR / "app", app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    config = {**good_config, "appDir": str(app)}
    before = triggers(run_program(config))
    (app / "wsgi.py").write_text((app / "wsgi.py").read_text() + "\n# a change\n")
    after = triggers(run_program(config))

    assert changed(before, after) == {"app-bundle", "app-deploy"}


def test_changed_server_config_redeploys_agent_bundle_and_command(good_config: dict[str, Any]) -> None:
    before = triggers(run_program(good_config))
    after = triggers(run_program({**good_config, "workers": 4}))

    # The agent carries the settings, the bundle the units; deploy.sh only names the agent.
    assert changed(before, after) == {"app-agent", "app-bundle", "app-deploy"}


def test_changed_secret_reruns_only_the_deploy_command(good_config: dict[str, Any]) -> None:
    before = triggers(run_program(good_config))
    after = triggers(run_program({**good_config, "appEnv": {"SECRET_KEY": "another-value"}}))

    assert changed(before, after) == {"app-deploy"}


def test_domain_names_the_nginx_site(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "domain": "weather.example.org"})

    user_data = yaml.safe_load(run.one(DROPLET).inputs["userData"])
    site = next(f for f in user_data["write_files"] if f["path"].startswith("/etc/nginx/"))
    assert "server_name weather.example.org;" in site["content"]


def test_fingerprints_are_attached_without_creating_keys(good_config: dict[str, Any]) -> None:
    registered = example_public_key("b")
    fingerprint = ssh_key_fingerprint(registered)
    held = {"id": 7, "name": "laptop", "publicKey": registered, "fingerprint": fingerprint}
    run = run_program(
        {**good_config, "sshPublicKeys": [], "sshKeyFingerprints": [fingerprint]},
        agent_keys=[registered],
        account=Account(ssh_keys=[held]),
    )

    assert run.of_type(SSH_KEY) == []
    assert run.one(DROPLET).inputs["sshKeys"] == [fingerprint]


def test_preview_declares_the_same_graph(good_config: dict[str, Any]) -> None:
    config = {**good_config, "alertEmails": ALERT_EMAILS}
    preview = run_program(config, preview=True)
    update = run_program(config)

    assert preview.error is None, preview.error
    assert sorted(r.name for r in preview.resources) == sorted(r.name for r in update.resources)


def test_reserved_ip_in_the_droplets_region_is_assigned_to_it(run: ProgramRun) -> None:
    assert run.one(RESERVED_IP).inputs["region"] == "nyc3"
    assignment = run.one(ASSIGNMENT).inputs
    assert assignment == {"ipAddress": RESERVED_IPV4, "dropletId": int(DROPLET_ID)}


def test_no_dns_records_without_a_dns_zone(good_config: dict[str, Any]) -> None:
    assert run_program({**good_config, "domain": "weather.example.org"}).of_type(DNS_RECORD) == []
    assert run_program(good_config).of_type(DNS_RECORD) == []


def test_dns_records_point_the_domain_at_the_reserved_ip(good_config: dict[str, Any]) -> None:
    config = {**good_config, "domain": "weather.example.org", "dnsZone": "example.org", "wwwAlias": True}

    run = run_program(config)

    assert run.error is None, run.error
    records = sorted((r.inputs["name"], r.inputs["type"], r.inputs["value"]) for r in run.of_type(DNS_RECORD))
    assert records == [
        ("weather", "A", RESERVED_IPV4),
        ("weather", "AAAA", DROPLET_IPV6),
        ("www.weather", "A", RESERVED_IPV4),
        ("www.weather", "AAAA", DROPLET_IPV6),
    ]
    assert {r.inputs["domain"] for r in run.of_type(DNS_RECORD)} == {"example.org"}


def test_a_domain_that_is_its_zone_gets_apex_records(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "domain": "example.org", "dnsZone": "example.org"})

    assert sorted((r.name, r.inputs["name"]) for r in run.of_type(DNS_RECORD)) == [
        ("web-dns-a-apex", "@"),
        ("web-dns-aaaa-apex", "@"),
    ]


def test_deploy_is_triggered_by_the_public_address(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "domain": "weather.example.org", "dnsZone": "example.org"})

    assert RESERVED_IPV4 in reveal(run.named("app-deploy").inputs["triggers"])


# The app's state on a Volume: it outlives the droplet, stays in its region, and is protected in production.


def test_state_lives_on_a_volume_attached_from_the_first_boot(run: ProgramRun) -> None:
    volume = run.one(VOLUME)
    droplet = run.one(DROPLET)

    assert volume.inputs["name"] == "weather-test-state"
    assert volume.inputs["region"] == droplet.inputs["region"] == "nyc3"
    assert volume.inputs["size"] == 10
    # No file system from DigitalOcean (which would also mount it elsewhere): the droplet makes one, if empty.
    assert "initialFilesystemType" not in volume.inputs
    assert droplet.inputs["volumeIds"] == [f"{volume.name}-id"]
    assert "/dev/disk/by-id/scsi-0DO_Volume_weather-test-state" in droplet.inputs["userData"]
    assert run.outputs["state_volume"] == {
        "name": "weather-test-state",
        "id": f"{volume.name}-id",
        "mount_point": "/var/lib/weather",
    }


def test_replacing_the_droplet_leaves_the_volume_as_it_is(good_config: dict[str, Any]) -> None:
    before = run_program(good_config)
    # A new image replaces the droplet.
    after = run_program({**good_config, "image": "170000001", "size": "s-2vcpu-2gb"})
    assert before.error is None and after.error is None

    assert after.one(DROPLET).inputs["image"] != before.one(DROPLET).inputs["image"]
    assert after.one(VOLUME).inputs == before.one(VOLUME).inputs
    # The Volume takes nothing from the droplet (it waits only for the keys); the droplet lets go of it before
    # its replacement attaches it.
    assert after.one(VOLUME).dependencies == (after.one(SSH_KEY).urn,)
    assert after.one(VOLUME).urn in after.one(DROPLET).dependencies
    assert after.one(DROPLET).delete_before_replace


def test_without_a_volume_the_state_stays_on_the_droplet(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "volumeSize": 0})
    assert run.error is None, run.error

    assert run.of_type(VOLUME) == []
    assert "volumeIds" not in run.one(DROPLET).inputs
    assert not run.one(DROPLET).delete_before_replace
    assert "DO_Volume" not in run.one(DROPLET).inputs["userData"]
    assert run.outputs["state_volume"] is None


def existing_droplet(region: str) -> dict[str, Any]:
    return {"id": int(DROPLET_ID), "name": "web-droplet-1", "region": region, "tags": ["flask-droplet:test"]}


def test_a_region_change_with_a_volume_is_refused_before_any_resource(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "region": "ams3"}, existing_droplets=[existing_droplet("nyc3")])

    assert isinstance(run.error, SettingsError)
    message = str(run.error)
    assert "flask-droplet:region = 'ams3': expected 'nyc3'" in message
    assert "weather-test-state" in message and "cannot move between regions" in message
    assert "tar -C /var/lib/weather" in message
    # Only reads: the stack's droplets, the regions, the keys it registered.
    assert run.calls == [
        "digitalocean:index/getDroplets:getDroplets",
        "digitalocean:index/getRegions:getRegions",
        "digitalocean:index/getSshKeys:getSshKeys",
    ]
    assert run.resources == []


def test_the_same_region_stays_and_a_new_one_without_a_volume_moves_only_when_allowed(
    good_config: dict[str, Any],
) -> None:
    same = run_program(good_config, existing_droplets=[existing_droplet("nyc3")])
    moved = {**good_config, "region": "ams3", "volumeSize": 0}
    refused = run_program(moved, existing_droplets=[existing_droplet("nyc3")])
    allowed = run_program({**moved, "allowReplace": True}, existing_droplets=[existing_droplet("nyc3")])

    assert same.error is None and allowed.error is None
    assert isinstance(refused.error, SettingsError) and refused.resources == []
    assert "flask-droplet:allowReplace = false" in str(refused.error)
    assert "web-droplet (region nyc3 -> ams3)" in str(refused.error)
    assert allowed.one(DROPLET).inputs["region"] == "ams3"


def test_production_protects_the_droplet_its_address_and_its_volume(good_config: dict[str, Any]) -> None:
    production = run_program({**good_config, "production": True})
    other = run_program(good_config)
    assert production.error is None and other.error is None

    assert {r.type for r in production.resources if r.protect} == {DROPLET, RESERVED_IP, VOLUME}
    assert [r.name for r in other.resources if r.protect] == []


def test_droplet_backups_are_weekly_and_only_when_asked_for(good_config: dict[str, Any]) -> None:
    with_backups = run_program({**good_config, "dropletBackups": True})
    without = run_program(good_config)
    assert with_backups.error is None and without.error is None

    droplet = with_backups.one(DROPLET)
    assert droplet.inputs["backups"] is True
    assert droplet.inputs["backupPolicy"] == {"plan": "weekly", "weekday": "SUN", "hour": 4}
    # The provider refuses a backup policy on a droplet without backups.
    assert without.one(DROPLET).inputs["backups"] is False
    assert "backupPolicy" not in without.one(DROPLET).inputs
    # Only those inputs differ, and neither replaces a droplet in DigitalOcean's provider.
    assert {k: v for k, v in droplet.inputs.items() if k not in ("backups", "backupPolicy")} == {
        k: v for k, v in without.one(DROPLET).inputs.items() if k != "backups"
    }


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("volumeSize", -1, "expected a whole number from 0 to 16384"),
        ("volumeSize", 20000, "expected a whole number from 0 to 16384"),
        ("volumeSize", "ten", "expected a whole number from 0 to 16384"),
        ("production", "maybe", "expected true or false"),
    ],
)
def test_bad_volume_and_production_values_stop_the_program_first(
    good_config: dict[str, Any], key: str, value: Any, accepted: str
) -> None:
    run = run_program({**good_config, key: value})

    assert isinstance(run.error, SettingsError)
    problem = str(run.error).splitlines()[-1]
    assert problem.startswith(f"  - flask-droplet:{key} = ") and str(value) in problem and problem.endswith(accepted)
    assert run.resources == []


# Alerts by email: the droplet's metrics, and an uptime check on the site's URL.


def test_no_alerts_and_no_uptime_check_without_addresses(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "alertCpuPercent": 50, "alertWindow": "1h"})
    assert run.error is None, run.error

    assert run.of_type(MONITOR_ALERT) == run.of_type(UPTIME_CHECK) == run.of_type(UPTIME_ALERT) == []
    assert run.outputs["alerts"] is None


def test_droplet_alerts_watch_the_droplet_at_the_configured_thresholds(good_config: dict[str, Any]) -> None:
    config = {
        **good_config,
        "alertEmails": ALERT_EMAILS,
        "alertCpuPercent": 80,
        "alertMemoryPercent": 70,
        "alertDiskPercent": 60,
        "alertWindow": "10m",
    }

    run = run_program(config)

    assert run.error is None, run.error
    alerts = {alert.inputs["type"]: alert.inputs for alert in run.of_type(MONITOR_ALERT)}
    assert {metric: alert["value"] for metric, alert in alerts.items()} == {
        "v1/insights/droplet/cpu": 80,
        "v1/insights/droplet/memory_utilization_percent": 70,
        "v1/insights/droplet/disk_utilization_percent": 60,
    }
    for alert in alerts.values():
        assert alert["compare"] == "GreaterThan"
        assert alert["window"] == "10m"
        assert alert["entities"] == [DROPLET_ID]
        assert alert["alerts"] == {"emails": ALERT_EMAILS}
        assert alert["enabled"] is True
        # Tags would select every droplet of the project, in every stack.
        assert "tags" not in alert
    assert alerts["v1/insights/droplet/cpu"]["description"] == "flask-droplet:test: CPU above 80% for 10m"
    assert run.one(DROPLET).urn in run.named("monitoring-cpu").dependencies


def test_uptime_check_requests_the_url_the_deploy_reported(watched: ProgramRun) -> None:
    check = watched.one(UPTIME_CHECK)

    assert check.inputs["target"] == watched.outputs["url"] == f"https://{RESERVED_IPV4}/"
    assert check.inputs["type"] == "https"
    assert check.inputs["enabled"] is True
    assert check.inputs["name"] == "flask-droplet:test: the site"
    # The probe regions nearest nyc3.
    assert check.inputs["regions"] == ["us_east", "us_west"]
    assert watched.named("app-deploy").urn in check.dependencies


def test_uptime_alerts_for_down_slow_and_an_expiring_certificate(good_config: dict[str, Any]) -> None:
    config = {**good_config, "alertEmails": ALERT_EMAILS, "alertLatencyMs": 1500, "alertWindow": "30m"}

    run = run_program(config)

    assert run.error is None, run.error
    alerts = {alert.inputs["type"]: alert.inputs for alert in run.of_type(UPTIME_ALERT)}
    assert sorted(alerts) == ["down", "latency", "ssl_expiry"]
    for alert in alerts.values():
        assert alert["checkId"] == "monitoring-uptime-id"
        assert alert["notifications"] == [{"emails": ALERT_EMAILS}]
    assert alerts["down"]["period"] == "2m"
    assert "threshold" not in alerts["down"]
    assert (alerts["latency"]["threshold"], alerts["latency"]["comparison"]) == (1500, "greater_than")
    assert alerts["latency"]["period"] == "30m"
    assert (alerts["ssl_expiry"]["threshold"], alerts["ssl_expiry"]["comparison"]) == (2, "less_than")
    assert run.outputs["alerts"] == {
        "emails": ALERT_EMAILS,
        "droplet": {"cpu_percent": 90, "memory_percent": 90, "disk_percent": 85, "window": "30m"},
        "site": {
            "url": f"https://{RESERVED_IPV4}/",
            "regions": ["us_east", "us_west"],
            "down_for": "2m",
            "latency_ms": 1500,
            "certificate_days": 2,
        },
    }


def test_plain_http_gets_an_http_check_and_no_certificate_alert(good_config: dict[str, Any]) -> None:
    stdout = DEPLOY_STDOUT.replace("https://", "http://")
    run = run_program({**good_config, "alertEmails": ALERT_EMAILS, "https": False}, deploy_stdout=stdout)

    assert run.error is None, run.error
    check = run.one(UPTIME_CHECK).inputs
    assert (check["target"], check["type"]) == (f"http://{RESERVED_IPV4}/", "http")
    assert sorted(alert.inputs["type"] for alert in run.of_type(UPTIME_ALERT)) == ["down", "latency"]
    assert "certificate_days" not in run.outputs["alerts"]["site"]


def test_a_site_still_waiting_for_its_certificate_is_checked_over_http(good_config: dict[str, Any]) -> None:
    stdout = DEPLOY_STDOUT.replace("https://", "http://")
    run = run_program({**good_config, "alertEmails": ALERT_EMAILS}, deploy_stdout=stdout)

    assert run.error is None, run.error
    assert run.one(UPTIME_CHECK).inputs["type"] == "http"
    # The next deploy with a certificate turns the check to https, where the certificate alert applies.
    assert "ssl_expiry" in {alert.inputs["type"] for alert in run.of_type(UPTIME_ALERT)}


@pytest.mark.parametrize(
    ("region", "probes"),
    [("ams3", ["eu_west", "us_east"]), ("sfo3", ["us_west", "us_east"]), ("syd1", ["se_asia", "us_west"])],
)
def test_the_uptime_check_probes_from_near_the_droplet(
    good_config: dict[str, Any], region: str, probes: list[str]
) -> None:
    run = run_program({**good_config, "alertEmails": ALERT_EMAILS, "region": region})

    assert run.error is None, run.error
    assert run.one(UPTIME_CHECK).inputs["regions"] == probes


def test_every_droplet_region_has_probe_regions_near_it() -> None:
    # A region missing from the table would be probed from all four, far ones included.
    assert [region for region in AVAILABLE_REGIONS if uptime_regions(region) == UPTIME_REGIONS] == []
    assert all(set(uptime_regions(region)) < set(UPTIME_REGIONS) for region in AVAILABLE_REGIONS)


def test_alerts_change_no_deploy_step(good_config: dict[str, Any]) -> None:
    config = {**good_config, "alertEmails": ALERT_EMAILS, "alertDiskPercent": 70, "dropletBackups": True}

    assert changed(triggers(run_program(good_config)), triggers(run_program(config))) == set()


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("alertEmails", ["ops@example"], "expected email addresses such as ops@example.org"),
        ("alertCpuPercent", 0, "expected a whole number from 1 to 100"),
        ("alertMemoryPercent", 101, "expected a whole number from 1 to 100"),
        ("alertDiskPercent", "full", "expected a whole number from 1 to 100"),
        ("alertWindow", "15m", "expected one of DigitalOcean's alert windows 5m, 10m, 30m, 1h"),
        ("alertLatencyMs", 20000, "expected a whole number from 100 to 10000"),
        ("alertCertificateDays", 0, "expected a whole number from 1 to 29"),
        ("dropletBackups", "weekly", "expected true or false"),
    ],
)
def test_bad_alert_and_backup_values_stop_the_program_first(
    good_config: dict[str, Any], key: str, value: Any, accepted: str
) -> None:
    run = run_program({**good_config, "alertEmails": ALERT_EMAILS, key: value})

    assert isinstance(run.error, SettingsError)
    problem = str(run.error).splitlines()[-1]
    shown = value[0] if isinstance(value, list) else value
    assert problem.startswith(f"  - flask-droplet:{key} = ") and str(shown) in problem and problem.endswith(accepted)
    assert run.resources == []
