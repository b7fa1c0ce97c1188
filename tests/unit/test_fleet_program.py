"""The Pulumi program under mocks with a database cluster: the VPC, the Managed PostgreSQL, DATABASE_URL."""

from __future__ import annotations

from typing import Any

import pytest

from components.settings import SettingsError
from tests.pulumi_harness import (
    DATABASE_PORT,
    DATABASE_PRIVATE_HOST,
    DATABASE_USER_PASSWORD,
    DROPLET_ID,
    RESERVED_IPV4,
    ProgramRun,
    is_secret,
    reveal,
    run_program,
)

VPC = "digitalocean:index/vpc:Vpc"
DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"
RESERVED_IP = "digitalocean:index/reservedIp:ReservedIp"
ASSIGNMENT = "digitalocean:index/reservedIpAssignment:ReservedIpAssignment"
VOLUME = "digitalocean:index/volume:Volume"
DNS_RECORD = "digitalocean:index/dnsRecord:DnsRecord"
BALANCER = "digitalocean:index/loadBalancer:LoadBalancer"
CERTIFICATE = "digitalocean:index/certificate:Certificate"
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
DATABASE_DB = "digitalocean:index/databaseDb:DatabaseDb"
DATABASE_USER = "digitalocean:index/databaseUser:DatabaseUser"
DATABASE_FIREWALL = "digitalocean:index/databaseFirewall:DatabaseFirewall"
MONITOR_ALERT = "digitalocean:index/monitorAlert:MonitorAlert"
UPTIME_CHECK = "digitalocean:index/uptimeCheck:UptimeCheck"
COMMAND = "command:remote:Command"
WEB_SERVER = "flaskdroplet:infra:WebServer"
DATABASE = "flaskdroplet:data:Database"
APP_DEPLOYMENT = "flaskdroplet:app:AppDeployment"
ANYWHERE = ["0.0.0.0/0", "::/0"]
DOMAIN = "weather.example.org"
RELEASE_COMMAND = "flask --app weather db upgrade"
#: What the app finds in DATABASE_URL: its own user, over the VPC, TLS required.
EXPECTED_DATABASE_URL = (
    f"postgresql://weather:{DATABASE_USER_PASSWORD}@{DATABASE_PRIVATE_HOST}:{DATABASE_PORT}/weather?sslmode=require"
)


