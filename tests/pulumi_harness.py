"""Run the real Pulumi program under `pulumi.runtime.set_mocks` and record what it declares."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import runpy
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.settings import ROOT
from pulumi.runtime.stack import wait_for_rpcs

from core.settings import _ssh_public_key_problem, ssh_key_fingerprint
from core.ssh_host_keys import HostKeys
from tests import do_api
from tests.do_api import AccountAnswer

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT = "flask-droplet"
STACK = "test"

DROPLET_ID = "424242"  # the Firewall wants droplet ids that parse as integers
DROPLET_IPV4 = "203.0.113.10"
DROPLET_IPV6 = "2001:db8::10"
RESERVED_IPV4 = "203.0.113.50"
BALANCER_IPV4 = "203.0.113.80"
#: What the Managed PostgreSQL cluster and the app's database user report.
DATABASE_PRIVATE_HOST = "private-db-postgresql-nyc3-00000-do-user-0-0.f.db.ondigitalocean.com"
DATABASE_HOST = "db-postgresql-nyc3-00000-do-user-0-0.f.db.ondigitalocean.com"
DATABASE_PORT = 25060
DATABASE_ADMIN_PASSWORD = "AVNS_admin-password-1a2b3c"
#: The Spaces key the program makes for the droplet's off-site copies.
SPACES_ACCESS_KEY = "DO00OFFSITEACCESSKEY"
SPACES_SECRET_KEY = "offsite-secret-key-5e6f"
#: The account's Spaces key, which the provider makes buckets with.
SPACES_PROVIDER_CONFIG = {
    "digitalocean:spacesAccessId": "DO00ACCOUNTKEY",
    "digitalocean:spacesSecretKey": "account-secret",
}


def droplet_index(name: str) -> int:
    """0 for a WebServer's first droplet (`web-droplet`), N - 1 for its Nth (`web-N-droplet`)."""
    match = re.search(r"-(\d+)-droplet$", name)
    return int(match[1]) - 1 if match else 0


def droplet_id(index: int) -> str:
    """The mocked id of the droplet at `index`: each its own, and each parses as an integer."""
    return str(int(DROPLET_ID) + index)


def droplet_ipv4(index: int) -> str:
    """The mocked public IPv4 address of the droplet at `index`."""
    return f"203.0.113.{10 + index}"


def droplet_ipv6(index: int) -> str:
    return f"2001:db8::{10 + index}"


#: What DigitalOcean lists as the regions that take new droplets, and some it closed to them.
AVAILABLE_REGIONS = (
    "nyc1",
    "nyc3",
    "ams3",
    "sfo2",
    "sfo3",
    "sgp1",
    "lon1",
    "fra1",
    "tor1",
    "blr1",
    "syd1",
    "atl1",
    "ric1",
)
CLOSED_REGIONS = ("nyc2", "ams2", "sfo1")
#: The id of the region's default VPC, which the account has in every region unless a test says otherwise.
DEFAULT_VPC_ID = "c0ffee00-0000-4000-8000-000000000001"


def default_vpc(region: str, **extra: Any) -> dict[str, Any]:
    """A region's default VPC as the provider's `getVpc` answers it."""
    return {
        "id": DEFAULT_VPC_ID,
        "name": f"default-{region}",
        "region": region,
        "description": "",
        "ipRange": "10.108.0.0/20",
        "urn": f"do:vpc:{DEFAULT_VPC_ID}",
        "default": True,
        "createdAt": "2024-01-01 00:00:00 +0000 UTC",
        **extra,
    }


#: Fixed host keys (tests/golden/host-keys.json), one for each of up to three droplets.
TEST_HOST_KEYS = tuple(
    HostKeys(**keys) for keys in json.loads((PROJECT_DIR / "tests/golden/host-keys.json").read_text())["keys"]
)


def host_key_index(name: str) -> int:
    """0 for a WebServer's first droplet's host key (`web-droplet-host-key`), N - 1 for its Nth."""
    return droplet_index(name.removesuffix("-host-key"))


#: What the mocked deploy command prints: the release id, the URL the site answers at, a warning.
DEPLOY_STDOUT = f"0123456789ab\nhttps://{RESERVED_IPV4}/\nwarning: fail2ban is not running\n"


@dataclass
class Declared:
    """One resource the program registered."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    parent_types: tuple[str, ...]
    protect: bool = False
    delete_before_replace: bool = False
    dependencies: tuple[str, ...] = ()
    """URNs of the resources this one's inputs come from."""
    ignore_changes: tuple[str, ...] = ()
    alias_names: tuple[str, ...] = ()
    """The names of the resource's aliases: what it was called before."""
    delete_timeout: str = ""


