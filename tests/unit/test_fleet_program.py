"""The Pulumi program under mocks with more than one droplet, or a database cluster: the VPC, the Load
Balancer, the Managed PostgreSQL, the rolling deploy and what the stack exports."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent.inputs import DeployInput
from components.webserver import key_name
from core.balancer import BALANCER_CHECK
from core.cloudinit import render_user_data
from core.settings import SettingsError, parse_settings, ssh_key_fingerprint
from tests.certificates import Brought, make_certificate
from tests.pulumi_harness import (
    BALANCER_IPV4,
    DATABASE_ADMIN_PASSWORD,
    DATABASE_PORT,
    DATABASE_PRIVATE_HOST,
    DROPLET_ID,
    DROPLET_IPV4,
    PROJECT_DIR,
    RESERVED_IPV4,
    STACK,
    TEST_HOST_KEYS,
    ProgramRun,
    droplet_id,
    droplet_index,
    droplet_ipv4,
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
#: What the app finds in DATABASE_URL: the cluster's doadmin (the owner of the app's database), over the VPC, TLS
#: required.
EXPECTED_DATABASE_URL = (
    f"postgresql://doadmin:{DATABASE_ADMIN_PASSWORD}@{DATABASE_PRIVATE_HOST}:{DATABASE_PORT}/weather?sslmode=require"
)


def postgres_config(good_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One droplet, its data in a Managed PostgreSQL cluster."""
    return {**good_config, "database": "postgres", "releaseCommand": RELEASE_COMMAND, **extra}