def postgres_config(good_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One droplet, its data in a Managed PostgreSQL cluster."""
    return {**good_config, "database": "postgres", "releaseCommand": RELEASE_COMMAND, **extra}


def ran(config: dict[str, Any], **options: Any) -> ProgramRun:
    run = run_program(config, **options)
    assert run.error is None, run.error
    return run


@pytest.fixture
def one_postgres(good_config: dict[str, Any]) -> ProgramRun:
    return ran(postgres_config(good_config))


# One droplet with SQLite: exactly the graph it has always had.


def test_one_droplet_with_sqlite_declares_no_vpc_balancer_or_cluster(good_config: dict[str, Any]) -> None:
    run = ran(good_config)

    assert sorted(r.name for r in run.resources) == sorted(
        [
            *("web", "web-key-0", "web-state", "web-droplet", "web-firewall", "web-address", "web-address-assignment"),
            *("app", "app-wait-for-cloud-init", "app-deploy-script", "app-bundle", "app-deploy"),
            "monitoring",
        ]
    )
    for absent in (VPC, BALANCER, CERTIFICATE, CLUSTER, DATABASE_DB, DATABASE_USER, DATABASE_FIREWALL):
        assert run.of_type(absent) == [], absent
    assert "vpcUuid" not in run.one(DROPLET).inputs
    assert run.outputs["database_host"] is None


# One droplet with PostgreSQL: a VPC for the droplet and the cluster, and nothing else new.


def test_one_droplet_with_postgres_shares_a_vpc_with_its_cluster(one_postgres: ProgramRun) -> None:
    vpc = one_postgres.one(VPC)
    cluster = one_postgres.one(CLUSTER).inputs

    assert vpc.parent_types == ("pulumi:pulumi:Stack",)
    assert vpc.inputs["region"] == "nyc3"
    assert vpc.inputs["description"] == "flask-droplet:test: the app's droplets, their balancer and database"
    assert one_postgres.one(DROPLET).inputs["vpcUuid"] == f"{vpc.name}-id"
    assert {k: cluster[k] for k in ("engine", "version", "size", "nodeCount", "region", "privateNetworkUuid")} == {
        "engine": "pg",
        "version": "17",
        "size": "db-s-1vcpu-1gb",
        "nodeCount": 1,
        "region": "nyc3",
        "privateNetworkUuid": f"{vpc.name}-id",
    }
    assert cluster["tags"] == ["flask-droplet", "flask-droplet:test"]
    # The one droplet keeps its Reserved IP and its Volume; no balancer.
    assert one_postgres.of_type(RESERVED_IP) and one_postgres.of_type(VOLUME)


def test_the_database_and_its_user_are_named_after_the_app(good_config: dict[str, Any]) -> None:
    run = ran(postgres_config(good_config, appName="shop"))

    for kind in (DATABASE_DB, DATABASE_USER):
        resource = run.one(kind)
        assert resource.inputs["name"] == "shop"
        assert resource.inputs["clusterId"] == "database-cluster-id"
        assert resource.parent_types[-1] == DATABASE


def test_the_cluster_trusts_exactly_the_one_droplet(one_postgres: ProgramRun) -> None:
    firewall = one_postgres.one(DATABASE_FIREWALL).inputs

    assert firewall == {"clusterId": "database-cluster-id", "rules": [{"type": "droplet", "value": DROPLET_ID}]}


def test_database_url_reaches_the_app_only_on_the_deploys_stdin(one_postgres: ProgramRun) -> None:
    deploy = one_postgres.named("app-deploy")

    assert is_secret(deploy.inputs["stdin"])
    stdin = reveal(deploy.inputs["stdin"])
    assert f'DATABASE_URL="{EXPECTED_DATABASE_URL}"' in stdin
    # appEnv is still there beside it.
    assert 'SECRET_KEY="correct-horse-battery-staple-7f3a"' in stdin
    assert_password_only_on_stdin(one_postgres)


def assert_password_only_on_stdin(run: ProgramRun) -> None:
    """The app user's password is in its DatabaseUser (whose own output it is) and in each deploy's secret stdin."""
    for resource in run.resources:
        if resource.type == DATABASE_USER:
            continue
        inputs = dict(resource.inputs)
        if resource.type == COMMAND and resource.name.endswith("-deploy"):
            assert is_secret(inputs.pop("stdin")), resource.name
            # The trigger carries the stdin's hash, never the stdin.
            assert is_secret(inputs["triggers"]), resource.name
        assert DATABASE_USER_PASSWORD not in repr(inputs), resource.name
    for droplet in run.of_type(DROPLET):
        assert DATABASE_PRIVATE_HOST not in droplet.inputs["userData"]
        assert "DATABASE_URL=" not in droplet.inputs["userData"]
    assert DATABASE_USER_PASSWORD not in repr(run.outputs)


def test_the_first_deploy_waits_for_the_database_firewall(one_postgres: ProgramRun) -> None:
    # The release command (migrations) connects from the droplet: the firewall must let it in first.
    assert one_postgres.named("database-firewall").urn in one_postgres.named("app").dependencies


def test_database_host_is_exported_and_nothing_secret_with_it(one_postgres: ProgramRun) -> None:
    assert one_postgres.outputs["database_host"] == DATABASE_PRIVATE_HOST
    assert "database_host" not in one_postgres.secret_outputs
    assert one_postgres.outputs["ipv4_address"] == RESERVED_IPV4


# Bad input stops the program before any resource exists.


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (
            {"instances": 3},
            "database",
            "flask-droplet:database = 'sqlite': expected postgres (or none, for an app that keeps no data) "
            "with instances = 3: each droplet would keep its own SQLite file",
        ),
        (
            {"instances": 2, "database": "postgres", "https": False, "linkedDirs": ["uploads"]},
            "linkedDirs",
            "flask-droplet:linkedDirs = ['uploads']: expected none with instances = 2",
        ),
        (
            {"instances": 2, "database": "postgres"},
            "https",
            "flask-droplet:https = True: expected false, or a domain with its dnsZone in DigitalOcean",
        ),
        ({"instances": 11, "database": "postgres"}, "instances", "expected a whole number from 1 to 10"),
        ({"database": "mysql"}, "database", "expected one of sqlite, postgres, none"),
        ({"database": "postgres", "databaseNodes": 4}, "databaseNodes", "expected a whole number from 1 to 3"),
        ({"database": "postgres", "databaseSize": "db-huge"}, "databaseSize", "expected a Managed PostgreSQL size"),
    ],
    ids=["sqlite", "linked-dirs", "https-without-zone", "too-many", "engine", "nodes", "size"],
)
def test_bad_fleet_config_stops_the_program_first(
    good_config: dict[str, Any], change: dict[str, Any], key: str, expected: str
) -> None:
    run = run_program({**good_config, **change})

    assert isinstance(run.error, SettingsError)
    assert f"flask-droplet:{key} = " in str(run.error)
    assert expected in str(run.error)
    assert run.resources == []
    assert run.calls == []