@dataclass
class ProgramRun:
    resources: list[Declared] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    error: BaseException | None = None
    calls: list[str] = field(default_factory=list)
    """Tokens of the provider functions the program called, in order."""

    def of_type(self, type_: str) -> list[Declared]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Declared:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {len(found)}"
        return found[0]

    def named(self, name: str) -> Declared:
        return next(r for r in self.resources if r.name == name)


#: DigitalOcean's Ubuntu 24.04 image as `getImage` answers it: an id, and the slug droplets are listed by.
DISTRIBUTION_IMAGES = ({"id": 169034872, "slug": "ubuntu-24-04-x64", "name": "24.04 (LTS) x64", "type": "base"},)


@dataclass
class Account:
    """What the mocked DigitalOcean account holds already, answered in the provider's own field names."""

    droplets: list[dict[str, Any]] = field(default_factory=list)
    """The stack's droplets (`getDroplets`, by tag)."""
    vpcs: list[dict[str, Any]] | None = None
    """The account's VPCs (`getVpc`); None for a default VPC in every region."""
    volumes: list[dict[str, Any]] = field(default_factory=list)
    """Volumes (`getVolume`, by name and region)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """The zone's DNS records (`getRecords`)."""
    ssh_keys: list[dict[str, Any]] = field(default_factory=list)
    """The account's SSH keys (`getSshKeys`)."""
    reserved_ips: list[dict[str, Any]] = field(default_factory=list)
    """The account's Reserved IPs (`getReservedIp`, by address)."""
    domains: list[str] | None = None
    """The domains (DNS zones) it holds; None for any zone a test names."""
    images: list[dict[str, Any]] = field(default_factory=lambda: list(DISTRIBUTION_IMAGES))
    """The images it may use (`getImage`, by slug or id): DigitalOcean's, and its snapshots."""
    api: AccountAnswer = field(default_factory=AccountAnswer)
    """What `GET /v2/account` answers (tests/do_api.py): the account's address, or a refusal."""


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, account: Account, deploy_stdout: str = DEPLOY_STDOUT) -> None:
        self.names: list[tuple[str, str]] = []
        self.account = account
        self.existing_droplets = account.droplets
        self.deploy_stdout = deploy_stdout
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "digitalocean:index/droplet:Droplet":
            index = droplet_index(args.name)
            outputs.update(
                ipv4Address=droplet_ipv4(index), ipv6Address=droplet_ipv6(index), urn="do:droplet:" + droplet_id(index)
            )
            return droplet_id(index), outputs
        if args.typ == "pulumi-python:dynamic:Resource" and args.name.endswith("-host-key"):
            keys = TEST_HOST_KEYS[host_key_index(args.name)]
            outputs.update(keys.as_dict(), ed25519_fingerprint=keys.fingerprint)
            return keys.fingerprint, outputs
        if args.typ == "digitalocean:index/loadBalancer:LoadBalancer":
            outputs.update(ip=BALANCER_IPV4, status="active")
        if args.typ == "digitalocean:index/certificate:Certificate":
            # The provider names it (autonaming) when the program does not.
            outputs.setdefault("name", f"{args.name}-a1b2c3d")
        if args.typ == "digitalocean:index/databaseCluster:DatabaseCluster":
            outputs.update(
                host=DATABASE_HOST,
                privateHost=DATABASE_PRIVATE_HOST,
                port=DATABASE_PORT,
                user="doadmin",
                password=DATABASE_ADMIN_PASSWORD,
                database="defaultdb",
            )
        if args.typ == "digitalocean:index/spacesBucket:SpacesBucket":
            outputs.setdefault("name", f"{args.name}-a1b2c3d")
        if args.typ == "digitalocean:index/spacesKey:SpacesKey":
            outputs.update(accessKey=SPACES_ACCESS_KEY, secretKey=SPACES_SECRET_KEY)
        if args.typ == "digitalocean:index/sshKey:SshKey":
            outputs["fingerprint"] = ssh_key_fingerprint(args.inputs["publicKey"])
        if args.typ == "digitalocean:index/reservedIp:ReservedIp":
            outputs["ipAddress"] = RESERVED_IPV4
        if args.typ == "command:remote:Command":
            outputs.update(stdout=self.deploy_stdout if args.name.endswith("-deploy") else "", stderr="")
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append(args.token)
        if args.token == "digitalocean:index/getDroplets:getDroplets":
            droplets = self.existing_droplets
            for wanted in args.args.get("filters", []):
                if wanted["key"] == "tags":
                    droplets = [d for d in droplets if set(d.get("tags", [])) & set(wanted["values"])]
            return {"droplets": droplets, "id": "droplets"}, []
        if args.token == "digitalocean:index/getRegions:getRegions":
            regions = [{"slug": slug, "name": slug, "available": True} for slug in AVAILABLE_REGIONS]
            regions += [{"slug": slug, "name": slug, "available": False} for slug in CLOSED_REGIONS]
            return {"regions": regions, "id": "regions"}, []
        if args.token == "digitalocean:index/getVpc:getVpc":
            region = args.args["region"]
            vpcs = self.account.vpcs if self.account.vpcs is not None else [default_vpc(region)]
            found = [vpc for vpc in vpcs if vpc["region"] == region and vpc["default"]]
            if len(found) != 1:
                # The provider's own words (`findRegionDefaultVPC`).
                return {}, [("region", f"Error retrieving VPC: unable to find default VPC in {region} region")]
            return found[0], []
        if args.token == "digitalocean:index/getVolume:getVolume":
            name, region = args.args["name"], args.args.get("region")
            volumes = [v for v in self.account.volumes if v["name"] == name and region in (None, v["region"])]
            if not volumes:
                return {}, [("name", f"no volumes found with name {name}")]
            return volumes[0], []
        if args.token == "digitalocean:index/getSshKeys:getSshKeys":
            return {"sshKeys": self.account.ssh_keys, "id": "ssh-keys"}, []
        if args.token == "digitalocean:index/getReservedIp:getReservedIp":
            address = args.args["ipAddress"]
            found = [ip for ip in self.account.reserved_ips if ip["ipAddress"] == address]
            if not found:
                # godo's words for the API's 404, as the provider passes them on.
                return {}, [
                    (
                        "ipAddress",
                        f"Error retrieving reserved IP: GET https://api.digitalocean.com/v2/reserved_ips/{address}: "
                        '404 (request "5e2b1b0c-0000-4000-8000-000000000000") The resource you were accessing '
                        "could not be found.",
                    )
                ]
            return {"id": address, **found[0]}, []
        if args.token == "digitalocean:index/getImage:getImage":
            wanted = args.args.get("slug") or args.args.get("id")
            found = [image for image in self.account.images if wanted in (image["slug"], image["id"])]
            if not found:
                # The provider's words for the API's 404 (`dataSourceDigitalOceanImageRead`).
                return {}, [
                    (
                        "slug",
                        f"image not found: GET https://api.digitalocean.com/v2/images/{wanted}: 404 "
                        '(request "5e2b1b0c-0000-4000-8000-000000000000") The resource you were accessing could '
                        "not be found.",
                    )
                ]
            return found[0], []
        if args.token == "digitalocean:index/getRecords:getRecords":
            domain = args.args["domain"]
            if self.account.domains is not None and domain not in self.account.domains:
                # godo's words for the API's 404, as the provider passes them on (`getDigitalOceanRecords`).
                return {}, [
                    (
                        "domain",
                        f"Error retrieving records: GET https://api.digitalocean.com/v2/domains/{domain}/records?"
                        'page=1&per_page=200: 404 (request "5e2b1b0c-0000-4000-8000-000000000000") The resource you '
                        "were accessing could not be found.",
                    )
                ]
            records = [r for r in self.account.records if r["domain"] == args.args["domain"]]
            for wanted in args.args.get("filters", []):
                records = [r for r in records if str(r[wanted["key"]]) in wanted["values"]]
            return {"domain": args.args["domain"], "records": records, "id": args.args["domain"]}, []
        return {}, []