def fleet_config(good_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Three droplets behind a balancer that holds the domain's certificate, and a Managed PostgreSQL cluster."""
    return postgres_config(good_config, instances=3, domain=DOMAIN, dnsZone="example.org", **extra)


def web_key(config: dict[str, Any]) -> str:
    """The logical name of the stack's one SSH key: named by its fingerprint."""
    return key_name("web", ssh_key_fingerprint(config["sshPublicKeys"][0]))


def ran(config: dict[str, Any], **options: Any) -> ProgramRun:
    run = run_program(config, **options)
    assert run.error is None, run.error
    return run


@pytest.fixture
def one_postgres(good_config: dict[str, Any]) -> ProgramRun:
    return ran(postgres_config(good_config))


@pytest.fixture
def fleet(good_config: dict[str, Any]) -> ProgramRun:
    return ran(fleet_config(good_config, alertEmails=["ops@example.org"]))


def deploy_commands(run: ProgramRun) -> list[Any]:
    """The deploy command of every droplet's AppDeployment, in rollout order (app, app-2, app-3...)."""

    def position(name: str) -> int:
        match = re.fullmatch(r"app(?:-(\d+))?-deploy", name)
        assert match, name
        return int(match[1] or 1)

    return sorted((r for r in run.of_type(COMMAND) if r.name.endswith("-deploy")), key=lambda r: position(r.name))


# One droplet with SQLite: exactly the graph it has always had.


def test_one_droplet_with_sqlite_declares_no_vpc_balancer_or_cluster(good_config: dict[str, Any]) -> None:
    run = ran(good_config)

    assert sorted(r.name for r in run.resources) == sorted(
        [
            *(
                "web",
                web_key(good_config),
                "web-state",
                "web-droplet-host-key",
                "web-droplet",
                "web-firewall",
                "web-address",
                "web-address-assignment",
            ),
            *("app", "app-wait-for-cloud-init", "app-deploy-script", "app-agent", "app-bundle", "app-deploy"),
            "monitoring",
        ]
    )
    for absent in (VPC, BALANCER, CERTIFICATE, CLUSTER, DATABASE_DB, DATABASE_FIREWALL):
        assert run.of_type(absent) == [], absent
    assert "vpcUuid" not in run.one(DROPLET).inputs
    assert run.outputs["balancer_address"] is None
    assert run.outputs["droplet_addresses"] == [DROPLET_IPV4]
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
    assert one_postgres.of_type(BALANCER) == one_postgres.of_type(CERTIFICATE) == []


def test_the_database_is_named_after_the_app_and_no_powerless_user_is_made(good_config: dict[str, Any]) -> None:
    run = ran(postgres_config(good_config, appName="shop"))

    resource = run.one(DATABASE_DB)
    assert resource.inputs["name"] == "shop"
    assert resource.inputs["clusterId"] == "database-cluster-id"
    assert resource.parent_types[-1] == DATABASE
    # A user made through DigitalOcean's API could not create the app's tables.
    assert run.of_type("digitalocean:index/databaseUser:DatabaseUser") == []


def test_the_cluster_trusts_exactly_the_one_droplet(one_postgres: ProgramRun) -> None:
    firewall = one_postgres.one(DATABASE_FIREWALL).inputs

    assert firewall == {"clusterId": "database-cluster-id", "rules": [{"type": "droplet", "value": DROPLET_ID}]}


def test_database_url_reaches_the_app_only_on_the_deploys_stdin(one_postgres: ProgramRun) -> None:
    deploy = one_postgres.named("app-deploy")

    assert is_secret(deploy.inputs["stdin"])
    stdin = DeployInput.from_json(reveal(deploy.inputs["stdin"])).environment
    assert f'DATABASE_URL="{EXPECTED_DATABASE_URL}"' in stdin
    # appEnv is still there beside it.
    assert 'SECRET_KEY="correct-horse-battery-staple-7f3a"' in stdin
    assert_password_only_on_stdin(one_postgres)


def assert_password_only_on_stdin(run: ProgramRun) -> None:
    """The cluster's password (its own output) is in each deploy's secret stdin, and in no other input or output."""
    for resource in run.resources:
        if resource.type == CLUSTER:
            continue
        inputs = dict(resource.inputs)
        if resource.type == COMMAND and resource.name.endswith("-deploy"):
            assert is_secret(inputs.pop("stdin")), resource.name
            # The trigger carries the stdin's hash, never the stdin.
            assert is_secret(inputs["triggers"]), resource.name
        assert DATABASE_ADMIN_PASSWORD not in repr(inputs), resource.name
    for droplet in run.of_type(DROPLET):
        assert DATABASE_PRIVATE_HOST not in droplet.inputs["userData"]
        assert "DATABASE_URL=" not in droplet.inputs["userData"]
    assert DATABASE_ADMIN_PASSWORD not in repr(run.outputs)


def test_the_first_deploy_waits_for_the_database_firewall(one_postgres: ProgramRun) -> None:
    # The release command (migrations) connects from the droplet: the firewall must let it in first.
    assert one_postgres.named("database-firewall").urn in one_postgres.named("app").dependencies


def test_database_host_is_exported_and_nothing_secret_with_it(one_postgres: ProgramRun) -> None:
    assert one_postgres.outputs["database_host"] == DATABASE_PRIVATE_HOST
    assert "database_host" not in one_postgres.secret_outputs
    assert one_postgres.outputs["balancer_address"] is None
    assert one_postgres.outputs["ipv4_address"] == RESERVED_IPV4


# Three droplets behind a Load Balancer.


def test_three_droplets_in_the_vpc_with_the_same_user_data_but_their_own_host_keys(
    fleet: ProgramRun, good_config: dict[str, Any]
) -> None:
    droplets = sorted(fleet.of_type(DROPLET), key=lambda d: d.name)
    vpc = fleet.one(VPC)
    settings = parse_settings(fleet_config(good_config, alertEmails=["ops@example.org"]), PROJECT_DIR, STACK)

    assert [d.name for d in droplets] == ["web-2-droplet", "web-3-droplet", "web-droplet"]
    for droplet in droplets:
        assert droplet.parent_types[-1] == WEB_SERVER
        assert droplet.inputs["vpcUuid"] == f"{vpc.name}-id"
        assert droplet.inputs["region"] == vpc.inputs["region"] == "nyc3"
        assert droplet.inputs["tags"] == ["flask-droplet", "flask-droplet:test"]
        assert droplet.inputs["userData"] == render_user_data(settings, TEST_HOST_KEYS[droplet_index(droplet.name)])
        assert "volumeIds" not in droplet.inputs
        assert not droplet.delete_before_replace
    # The balancer holds the site's address: no Reserved IP, and no Volume for state split three ways.
    assert fleet.of_type(RESERVED_IP) == fleet.of_type(ASSIGNMENT) == fleet.of_type(VOLUME) == []


def test_the_balancer_checks_each_droplet_as_the_droplets_expect(fleet: ProgramRun) -> None:
    balancer = fleet.one(BALANCER)
    inputs = balancer.inputs

    assert balancer.parent_types[-1] == WEB_SERVER
    assert inputs["region"] == "nyc3"
    assert inputs["vpcUuid"] == "network-id"
    assert inputs["sizeUnit"] == 1
    assert inputs["dropletIds"] == [int(droplet_id(i)) for i in range(3)]
    assert inputs["healthcheck"] == {
        "protocol": "http",
        "port": BALANCER_CHECK.port,
        "path": "/healthz",
        "checkIntervalSeconds": BALANCER_CHECK.interval_seconds,
        "responseTimeoutSeconds": BALANCER_CHECK.timeout_seconds,
        "unhealthyThreshold": BALANCER_CHECK.unhealthy_threshold,
        "healthyThreshold": BALANCER_CHECK.healthy_threshold,
    }
    assert inputs["stickySessions"] == {"type": "none"}


def test_the_health_check_follows_health_path(good_config: dict[str, Any]) -> None:
    run = ran(fleet_config(good_config, healthPath="/up"))

    assert run.one(BALANCER).inputs["healthcheck"]["path"] == "/up"


def https_rules(certificate_name: str) -> list[dict[str, Any]]:
    """The balancer's rules with HTTPS: HTTP/2 and HTTP/3 on 443 ending at the balancer, plain HTTP to the droplets."""
    return [
        {"entryPort": 80, "entryProtocol": "http", "targetPort": 80, "targetProtocol": "http"},
        *(
            {
                "entryPort": 443,
                "entryProtocol": protocol,
                "targetPort": 80,
                "targetProtocol": "http",
                "certificateName": certificate_name,
            }
            for protocol in ("http2", "http3")
        ),
    ]


def test_https_ends_at_the_balancer_with_its_lets_encrypt_certificate(good_config: dict[str, Any]) -> None:
    run = ran(fleet_config(good_config, wwwAlias=True))
    certificate = run.one(CERTIFICATE)
    inputs = run.one(BALANCER).inputs

    assert certificate.parent_types[-1] == WEB_SERVER
    assert certificate.inputs == {
        "type": "lets_encrypt",
        "domains": [DOMAIN, f"www.{DOMAIN}"],
        "name": "web-certificate-a1b2c3d",  # what the mocked provider named it
    }
    # HTTP/2 over TCP and HTTP/3 over UDP share 443, each with the certificate, as DigitalOcean asks.
    assert inputs["forwardingRules"] == https_rules("web-certificate-a1b2c3d")
    assert inputs["redirectHttpToHttps"] is True
    assert inputs["tlsCipherPolicy"] == "STRONG"
    # The program writes the domain's records; DigitalOcean's own would be a second set.
    assert inputs["disableLetsEncryptDnsRecords"] is True
    assert "certificateId" not in repr(inputs)


def test_plain_http_at_the_balancer_needs_no_certificate(good_config: dict[str, Any]) -> None:
    stdout = "0123456789ab\nhttp://203.0.113.80/\n"
    run = ran(postgres_config(good_config, instances=2, https=False), deploy_stdout=stdout)
    inputs = run.one(BALANCER).inputs

    assert run.of_type(CERTIFICATE) == []
    assert inputs["forwardingRules"] == [
        {"entryPort": 80, "entryProtocol": "http", "targetPort": 80, "targetProtocol": "http"}
    ]
    assert inputs["redirectHttpToHttps"] is False
    # The policy is there before any certificate: adding HTTPS later changes no other setting.
    assert inputs["tlsCipherPolicy"] == "STRONG"
    assert run.of_type(DNS_RECORD) == []
    assert run.outputs["url"] == f"http://{BALANCER_IPV4}/"


def brought_config(good_config: dict[str, Any], brought: Brought, **extra: Any) -> dict[str, Any]:
    """Three droplets behind a balancer for a domain whose DNS is elsewhere, with the certificate the user brings."""
    return postgres_config(
        good_config,
        instances=3,
        domain=DOMAIN,
        balancerCertificate=brought.fullchain,
        balancerCertificateKey=brought.key,
        **extra,
    )


def test_a_brought_certificate_serves_a_domain_whose_dns_is_elsewhere(good_config: dict[str, Any]) -> None:
    brought = make_certificate((DOMAIN, f"www.{DOMAIN}"))
    run = ran(brought_config(good_config, brought, wwwAlias=True, alertEmails=["ops@example.org"]))
    certificate = run.one(CERTIFICATE)
    inputs = certificate.inputs

    assert certificate.parent_types[-1] == WEB_SERVER
    assert (inputs["type"], inputs["leafCertificate"], inputs["certificateChain"]) == (
        "custom",
        brought.leaf,
        brought.intermediate,
    )
    assert "domains" not in inputs
    assert is_secret(inputs["privateKey"]) and reveal(inputs["privateKey"]) == brought.key
    balancer = run.one(BALANCER).inputs
    assert balancer["forwardingRules"] == https_rules("web-certificate-a1b2c3d")
    assert (balancer["redirectHttpToHttps"], balancer["tlsCipherPolicy"]) == (True, "STRONG")
    # No zone at DigitalOcean: the user points the domain at the balancer, whose address is exported.
    assert run.of_type(DNS_RECORD) == []
    assert run.outputs["url"] == f"https://{DOMAIN}/"
    assert run.outputs["balancer_address"] == BALANCER_IPV4
    assert run.one(UPTIME_CHECK).inputs["target"] == f"https://{DOMAIN}/"


def test_the_brought_key_stays_a_secret_of_the_certificate_alone(good_config: dict[str, Any]) -> None:
    brought = make_certificate((DOMAIN,))
    run = ran(brought_config(good_config, brought))
    key_body = "".join(brought.key.splitlines()[1:-1])

    def flat(value: Any) -> str:
        return repr(value).replace("\\n", "")

    assert key_body in flat(reveal(run.one(CERTIFICATE).inputs["privateKey"]))
    for resource in run.resources:
        if resource.type != CERTIFICATE:
            assert key_body not in flat(resource.inputs), resource.name
    for deploy in deploy_commands(run):
        assert key_body not in flat(reveal(deploy.inputs["stdin"])), deploy.name
    assert key_body not in flat(run.outputs)


def test_a_new_brought_certificate_replaces_the_balancers_one(good_config: dict[str, Any]) -> None:
    first, renewed = make_certificate((DOMAIN,)), make_certificate((DOMAIN,))
    before = ran(brought_config(good_config, first)).one(CERTIFICATE)
    after = ran(brought_config(good_config, renewed)).one(CERTIFICATE)

    # The same resource, given the new certificate: the provider replaces it (its fields are ForceNew) under a
    # new name, and the balancer takes it by that name.
    assert before.urn == after.urn
    assert after.inputs["leafCertificate"] == renewed.leaf != before.inputs["leafCertificate"]


def test_the_droplets_take_web_traffic_only_from_the_balancer(fleet: ProgramRun) -> None:
    firewall = fleet.one(FIREWALL).inputs
    balancer = fleet.one(BALANCER)
    inbound = {(r["protocol"], r.get("portRange")): r for r in firewall["inboundRules"]}

    assert firewall["dropletIds"] == [int(droplet_id(i)) for i in range(3)]
    assert inbound == {
        ("tcp", "22"): {"protocol": "tcp", "portRange": "22", "sourceAddresses": ["203.0.113.7/32", "2001:db8::/64"]},
        ("tcp", "80"): {"protocol": "tcp", "portRange": "80", "sourceLoadBalancerUids": [f"{balancer.name}-id"]},
        ("tcp", str(BALANCER_CHECK.port)): {
            "protocol": "tcp",
            "portRange": str(BALANCER_CHECK.port),
            "sourceLoadBalancerUids": [f"{balancer.name}-id"],
        },
        ("icmp", None): {"protocol": "icmp", "sourceAddresses": ANYWHERE},
    }
    # The balancer holds TLS: no 443 on the droplets.
    assert ("tcp", "443") not in inbound
    assert {r["protocol"] for r in firewall["outboundRules"]} == {"tcp", "udp", "icmp"}


def test_dns_points_at_the_balancer_and_no_aaaa_bypasses_it(good_config: dict[str, Any]) -> None:
    run = ran(fleet_config(good_config, wwwAlias=True))

    records = sorted((r.inputs["name"], r.inputs["type"], r.inputs["value"]) for r in run.of_type(DNS_RECORD))
    assert records == [("weather", "A", BALANCER_IPV4), ("www.weather", "A", BALANCER_IPV4)]


def test_the_cluster_trusts_exactly_the_three_droplets(fleet: ProgramRun) -> None:
    rules = fleet.one(DATABASE_FIREWALL).inputs["rules"]

    assert rules == [{"type": "droplet", "value": droplet_id(i)} for i in range(3)]


def test_database_nodes_and_size_reach_the_cluster(good_config: dict[str, Any]) -> None:
    run = ran(fleet_config(good_config, databaseNodes=2, databaseSize="db-s-2vcpu-4gb"))

    cluster = run.one(CLUSTER).inputs
    assert (cluster["nodeCount"], cluster["size"]) == (2, "db-s-2vcpu-4gb")


def test_an_app_without_data_gets_no_cluster(good_config: dict[str, Any]) -> None:
    run = ran({**good_config, "instances": 2, "database": "none", "https": False})

    assert run.of_type(CLUSTER) == run.of_type(DATABASE_FIREWALL) == []
    assert run.one(VPC) and run.one(BALANCER)
    assert "DATABASE_URL" not in reveal(run.named("app-deploy").inputs["stdin"])
    assert run.outputs["database_host"] is None


# The rolling deploy: one droplet at a time, the release command on the first only.


def test_each_droplet_gets_its_own_deployment_chained_in_order(fleet: ProgramRun) -> None:
    components = {r.name: r for r in fleet.of_type(APP_DEPLOYMENT)}

    assert sorted(components) == ["app", "app-2", "app-3"]
    # Each waits for the one before it to finish its deploy: a failure stops the rollout there.
    assert fleet.named("app-deploy").urn in components["app-2"].dependencies
    assert fleet.named("app-2-deploy").urn in components["app-3"].dependencies
    assert fleet.named("app-3-deploy").urn not in components["app-2"].dependencies
    # The first waits for the cluster's firewall to let the droplets in: its release command may migrate.
    assert fleet.named("database-firewall").urn in components["app"].dependencies


def test_each_deployment_reaches_its_own_droplet(fleet: ProgramRun) -> None:
    for index, deploy in enumerate(deploy_commands(fleet)):
        assert reveal(deploy.inputs["connection"])["host"] == droplet_ipv4(index)
        # A new droplet reruns its own steps, and only its own.
        triggers = reveal(deploy.inputs["triggers"])
        assert droplet_id(index) in triggers
        assert all(droplet_id(other) not in triggers for other in range(3) if other != index)


def test_only_the_first_droplet_runs_the_release_command(fleet: ProgramRun) -> None:
    first, *rest = deploy_commands(fleet)
    release = fleet.outputs["release_id"]
    bundle = f"/home/deploy/flaskdroplet/bundles/{release}.tar.gz"

    assert (
        first.inputs["create"]
        == f"sudo /bin/bash /home/deploy/flaskdroplet/deploy.sh {release} {bundle} {BALANCER_IPV4}"
    )
    assert len(rest) == 2
    for deploy in rest:
        assert deploy.inputs["create"] == (
            f"sudo /bin/bash /home/deploy/flaskdroplet/deploy.sh --skip-release-command --secondary {release} {bundle} "
            f"{BALANCER_IPV4}"
        )
    # Every droplet uploads the same bundle: the same release.
    assert {fleet.named(f"{name}-bundle").inputs["remotePath"] for name in ("app", "app-2", "app-3")} == {bundle}


def test_every_droplet_gets_the_database_url(fleet: ProgramRun) -> None:
    for deploy in deploy_commands(fleet):
        environment = DeployInput.from_json(reveal(deploy.inputs["stdin"])).environment
        assert f'DATABASE_URL="{EXPECTED_DATABASE_URL}"' in environment, deploy.name
    assert_password_only_on_stdin(fleet)


def test_growing_keeps_the_first_droplet_and_its_deployment(good_config: dict[str, Any], fleet: ProgramRun) -> None:
    one = ran(postgres_config(good_config, domain=DOMAIN, dnsZone="example.org"))

    for name in (
        "web-droplet",
        web_key(good_config),
        "web-firewall",
        "web-dns-a-weather",
        "app",
        "app-deploy",
        "network",
    ):
        assert one.named(name).urn == fleet.named(name).urn, name


# What the stack exports.


def test_outputs_name_the_balancer_and_every_droplet(fleet: ProgramRun) -> None:
    outputs = fleet.outputs

    assert outputs["ipv4_address"] == outputs["balancer_address"] == BALANCER_IPV4
    # The site at the balancer, which holds its certificate (not what each droplet's deploy reports).
    assert outputs["url"] == f"https://{DOMAIN}/"
    assert outputs["droplet_addresses"] == [droplet_ipv4(i) for i in range(3)]
    assert outputs["database_host"] == DATABASE_PRIVATE_HOST
    # The first droplet's login and logs: it runs the release command.
    assert outputs["ssh"] == f"ssh deploy@{DROPLET_IPV4}"
    assert outputs["logs"].startswith(f"ssh -t deploy@{DROPLET_IPV4} ")
    assert len(outputs["release_id"]) == 12
    assert outputs["warnings"] == [f"{droplet_ipv4(i)}: fail2ban is not running" for i in range(3)]
    assert outputs["state_volume"] is None


def test_alerts_watch_every_droplet_and_the_site_at_the_balancer(fleet: ProgramRun) -> None:
    for alert in fleet.of_type(MONITOR_ALERT):
        assert alert.inputs["entities"] == [droplet_id(i) for i in range(3)]
    check = fleet.one(UPTIME_CHECK)
    assert (check.inputs["target"], check.inputs["type"]) == (f"https://{DOMAIN}/", "https")
    # The site is checked once the rollout has reached the last droplet.
    assert fleet.named("app-3-deploy").urn in check.dependencies


def test_production_protects_the_droplets_the_balancer_and_the_data(good_config: dict[str, Any]) -> None:
    fleet = ran(fleet_config(good_config, production=True))
    one = ran(postgres_config(good_config, production=True))

    assert sorted(r.name for r in fleet.resources if r.protect) == [
        "database-cluster",
        "database-db",
        "web-2-droplet",
        "web-3-droplet",
        "web-balancer",
        "web-droplet",
    ]
    assert {r.type for r in one.resources if r.protect} == {DROPLET, RESERVED_IP, VOLUME, CLUSTER, DATABASE_DB}
    assert [r.name for r in ran(fleet_config(good_config)).resources if r.protect] == []


def test_preview_declares_the_same_fleet(good_config: dict[str, Any]) -> None:
    config = fleet_config(good_config, alertEmails=["ops@example.org"])
    preview = ran(config, preview=True)
    update = ran(config)

    assert sorted(r.name for r in preview.resources) == sorted(r.name for r in update.resources)


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
            "flask-droplet:https = True: expected a domain with instances = 2: the Load Balancer's certificate is "
            "for a domain name. Set domain (with dnsZone when DigitalOcean hosts its DNS, or with "
            "balancerCertificate and balancerCertificateKey when it is elsewhere)",
        ),
        (
            {"instances": 2, "database": "postgres", "domain": DOMAIN},
            "https",
            f"flask-droplet:https = True: expected a certificate the Load Balancer can serve for {DOMAIN}, with "
            "instances = 2: DigitalOcean issues its Let's Encrypt certificate only for a domain whose DNS it hosts. "
            "Set dnsZone to the domain's zone at DigitalOcean, or bring a certificate: balancerCertificate",
        ),
        ({"instances": 11, "database": "postgres"}, "instances", "expected a whole number from 1 to 10"),
        ({"database": "mysql"}, "database", "expected one of sqlite, postgres, none"),
        ({"database": "postgres", "databaseNodes": 4}, "databaseNodes", "expected a whole number from 1 to 3"),
        ({"database": "postgres", "databaseSize": "db-huge"}, "databaseSize", "expected a Managed PostgreSQL size"),
    ],
    ids=["sqlite", "linked-dirs", "https-without-domain", "https-without-zone", "too-many", "engine", "nodes", "size"],
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


def test_growing_a_stack_whose_droplet_has_a_volume_is_refused_before_any_resource(good_config: dict[str, Any]) -> None:
    droplet = {"id": int(DROPLET_ID), "name": "web-droplet", "region": "nyc3", "tags": [f"flask-droplet:{STACK}"]}
    grown = postgres_config(good_config, instances=3, https=False)

    refused = run_program(grown, existing_droplets=[{**droplet, "volumeIds": ["volume-id"]}])
    without_volume = run_program(grown, existing_droplets=[{**droplet, "volumeIds": []}])

    assert isinstance(refused.error, SettingsError)
    assert "flask-droplet:instances = 3: expected 1 while this stack's droplet keeps /var/lib/weather" in str(
        refused.error
    )
    assert refused.resources == []
    assert without_volume.error is None
