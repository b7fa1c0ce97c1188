"""The example app on the rehearsal machine: cloud-init, nginx, Gunicorn, ufw, sshd, redeploys."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.render import UFW_ALLOWED_PORTS
from rehearsal import run
from tests.e2e.conftest import APP_PORTS, Rehearsal, bring_up, open_tcp_ports, ssh_as

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    yield from bring_up({})


def test_cloud_init_finished_without_errors_or_warnings(rehearsal: Rehearsal) -> None:
    status = json.loads(rehearsal.machine.guest(["cloud-init", "status", "--format", "json"]).stdout)

    assert status["status"] == "done"
    assert status["errors"] == []
    assert status["recoverable_errors"] == {}
    schema = rehearsal.machine.guest(["cloud-init", "schema", "--system"])
    assert schema.returncode == 0, schema.stdout + schema.stderr


def test_page_api_and_static_answer_through_nginx(rehearsal: Rehearsal) -> None:
    status, headers, body = rehearsal.get("/")
    assert status == 200
    assert b"<svg" in body
    assert rehearsal.release_id.encode() in body
    assert headers["Server"].startswith("nginx")

    status, _, body = rehearsal.get("/api/forecast?days=3")
    assert status == 200
    assert len(json.loads(body)["days"]) == 3

    status, _, body = rehearsal.get("/api/forecast?days=99")
    assert status == 400
    assert "days" in json.loads(body)["error"]

    status, headers, body = rehearsal.get("/static/style.css")
    assert status == 200
    assert body == (rehearsal.settings.app_dir / "weather/static/style.css").read_bytes()
    assert "max-age=604800" in headers["Cache-Control"]


def test_health_reports_the_deployed_release(rehearsal: Rehearsal) -> None:
    status, _, body = rehearsal.get("/healthz")

    assert status == 200
    assert json.loads(body)["version"] == rehearsal.release_id


def test_unknown_hosts_get_no_answer(rehearsal: Rehearsal) -> None:
    with pytest.raises(OSError):
        rehearsal.get("/", host="attacker.example")


def test_only_ssh_http_and_https_are_open(rehearsal: Rehearsal) -> None:
    ports = [*range(1, 1025), *APP_PORTS]

    assert open_tcp_ports(rehearsal.machine.address, ports) == {22, 80, 443}


def test_gunicorn_runs_as_the_app_user_behind_a_socket_only_nginx_can_use(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    layout = rehearsal.layout
    service = host.service(layout.service_unit)

    assert service.is_running
    assert service.is_enabled
    assert host.service(layout.socket_unit).is_enabled
    workers = host.process.filter(comm="gunicorn")
    assert len(workers) == 1 + rehearsal.settings.workers
    assert {p.user for p in workers} == {layout.app_user}
    sock = host.file(layout.socket_path)
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("www-data", "www-data", 0o600)
    # Nothing of Gunicorn's listens on TCP.
    assert not [s for s in host.socket.get_listening_sockets() if s.startswith("tcp") and ":8000" in s]


def test_nginx_is_active(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()

    assert host.service("nginx").is_running
    assert host.service("nginx").is_enabled
    assert host.run("nginx -t").rc == 0


def test_ufw_is_active_with_exactly_the_intended_rules(rehearsal: Rehearsal) -> None:
    status = rehearsal.host().check_output("ufw status verbose")

    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing)" in status
    rules = [tuple(part.strip() for part in line.split("ALLOW IN")) for line in status.splitlines() if "ALLOW" in line]
    expected = [(port, "Anywhere") for port in UFW_ALLOWED_PORTS]
    expected += [(f"{port} (v6)", "Anywhere (v6)") for port in UFW_ALLOWED_PORTS]
    assert sorted(rules) == sorted(expected)


def test_sshd_refuses_root_and_passwords(rehearsal: Rehearsal) -> None:
    effective = set(rehearsal.host().check_output("sshd -T").splitlines())
    assert {"permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no"} <= effective

    key = str(rehearsal.machine.private_key)
    assert ssh_as("deploy", rehearsal.machine, "-i", key).returncode == 0
    root = ssh_as("root", rehearsal.machine, "-i", key)
    assert root.returncode == 255
    assert "Permission denied" in root.stderr
    password = ssh_as("deploy", rehearsal.machine, "-o", "PubkeyAuthentication=no")
    assert "Permission denied (publickey)" in password.stderr


def test_app_files_and_environment_have_the_designed_owners_and_modes(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    layout = rehearsal.layout
    app_user = host.user(layout.app_user)

    assert app_user.shell == "/usr/sbin/nologin"
    assert "sudo" not in app_user.groups
    env = host.file(layout.env_file)
    assert (env.user, env.group, env.mode) == ("root", layout.app_user, 0o640)
    assert "\nSECRET_KEY=" in env.content_string
    config_dir = host.file(layout.config_dir)
    assert (config_dir.user, config_dir.group, config_dir.mode) == ("root", layout.app_user, 0o750)
    release = host.file(f"{layout.releases}/{rehearsal.release_id}")
    assert (release.user, release.mode) == ("root", 0o755)
    assert host.file(layout.current).linked_to == f"{layout.releases}/{rehearsal.release_id}"
    code = host.file(f"{layout.current}/app/wsgi.py")
    assert (code.user, code.mode) == ("root", 0o644)
    # The app's user cannot change its own code.
    assert host.run(f"runuser -u {layout.app_user} -- touch {layout.current}/app/wsgi.py").rc != 0


def test_unchanged_app_deploys_nothing(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    pid_before = host.check_output(f"systemctl show -p MainPID --value {rehearsal.layout.service_unit}")

    release_id, ran = run.redeploy("dev", {})

    assert (release_id, ran) == (rehearsal.release_id, {})
    # Even the deploy script itself, run again, leaves the running service alone.
    bundle = rehearsal.layout.bundle(release_id)
    again = host.run(f"bash {rehearsal.layout.deploy_script} {release_id} {bundle} < {rehearsal.layout.env_file}")
    assert again.rc == 0, again.stderr
    assert "already live" in again.stderr
    assert host.check_output(f"systemctl show -p MainPID --value {rehearsal.layout.service_unit}") == pid_before


def test_changed_app_serves_the_new_version(rehearsal: Rehearsal, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(rehearsal.settings.app_dir, app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    css = app / "weather/static/style.css"
    css.write_text(css.read_text() + "\n/* changed */\n")

    release_id, ran = run.redeploy("dev", {"appDir": str(app)})

    assert list(ran) == ["bundle", "deploy"]
    assert release_id != rehearsal.release_id
    assert json.loads(rehearsal.get("/healthz")[2])["version"] == release_id
    assert rehearsal.get("/static/style.css")[2].endswith(b"/* changed */\n")
    # The requirements did not change: the release reuses the first release's virtualenv.
    host = rehearsal.host()
    old_venv = host.file(f"{rehearsal.layout.releases}/{rehearsal.release_id}/app/.venv").linked_to
    assert host.file(f"{rehearsal.layout.current}/app/.venv").linked_to == old_venv