class RecordingMonitor(pulumi.runtime.mocks.MockMonitor):
    """The mock monitor, also keeping the options each resource was registered with."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.options: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.options[response.urn] = {
            "protect": bool(request.protect),
            "delete_before_replace": bool(request.deleteBeforeReplace),
            "dependencies": tuple(request.dependencies),
            "ignore_changes": tuple(request.ignoreChanges),
            "alias_names": tuple(alias.spec.name for alias in request.aliases if alias.HasField("spec")),
            "delete_timeout": request.customTimeouts.delete,
        }
        return response


def config_values(config: dict[str, Any]) -> dict[str, str]:
    """Stack config as Pulumi hands it to a program: every value a string, structured ones as JSON.

    A key with a namespace (`digitalocean:spacesAccessId`) is that namespace's; any other is the project's."""
    return {
        key if ":" in key else f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in config.items()
    }


@contextlib.contextmanager
def ssh_agent(key_lines: list[str] | None) -> Iterator[None]:
    """SSH_AUTH_SOCK at an SSH agent that holds `key_lines`, in that order (None: no agent at all)."""
    saved = os.environ.pop("SSH_AUTH_SOCK", None)
    if key_lines is None:
        try:
            yield
        finally:
            if saved is not None:
                os.environ["SSH_AUTH_SOCK"] = saved
        return
    blobs = [base64.b64decode(line.split()[1]) for line in key_lines]
    answer = struct.pack(">BI", 12, len(blobs)) + b"".join(
        struct.pack(">I", len(blob)) + blob + struct.pack(">I", 4) + b"test" for blob in blobs
    )
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "agent.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen()
        # Polled, and joined before the socket closes: a thread still blocked on a closed descriptor
        # would answer on whatever socket takes its number next (an HTTP server's, say).
        server.settimeout(0.05)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                with conn, contextlib.suppress(OSError, struct.error):
                    conn.settimeout(5)
                    length = struct.unpack(">I", conn.recv(4))[0]
                    conn.recv(length)
                    conn.sendall(struct.pack(">I", len(answer)) + answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        os.environ["SSH_AUTH_SOCK"] = path
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
            server.close()
            os.environ.pop("SSH_AUTH_SOCK", None)
            if saved is not None:
                os.environ["SSH_AUTH_SOCK"] = saved


def config_public_keys(config: dict[str, Any]) -> list[str]:
    """The well-formed public keys of a stack config: what a user's agent would hold."""
    keys = config.get("sshPublicKeys", [])
    return (
        [k for k in keys if isinstance(k, str) and _ssh_public_key_problem(k) is None] if isinstance(keys, list) else []
    )


