"""Renderers against golden files. Regenerate on purpose: UPDATE_GOLDEN=1 pytest tests/unit/test_render.py"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import runpy
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
import yaml

from agent.config import Config
from core.bundle import app_files, static_manifest
from core.cloudinit import FIRST_BOOT_ARCHIVE, render_user_data
from core.plan import WAIT_FOR_CLOUD_INIT
from core.render import (
    render_agent_settings,
    render_deploy_script,
    render_env_file,
    render_nginx_site,
    render_service_unit,
    render_socket_unit,
    render_sshd_config,
    server_config_files,
    server_manifest,
)
from core.settings import Settings, parse_settings
from tests.conftest import OFFSITE_CONFIG, example_public_key
from tests.pulumi_harness import PROJECT_DIR, TEST_HOST_KEYS

GOLDEN = Path(__file__).resolve().parent.parent / "golden"

#: Fixed settings for golden files: the example app, once on its IP address with a Volume, once
#: with a domain and its state on the droplet's disk, and once on three droplets behind a balancer
#: with a Managed PostgreSQL.
GOLDEN_CONFIGS: dict[str, dict[str, Any]] = {
    "ip": {
        "sshPublicKeys": [example_public_key("g")],
        "adminCidrs": ["203.0.113.7/32"],
        "workers": 3,
        **OFFSITE_CONFIG,
    },
    "domain": {
        "sshPublicKeys": [example_public_key("g")],
        "adminCidrs": ["203.0.113.7/32"],
        "domain": "weather.example.org",
        "staticDir": "",
        "appName": "forecast",
        "volumeSize": 0,
        "backupDays": 0,
    },
    "fleet": {
        "sshPublicKeys": [example_public_key("g")],
        "adminCidrs": ["203.0.113.7/32"],
        "domain": "weather.example.org",
        "dnsZone": "example.org",
        "instances": 3,
        "database": "postgres",
        "releaseCommand": "flask --app weather db upgrade",
    },
}
#: What each variant's server receives, as golden files: the agent's settings and the manifest of the
#: server's files (every unit, site and drop-in, with what a change of it notifies).
RENDERERS = {
    "settings.json": render_agent_settings,
    "manifest.json": lambda settings: server_config_files(settings)["manifest.json"],
}


def golden_settings(variant: str) -> Settings:
    return parse_settings(GOLDEN_CONFIGS[variant], PROJECT_DIR)


@pytest.mark.parametrize("variant", sorted(GOLDEN_CONFIGS))
@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_rendered_file_matches_golden(variant: str, name: str) -> None:
    rendered = RENDERERS[name](golden_settings(variant))
    golden = GOLDEN / variant / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_user_data_is_cloud_config_built_from_data() -> None:
    text = render_user_data(golden_settings("ip"), TEST_HOST_KEYS[0])
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)

    assert {"nginx", "ufw", "python3-venv"} <= set(document["packages"])
    assert document["ssh_pwauth"] is False
    assert document["disable_root"] is True
    app_user = document["users"][1]
    assert app_user == {
        "name": "weather",
        "gecos": "Runs weather",
        "system": True,
        "shell": "/usr/sbin/nologin",
        "homedir": "/srv/weather",
        "no_create_home": True,
        "lock_passwd": True,
    }
    assert document["ssh_authorized_keys"] == [example_public_key("g")]


def test_server_files_in_user_data_are_the_rendered_ones() -> None:
    settings = golden_settings("ip")
    files = {f["path"]: f for f in yaml.safe_load(render_user_data(settings, TEST_HOST_KEYS[0]))["write_files"]}

    assert files["/etc/nginx/sites-available/weather.conf"]["content"] == render_nginx_site(settings)
    assert files["/etc/systemd/system/weather.service"]["content"] == render_service_unit(settings)
    assert files["/etc/systemd/system/weather.socket"]["content"] == render_socket_unit(settings)
    assert files["/etc/ssh/sshd_config.d/10-flaskdroplet.conf"]["content"] == render_sshd_config(settings)
    # sshd's drop-in is in place before sshd starts; the rest waits for the packages.
    assert "defer" not in files["/etc/ssh/sshd_config.d/10-flaskdroplet.conf"]
    assert files["/etc/nginx/sites-available/weather.conf"]["defer"] is True


def test_nginx_site_drops_unknown_hosts_and_proxies_to_the_socket() -> None:
    site = render_nginx_site(golden_settings("domain"))

    assert "listen 80 default_server;" in site
    assert "return 444;" in site
    assert "server_name weather.example.org;" in site
    assert "server unix:/run/forecast.sock" in site
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert f"proxy_set_header {header}" in site
    assert "location /static/" not in site


def test_service_runs_as_the_app_user_and_restarts_on_failure() -> None:
    unit = render_service_unit(golden_settings("ip"))

    assert "User=weather\n" in unit
    assert "Restart=on-failure\n" in unit
    assert "ExecReload=/bin/kill -s HUP $MAINPID\n" in unit
    assert "--workers 3 " in unit


def test_socket_is_reachable_by_nginx_only() -> None:
    socket = render_socket_unit(golden_settings("ip"))

    assert "SocketUser=www-data\n" in socket
    assert "SocketMode=0600\n" in socket


def test_env_file_quotes_values_for_systemd() -> None:
    text = render_env_file({"B": 'say "hi" \\ bye', "A": "$HOME `x`"})

    assert text.splitlines()[0].startswith("# ")
    assert text.split("\n", 1)[1] == 'A="\\$HOME \\`x\\`"\nB="say \\"hi\\" \\\\ bye"\n'


def test_deploy_script_only_hands_its_words_to_the_agent() -> None:
    script = render_deploy_script(golden_settings("domain"))

    assert script.startswith("#!/usr/bin/env bash\n")
    assert script.splitlines()[-1] == 'exec /usr/bin/python3 -I /home/deploy/flaskdroplet/agent.pyz "$@"'
    assert len(script.splitlines()) == 3


def test_user_data_writes_the_manifests_first_boot_files_and_then_the_first_boot_phase() -> None:
    settings = golden_settings("ip")
    written = yaml.safe_load(render_user_data(settings, TEST_HOST_KEYS[0]))["write_files"]
    entries = [entry for entry in server_manifest(settings) if entry.first_boot]

    assert [(f["path"], f["content"], f.get("defer", False)) for f in written[: len(entries)]] == [
        (entry.path, entry.content, entry.first_boot == "deferred") for entry in entries
    ]
    assert [f["path"] for f in written[len(entries) :]] == [FIRST_BOOT_ARCHIVE]


def test_agent_settings_name_what_the_server_layout_does() -> None:
    settings = golden_settings("fleet")
    shipped = json.loads(render_agent_settings(settings))

    assert shipped["health_host"] == "weather.example.org"
    assert shipped["behind_balancer"] is True
    assert shipped["sandbox"][0] == ["UMask", "0027"]
    assert Config.from_json_object(shipped).release_command == ("flask", "--app", "weather", "db", "upgrade")


def worker_of(wsgi: Any, error_log: logging.Logger | None = None) -> Any:
    """What Gunicorn's hooks see of a worker: its app and its error log."""
    return types.SimpleNamespace(wsgi=wsgi, log=types.SimpleNamespace(error_log=error_log or logging.getLogger("_")))


