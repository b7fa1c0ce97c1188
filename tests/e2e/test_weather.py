"""The example app on the rehearsal machine: cloud-init, nginx, Gunicorn, ufw, sshd, redeploys."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.policy import UFW_ALLOWED_PORTS
from rehearsal import run
from tests.e2e.browser import Browser
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
    assert body == (rehearsal.settings.app.directory / "weather/static/style.css").read_bytes()
    assert headers["Cache-Control"] == "no-cache"


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
    assert len(workers) == 1 + rehearsal.settings.app.workers
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
    shutil.copytree(rehearsal.settings.app.directory, app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
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


def test_a_browser_sees_changed_static_files_at_once_and_keeps_the_rest(rehearsal: Rehearsal, tmp_path: Path) -> None:
    before = tmp_path / "before"
    shutil.copytree(rehearsal.settings.app.directory, before, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    run.redeploy("dev", {"appDir": str(before)})
    browser = Browser(rehearsal.url.rstrip("/"), rehearsal.open)
    old_page = browser.load("/")
    old_css = (before / "weather/static/style.css").read_bytes()
    etags = {name: rehearsal.get(f"/static/{name}")[1]["ETag"] for name in ("style.css", "favicon.svg")}

    # The stylesheet changes but keeps its size (nginx's ETag alone, size and time, would not see it).
    after = tmp_path / "after"
    shutil.copytree(before, after)
    new_css = old_css.replace(b"1", b"2", 1)
    assert new_css != old_css and len(new_css) == len(old_css)
    (after / "weather/static/style.css").write_bytes(new_css)
    run.redeploy("dev", {"appDir": str(after)})
    browser.forget_what_happened()
    new_page = browser.load("/")

    css_url = next(path for path in new_page if path.endswith("/style.css"))
    icon_url = next(path for path in new_page if path.endswith("/favicon.svg"))
    assert new_page[css_url] == new_css
    assert css_url not in old_page
    assert css_url in browser.downloaded
    # The unchanged icon keeps its URL: the browser uses its copy without asking.
    assert icon_url in old_page
    assert icon_url in browser.reused and icon_url not in browser.downloaded + browser.revalidated
    status, headers, _ = rehearsal.get(css_url)
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers.get("Content-Encoding") is None or "gzip" in headers.get("Vary", "")

    # A page still open from the release before loads that release's files.
    old_css_url = next(path for path in old_page if path.endswith("/style.css"))
    assert rehearsal.get(old_css_url)[2] == old_css

    # Unversioned URLs are revalidated by content: the changed file comes anew, the unchanged one is a 304.
    for name, expected in (("style.css", 200), ("favicon.svg", 304)):
        url = f"{rehearsal.url}static/{name}"
        request = urllib.request.Request(url, headers={"If-None-Match": etags[name]})  # noqa: S310 - the site
        try:
            with rehearsal.open(request) as response:
                status, cache_control = response.status, response.headers["Cache-Control"]
        except urllib.error.HTTPError as err:
            status, cache_control = err.code, err.headers["Cache-Control"]
        assert (status, cache_control) == (expected, "no-cache"), name


def cache_status(rehearsal: Rehearsal, path: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(rehearsal.url.rstrip("/") + path, headers=headers or {})  # noqa: S310 - the site
    with rehearsal.open(request) as response:
        return str(response.headers["X-Cache-Status"])


def test_cacheable_answers_come_from_nginx_until_the_next_deploy(rehearsal: Rehearsal, tmp_path: Path) -> None:
    path = "/api/forecast?days=2"
    cache_status(rehearsal, path)

    assert cache_status(rehearsal, path) == "HIT"
    # A signed-in visitor (any cookie) or credentials: the app's own answer.
    assert cache_status(rehearsal, path, {"Cookie": "session=abc"}) == "BYPASS"
    assert cache_status(rehearsal, path, {"Authorization": "Bearer abc"}) == "BYPASS"
    # An answer the app does not mark cacheable is never kept.
    assert [cache_status(rehearsal, "/healthz") for _ in range(2)] == ["MISS", "MISS"]

    app = tmp_path / "app"
    shutil.copytree(rehearsal.settings.app.directory, app, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    (app / "weather/views.py").write_text((app / "weather/views.py").read_text() + "\n# Another release.\n")
    release_id, _ = run.redeploy("dev", {"appDir": str(app)})

    assert cache_status(rehearsal, path) == "MISS"
    assert json.loads(rehearsal.get("/healthz")[2])["version"] == release_id


def test_each_request_is_logged_once_by_nginx_with_its_id(rehearsal: Rehearsal) -> None:
    host = rehearsal.host()
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    request = urllib.request.Request(  # noqa: S310 - the site
        rehearsal.url + "healthz?logged=1", headers={"X-Request-ID": "trace-4f2a.91"}
    )
    with rehearsal.open(request):
        pass
    rehearsal.get("/healthz?logged=2")

    lines = [line for line in rehearsal.access_log(wait_for="logged=2") if "logged=" in line]
    assert len(lines) == 2
    assert "id=trace-4f2a.91 " in lines[0]
    assert re.search(r" id=[0-9a-f]{32} ", lines[1])
    # Gunicorn writes no access log of its own.
    journal = host.check_output(f"journalctl -u {rehearsal.layout.service_unit} --since '{since}' --no-pager")
    assert "logged=" not in journal