def run_program(
    config: dict[str, Any],
    *,
    preview: bool = False,
    existing_droplets: list[dict[str, Any]] | None = None,
    account: Account | None = None,
    agent_keys: list[str] | bool | None = True,
    deploy_stdout: str = DEPLOY_STDOUT,
) -> ProgramRun:
    """Run `__main__.py` with this stack config; returns what was declared and exported.

    `existing_droplets` is what DigitalOcean lists as the stack's droplets already (by tag), and
    `account` all it holds (droplets, VPCs, Volumes, records); `agent_keys` what the SSH agent holds
    (True: the config's public keys; None: no agent); `deploy_stdout` is what the deploy command
    prints (its release id, the site's URL, warnings).
    """
    account = account or Account()
    if existing_droplets is not None:
        account.droplets = existing_droplets
    keys = config_public_keys(config) if agent_keys is True else agent_keys
    with ssh_agent(keys if isinstance(keys, list) else None):
        return _run_program(config, preview=preview, account=account, deploy_stdout=deploy_stdout)


def _run_program(config: dict[str, Any], *, preview: bool, account: Account, deploy_stdout: str) -> ProgramRun:
    with do_api.serving() as api:
        api.answer = account.api
        provider = {"digitalocean:apiEndpoint": do_api.endpoint(api), "digitalocean:token": do_api.TOKEN}
        return _run_mocked({**provider, **config}, preview=preview, account=account, deploy_stdout=deploy_stdout)


def _run_mocked(config: dict[str, Any], *, preview: bool, account: Account, deploy_stdout: str) -> ProgramRun:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks(account, deploy_stdout)
    ROOT.set(None)  # a fresh stack resource for every run
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=preview, monitor=monitor)
    secret_keys = [f"{PROJECT}:{key}" for key in ("appEnv", "sshPrivateKey", "balancerCertificateKey")]
    pulumi.runtime.set_all_config(config_values(config), secret_keys=secret_keys)
    run = ProgramRun()

    try:
        runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")
    except Exception as err:  # the program's own error is what the test looks at
        run.error = err
    loop.run_until_complete(wait_for_rpcs())

    stack = pulumi.runtime.get_root_resource()
    if run.error is None and stack is not None:
        for name, value in stack.outputs.items():  # type: ignore[attr-defined]
            output = pulumi.Output.from_input(value)
            run.outputs[name] = loop.run_until_complete(output.future())
            if loop.run_until_complete(output.is_secret()):
                run.secret_outputs.add(name)

    for urn, registration in monitor.get_registered_resources().items():
        qualified = urn.split("::")[2]
        types = tuple(qualified.split("$"))
        name = urn.split("::")[3]
        if types[-1] == "pulumi:pulumi:Stack":
            continue
        options = monitor.options.get(urn, {})
        run.resources.append(Declared(types[-1], name, urn, dict(registration.state), types[:-1], **options))
    run.calls = list(mocks.calls)
    loop.close()
    return run


SECRET_SIG = "4dabf18193072939515e22adb298388d"


def is_secret(value: Any) -> bool:
    """Whether a recorded input was marked secret by the program."""
    return isinstance(value, dict) and SECRET_SIG in value


def reveal(value: Any) -> Any:
    """A recorded input with its secret wrapper, if any, removed."""
    return value["value"] if is_secret(value) else value