@pytest.fixture
def logging_as_it_was() -> Iterator[None]:
    """The hooks change logging for the whole process, as in a worker; put it back after the test."""
    factory, formatter = logging.getLogRecordFactory(), flask.logging.default_handler.formatter
    yield
    logging.setLogRecordFactory(factory)
    flask.logging.default_handler.setFormatter(formatter)


@pytest.mark.usefixtures("logging_as_it_was")
def test_gunicorn_settings_put_the_request_id_in_the_lines_logged_during_a_request(tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir()
    (server / "gunicorn.conf.py").write_text(server_config_files(golden_settings("ip"))["gunicorn.conf.py"])
    (server / "static-manifest").write_text("")
    hooks = runpy.run_path(str(server / "gunicorn.conf.py"))
    app = flask.Flask("shop")
    # Flask's own handler, as in a worker where nothing else set up logging (pytest's capture has).
    app.logger.addHandler(flask.logging.default_handler)
    gunicorn_lines = io.StringIO()
    error_log = logging.getLogger("gunicorn.test.error")
    error_log.addHandler(logging.StreamHandler(gunicorn_lines))

    @app.get("/order")
    def order() -> tuple[str, int]:
        app.logger.warning("no stock of %s", "tea")
        error_log.error("worker busy")
        return "", 409

    worker = worker_of(app, error_log)
    hooks["post_worker_init"](worker)
    request = types.SimpleNamespace(headers=[("HOST", "shop.example"), ("X-REQUEST-ID", "trace-7f.3")])
    hooks["pre_request"](worker, request)
    app_lines = io.StringIO()
    assert app.test_client().get("/order", errors_stream=app_lines).status_code == 409
    hooks["post_request"](worker, request, {}, None)
    error_log.error("between requests")

    assert app_lines.getvalue() == "[WARNING] id=trace-7f.3 test_render: no stock of tea\n"
    assert gunicorn_lines.getvalue().splitlines() == [
        "[ERROR] id=trace-7f.3 worker busy",
        "[ERROR] id=- between requests",
    ]


def test_gunicorn_settings_link_static_files_by_content(tmp_path: Path) -> None:
    settings = golden_settings("ip")
    server = tmp_path / "server"
    server.mkdir()
    (server / "gunicorn.conf.py").write_text(server_config_files(settings)["gunicorn.conf.py"])
    (server / "static-manifest").write_text("0123456789ab style.css\nba9876543210 img/logo.svg\n")
    hooks = runpy.run_path(str(server / "gunicorn.conf.py"))
    app = flask.Flask("shop")

    class Middleware:  # wraps the app the way ProxyFix-style middleware does
        def __init__(self, app: flask.Flask) -> None:
            self.app = app

    hooks["post_worker_init"](worker_of(Middleware(app)))

    with app.test_request_context():
        assert flask.url_for("static", filename="style.css") == "/static/_v/0123456789ab/style.css"
        assert flask.url_for("static", filename="img/logo.svg") == "/static/_v/ba9876543210/img/logo.svg"
        # A file the manifest does not name keeps its plain URL.
        assert flask.url_for("static", filename="other.css") == "/static/other.css"


def test_static_manifest_names_each_static_file_by_its_content() -> None:
    settings = golden_settings("ip")
    files = app_files(settings.app.directory)
    manifest = dict(line.split(" ")[::-1] for line in static_manifest(settings, files).splitlines())
    css = settings.app.directory / "weather/static/style.css"

    assert set(manifest) == {"style.css", "favicon.svg"}
    assert manifest["style.css"] == hashlib.sha256(css.read_bytes()).hexdigest()[:12]
    assert static_manifest(golden_settings("domain"), files) == ""  # no staticDir: Flask serves them


@pytest.mark.parametrize("variant", sorted(GOLDEN_CONFIGS))
def test_at_most_50_lines_of_shell_run_on_the_server(variant: str) -> None:
    """Every line of shell the server runs: deploy.sh, cloud-init's runcmd, the wait for cloud-init, and each
    server file that is a shell script (ufw's hook); the agent, in Python, does the rest."""
    settings = golden_settings(variant)
    runcmd = yaml.safe_load(render_user_data(settings, TEST_HOST_KEYS[0]))["runcmd"]
    scripts = [
        entry.content
        for entry in server_manifest(settings)
        if entry.content and entry.content.startswith(("#!/bin/sh", "#!/bin/bash", "#!/usr/bin/env bash"))
    ]
    lines = (
        len(render_deploy_script(settings).splitlines())
        + len(runcmd)
        + len(WAIT_FOR_CLOUD_INIT.splitlines())
        + sum(len(script.splitlines()) for script in scripts)
    )

    assert len(scripts) == 1  # ufw's after.init
    assert lines <= 50
