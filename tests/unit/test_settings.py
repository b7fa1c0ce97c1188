"""Bad config is refused, all problems at once, before any resource exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from core.appsource import GUNICORN
from core.settings import DEFAULTS, SettingsError, parse_settings, volume_name
from tests.conftest import example_public_key
from tests.pulumi_harness import PROJECT_DIR, run_program

# (config change, key named in the message, text the message must contain)
BAD_CONFIGS: list[tuple[dict[str, Any], str, str]] = [
    ({"region": "mars1"}, "region", "'mars1'"),
    ({"size": "s-64vcpu-huge"}, "size", "'s-64vcpu-huge'"),
    ({"image": "debian-12-x64"}, "image", "ubuntu-24-04-x64"),
    ({"sshPublicKeys": [], "sshKeyFingerprints": []}, "sshPublicKeys", "at least one"),
    ({"sshPublicKeys": ["not a key"]}, "sshPublicKeys", "OpenSSH public key"),
    ({"sshPublicKeys": ["ssh-ed25519 %%%notbase64%%%"]}, "sshPublicKeys", "not base64"),
    ({"sshPublicKeys": [example_public_key().replace("ssh-ed25519", "ssh-rsa", 1)]}, "sshPublicKeys", "match"),
    ({"sshKeyFingerprints": ["zz:11"]}, "sshKeyFingerprints", "MD5 fingerprint"),
    ({"adminCidrs": None}, "adminCidrs", "no default"),
    ({"adminCidrs": []}, "adminCidrs", "at least one"),
    ({"adminCidrs": ["203.0.113.7/33"]}, "adminCidrs", "'203.0.113.7/33'"),
    ({"adminCidrs": ["10.0.0.1/8"]}, "adminCidrs", "host bits"),
    ({"adminCidrs": "203.0.113.7/32"}, "adminCidrs", "list of strings"),
    ({"appDir": "no-such-dir"}, "appDir", "does not exist"),
    ({"appDir": "components"}, "appDir", "a uv.lock (with its pyproject.toml), a requirements.txt, or a pyproject"),
    ({"wsgiTarget": "wsgi"}, "wsgiTarget", "module:callable"),
    ({"wsgiTarget": "missing_module:app"}, "wsgiTarget", "missing_module is not in"),
    ({"staticDir": "../outside"}, "staticDir", "inside appDir"),
    ({"staticDir": "no/such/static"}, "staticDir", "does not exist"),
    ({"workers": -1}, "workers", "from 0 to 32"),
    ({"workers": 33}, "workers", "from 0 to 32"),
    ({"workers": "many"}, "workers", "'many'"),
    ({"releasesToKeep": 0}, "releasesToKeep", "from 1 to 50"),
    ({"domain": "not a host"}, "domain", "hostname"),
    ({"domain": "localhost"}, "domain", "fully qualified"),
    ({"appName": "Bad_Name"}, "appName", "lowercase"),
    ({"appName": "root"}, "appName", "none of"),
    ({"healthPath": "healthz"}, "healthPath", "starting with '/'"),
    ({"appEnv": {"1BAD": "x"}}, "appEnv", "variable names"),
    ({"appEnv": {"APP_VERSION": "x"}}, "appEnv", "none of"),
    ({"appEnv": {"MULTI": "line\nvalue"}}, "appEnv.MULTI", "single-line"),
    ({"appEnv": "not json"}, "appEnv", "map"),
    ({"sshPrivateKey": "hunter2"}, "sshPrivateKey", "private key"),
    ({"appEnv": {"PYTHONPATH": "/tmp"}}, "appEnv", "none of"),
    ({"linkedDirs": ["/var/data"]}, "linkedDirs", "relative paths inside appDir"),
    ({"linkedDirs": ["../outside"]}, "linkedDirs", "'../outside'"),
    ({"linkedDirs": [".venv"]}, "linkedDirs", "none of"),
    ({"linkedDirs": ["weather/static/uploads"]}, "linkedDirs", "not inside staticDir"),
    ({"linkedDirs": "uploads"}, "linkedDirs", "list of strings"),
    ({"releaseCommand": "flask db 'upgrade"}, "releaseCommand", "balanced quotes"),
    ({"https": "maybe"}, "https", "true or false"),
    ({"acmeServer": "http://acme.example/dir"}, "acmeServer", "letsencrypt or letsencrypt-staging, or an ACME"),
    ({"acmeServer": "lets-encrypt"}, "acmeServer", "'lets-encrypt'"),
    ({"acmeEmail": "not an address"}, "acmeEmail", "email address"),
    ({"wwwAlias": True}, "wwwAlias", "without a domain"),
    ({"hstsPreload": True}, "hstsPreload", "without a domain"),
    ({"domain": "a.example.org", "hstsPreload": True, "https": False}, "hstsPreload", "HSTS needs HTTPS"),
    ({"dnsZone": "example.org"}, "dnsZone", "holds domain (None)"),
    ({"domain": "weather.example.org", "dnsZone": "example.com"}, "dnsZone", "holds domain ('weather.example.org')"),
    ({"domain": "weather.example.org", "dnsZone": "not a zone"}, "dnsZone", "DNS zone"),
    ({"alertEmails": ["ops@example.org", "not an address"]}, "alertEmails", "'not an address': expected email"),
    ({"alertEmails": "ops@example.org"}, "alertEmails", "list of strings"),
    ({"alertCpuPercent": 0}, "alertCpuPercent", "from 1 to 100"),
    ({"alertMemoryPercent": 101}, "alertMemoryPercent", "from 1 to 100"),
    ({"alertDiskPercent": "most"}, "alertDiskPercent", "'most'"),
    ({"alertWindow": "2m"}, "alertWindow", "5m, 10m, 30m, 1h"),
    ({"alertLatencyMs": 50}, "alertLatencyMs", "from 100 to 10000"),
    ({"alertCertificateDays": 0}, "alertCertificateDays", "from 1 to 29"),
    ({"alertCertificateDays": 3}, "alertCertificateDays", "at most 2 without a domain"),
    ({"domain": "a.example.org", "alertCertificateDays": 30}, "alertCertificateDays", "from 1 to 29"),
    ({"dropletBackups": "weekly"}, "dropletBackups", "true or false"),
    ({"instances": 0}, "instances", "= 0: expected a whole number from 1 to 10"),
    ({"instances": 11, "database": "none"}, "instances", "= 11: expected a whole number from 1 to 10"),
    ({"instances": "several"}, "instances", "'several': expected a whole number from 1 to 10"),
    ({"database": "mysql"}, "database", "'mysql': expected one of sqlite, postgres, none"),
    ({"databaseSize": "db-s-64vcpu-huge"}, "databaseSize", "'db-s-64vcpu-huge': expected a Managed PostgreSQL size"),
    ({"databaseNodes": 0}, "databaseNodes", "= 0: expected a whole number from 1 to 3"),
    ({"databaseNodes": 4}, "databaseNodes", "= 4: expected a whole number from 1 to 3"),
    (
        {"instances": 3},
        "database",
        "'sqlite': expected postgres (or none, for an app that keeps no data) with instances",
    ),
    (
        {"instances": 2, "database": "postgres", "https": False, "linkedDirs": ["uploads"]},
        "linkedDirs",
        "['uploads']: expected none with instances = 2",
    ),
    ({"instances": 2, "database": "none"}, "https", "True: expected a domain with instances = 2"),
    (
        {"instances": 2, "database": "none", "domain": "weather.example.org"},
        "https",
        "DigitalOcean issues its Let's Encrypt certificate only for a domain whose DNS it hosts",
    ),
    ({"database": "postgres", "appEnv": {"DATABASE_URL": "x"}}, "appEnv", "the deploy sets it to the cluster's"),
]


def with_change(good: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    config = {**good, **change}
    return {k: v for k, v in config.items() if v is not None}


@pytest.mark.parametrize(
    ("change", "key", "expected"), BAD_CONFIGS, ids=[f"{c[1]}-{i}" for i, c in enumerate(BAD_CONFIGS)]
)
def test_bad_config_is_rejected_before_any_resource(
    good_config: dict[str, Any], change: dict[str, Any], key: str, expected: str
) -> None:
    run = run_program(with_change(good_config, change))

    assert isinstance(run.error, SettingsError)
    message = str(run.error)
    assert f"flask-droplet:{key}" in message
    assert expected in message
    assert run.resources == []


def test_all_problems_are_reported_together(good_config: dict[str, Any]) -> None:
    config = {**good_config, "region": "mars1", "workers": 99, "domain": "-bad-", "adminCidrs": ["nope"]}

    with pytest.raises(SettingsError) as caught:
        parse_settings(config, PROJECT_DIR)

    assert len(caught.value.problems) == 4
    for key in ("region", "workers", "domain", "adminCidrs"):
        assert f"flask-droplet:{key}" in str(caught.value)


def test_secret_values_never_appear_in_errors(good_config: dict[str, Any]) -> None:
    secret = "s3cret-value-that-must-not-leak"
    config = {**good_config, "appEnv": {"TOKEN": secret + "\n"}, "sshPrivateKey": secret}

    with pytest.raises(SettingsError) as caught:
        parse_settings(config, PROJECT_DIR)

    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)


def test_good_config_gives_typed_settings(good_config: dict[str, Any]) -> None:
    settings = parse_settings({**good_config, "workers": "3", "domain": "Weather.Example.org"}, PROJECT_DIR)

    assert settings.app.workers == 3
    assert settings.app.site.domain == "weather.example.org"
    assert settings.server.admin_cidrs == ("203.0.113.7/32", "2001:db8::/64")
    assert settings.app.directory == PROJECT_DIR / "app"
    assert "correct-horse" not in repr(settings)


def test_fingerprint_alone_is_enough(good_config: dict[str, Any]) -> None:
    config = {**good_config, "sshPublicKeys": [], "sshKeyFingerprints": [":".join(["ab"] * 16)]}

    assert parse_settings(config, PROJECT_DIR).server.ssh_key_fingerprints == (":".join(["ab"] * 16),)


def test_defaults_match_the_project_file() -> None:
    import yaml

    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    for key, default in DEFAULTS.items():
        expected = declared[key]["default"]
        # Keys with structured values are declared as JSON text (a secret is a string).
        structured = ("appEnv", "notifyWebhooks", "processes", "schedules")
        assert default == (json.loads(expected) if key in structured else expected), key
    assert set(declared) == {*DEFAULTS, "adminCidrs", "sshPrivateKey"}


def test_wsgi_target_may_be_a_package_and_a_factory(tmp_path: Path, good_config: dict[str, Any]) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "requirements.txt").write_text("flask\n")
    (tmp_path / "site" / "myproject").mkdir()
    (tmp_path / "site" / "myproject" / "__init__.py").write_text("")
    config = {**good_config, "appDir": "site", "wsgiTarget": "myproject:create_app()", "staticDir": ""}

    assert parse_settings(config, tmp_path).app.wsgi_module == "myproject"
    with pytest.raises(SettingsError, match="wsgiTarget"):
        parse_settings({**config, "wsgiTarget": "myproject:create_app(debug=True)"}, tmp_path)


def app_dir_with(tmp_path: Path, files: dict[str, str]) -> Path:
    """An app directory holding `files` and a module `site_app` for the WSGI target."""
    app = tmp_path / "site"
    for name, text in {"site_app.py": "app = None\n", **files}.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    return app


def site_config(good_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**good_config, "appDir": "site", "wsgiTarget": "site_app:app", "staticDir": "", **extra}


PYPROJECT = '[project]\nname = "site"\nversion = "1"\nrequires-python = "{requires}"\ndependencies = {deps}\n'


OLD_GUNICORN_LOCK = """version = 1
[[package]]
name = "site"
version = "1"
source = { virtual = "." }
dependencies = [{ name = "flask" }, { name = "gunicorn" }]

[[package]]
name = "flask"
version = "3.1.3"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "gunicorn"
version = "20.1.0"
source = { registry = "https://pypi.org/simple" }

[package.dev-dependencies]
dev = [{ name = "pytest" }]
"""


def test_dependencies_come_from_uv_lock_then_requirements_then_pyproject(
    tmp_path: Path, good_config: dict[str, Any]
) -> None:
    pyproject = PYPROJECT.format(requires=">=3.11", deps='["flask>=3.0", "requests[socks]; python_version>=\'3.8\'"]')
    app = app_dir_with(tmp_path, {"pyproject.toml": pyproject})
    config = site_config(good_config)

    source = parse_settings(config, tmp_path).app.source
    assert source.dependency_file == "pyproject.toml"
    assert dict(source.deps_files)["requirements.txt"].decode().splitlines()[1:] == [
        "flask>=3.0",
        'requests[socks]; python_version >= "3.8"',
    ]

    (app / "requirements.txt").write_text("flask==3.1.3\n")
    source = parse_settings(config, tmp_path).app.source
    assert (source.dependency_file, dict(source.deps_files)) == (
        "requirements.txt",
        {"requirements.txt": b"flask==3.1.3\n", "stack-requirements.txt": f"gunicorn=={GUNICORN.version}\n".encode()},
    )

    (app / "uv.lock").write_text("version = 1\n")
    source = parse_settings(config, tmp_path).app.source
    assert source.uses_uv
    assert dict(source.deps_files) == {
        "pyproject.toml": pyproject.encode(),
        "uv.lock": b"version = 1\n",
        "stack-requirements.txt": f"gunicorn=={GUNICORN.version}\n".encode(),
    }


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "a uv.lock (with its pyproject.toml), a requirements.txt, or a pyproject.toml with a [project] table"),
        ({"uv.lock": "version = 1\n"}, "needs the pyproject.toml it was locked from"),
        ({"pyproject.toml": "[tool.ruff]\nline-length = 100\n"}, "has no [project] table"),
        ({"pyproject.toml": "[project\n"}, "is not valid TOML"),
        (
            {"pyproject.toml": '[project]\nname = "s"\nversion = "1"\ndynamic = ["dependencies"]\n'},
            "declares its dependencies as dynamic",
        ),
        ({"pyproject.toml": PYPROJECT.format(requires=">=3.11", deps='["flask >>= 3"]')}, "is not a requirement"),
        (
            {"pyproject.toml": PYPROJECT.format(requires=">=3.99", deps="[]")},
            "requires-python = '>=3.99' admits no Python this server can have; available: the server's "
            "python3 3.12.3 (Ubuntu 24.04), or a CPython that uv 0.13.8 installs: 3.8.2 to 3.8.20,",
        ),
        (
            {"pyproject.toml": PYPROJECT.format(requires="<3", deps="[]"), "requirements.txt": "flask\n"},
            "requires-python = '<3' admits no Python",
        ),
        ({"pyproject.toml": PYPROJECT.format(requires="three", deps="[]")}, "is not a version specifier"),
        ({"requirements.txt": "flask\n", ".python-version": "2.7\n"}, ".python-version asks for Python 2.7,"),
        ({"requirements.txt": "flask\n", ".python-version": "3.99\n"}, "asks for Python 3.99, which this server"),
        ({"requirements.txt": "flask\n", ".python-version": "pypy3.10\n"}, "'pypy3.10' is not a CPython version"),
        (
            {".python-version": "3.11\n", "pyproject.toml": PYPROJECT.format(requires=">=3.12", deps="[]")},
            "asks for Python 3.11 within requires-python = '>=3.12' (pyproject.toml), which this server cannot have",
        ),
        (
            {"requirements.txt": "flask==3.1.3\ngunicorn==20.1.0 --hash=sha256:00\n"},
            "requirements.txt pins gunicorn==20.1.0, older than gunicorn 21.0.0, the oldest the stack runs the app "
            "with (its service tells systemd when it is ready",
        ),
        ({"requirements.txt": "Gunicorn<21\n"}, "pins Gunicorn<21, older than gunicorn 21.0.0"),
        ({"requirements.txt": "gunicorn~=20.1\n"}, "pins gunicorn~=20.1, older than gunicorn 21.0.0"),
        ({"requirements.txt": "gunicorn==20.*\n"}, "pins gunicorn==20.*, older than gunicorn 21.0.0"),
        ({"requirements.txt": "gunicorn>=19,!=21.*,<22\n"}, "older than gunicorn 21.0.0"),
        (
            {"pyproject.toml": PYPROJECT.format(requires=">=3.11", deps='["gunicorn==19.9.0"]')},
            f"accepted: gunicorn 21.0.0 or later (e.g. gunicorn=={GUNICORN.version}), or no gunicorn at all "
            f"(the stack adds gunicorn=={GUNICORN.version})",
        ),
        (
            {"pyproject.toml": PYPROJECT.format(requires=">=3.11", deps="[]"), "uv.lock": OLD_GUNICORN_LOCK},
            "uv.lock locks gunicorn 20.1.0, older than gunicorn 21.0.0",
        ),
    ],
    ids=[
        "none",
        "lock-alone",
        "no-project",
        "bad-toml",
        "dynamic",
        "bad-requirement",
        "new-python",
        "old-python",
        "bad-spec",
        "python-2",
        "python-3.99",
        "pypy",
        "version-outside-requires",
        "old-gunicorn",
        "old-gunicorn-range",
        "old-gunicorn-compatible",
        "old-gunicorn-prefix",
        "old-gunicorn-excluded",
        "old-gunicorn-pyproject",
        "old-gunicorn-locked",
    ],
)
def test_app_without_usable_dependencies_is_refused(
    tmp_path: Path, good_config: dict[str, Any], files: dict[str, str], expected: str
) -> None:
    app_dir_with(tmp_path, files)

    with pytest.raises(SettingsError) as refused:
        parse_settings(site_config(good_config), tmp_path)

    message = str(refused.value)
    assert "flask-droplet:appDir = 'site'" in message
    assert expected in message


@pytest.mark.parametrize(
    ("requirements", "added"),
    [
        ("flask\n", f"gunicorn=={GUNICORN.version}\n"),
        ("flask\ngunicorn==21.2.0\n", "gunicorn>=21.0.0\n"),
        ("flask\nGunicorn[gevent] >= 20 ; sys_platform == 'linux'  # any\n", "gunicorn>=21.0.0\n"),
        ("flask\n# gunicorn==19.0\n-r base.txt\n", f"gunicorn=={GUNICORN.version}\n"),
        ("flask\ngunicorn==27.0.1\n", "gunicorn>=21.0.0\n"),
        ("flask\ngunicorn~=26.1\n", "gunicorn>=21.0.0\n"),
        ("flask\ngunicorn>=22\n", "gunicorn>=21.0.0\n"),
        ("flask\ngunicorn==31.4.1\n", "gunicorn>=21.0.0\n"),
        ("flask\ngunicorn>=20,<21.0.1\n", "gunicorn>=21.0.0\n"),
    ],
    ids=["none", "pinned", "range", "commented-out", "27.0.1", "~=26.1", ">=22", "unreleased", "up-to-21.0.0"],
)
def test_the_apps_own_gunicorn_wins_with_the_minimum_under_it(
    tmp_path: Path, good_config: dict[str, Any], requirements: str, added: str
) -> None:
    app_dir_with(tmp_path, {"requirements.txt": requirements})

    source = parse_settings(site_config(good_config), tmp_path).app.source

    assert dict(source.deps_files)["stack-requirements.txt"] == added.encode()


def test_a_locked_gunicorn_is_installed_as_locked(tmp_path: Path, good_config: dict[str, Any]) -> None:
    lock = OLD_GUNICORN_LOCK.replace('version = "20.1.0"', 'version = "22.0.0"')
    app_dir_with(tmp_path, {"pyproject.toml": PYPROJECT.format(requires=">=3.11", deps="[]"), "uv.lock": lock})

    source = parse_settings(site_config(good_config), tmp_path).app.source

    assert dict(source.deps_files)["stack-requirements.txt"] == b""
    # Only in a dev group: `uv sync --no-dev` leaves it out, and the stack adds its own.
    dev_only = lock.replace(', { name = "gunicorn" }]', "]")
    (tmp_path / "site/uv.lock").write_text(dev_only)
    source = parse_settings(site_config(good_config), tmp_path).app.source
    assert dict(source.deps_files)["stack-requirements.txt"] == f"gunicorn=={GUNICORN.version}\n".encode()


@pytest.mark.parametrize(
    ("files", "request_"),
    [
        ({}, ""),
        ({"pyproject.toml": PYPROJECT.format(requires=">=3.11", deps="[]")}, ""),
        ({".python-version": "3.12\n"}, ""),
        ({".python-version": "# the app's Python\ncpython-3.12.3\n"}, ""),
        ({".python-version": "3.13\n"}, "3.13"),
        ({".python-version": "3.13.2\n"}, "3.13.2"),
        ({".python-version": "3.12.9\n"}, "3.12.9"),
        ({".python-version": ">=3.13"}, ">=3.13"),
        ({"pyproject.toml": PYPROJECT.format(requires=">=3.13", deps="[]")}, ">=3.13"),
        ({"pyproject.toml": PYPROJECT.format(requires="<3.12", deps="[]")}, "<3.12"),
    ],
    ids=["none", "requires-3.11", "3.12", "3.12.3", "3.13", "3.13.2", "3.12.9", "spec", "requires-3.13", "old"],
)
def test_the_python_the_app_asks_for(
    tmp_path: Path, good_config: dict[str, Any], files: dict[str, str], request_: str
) -> None:
    """The server's python3 (3.12.3) where it satisfies the request; otherwise the request, for uv."""
    app_dir_with(tmp_path, {"requirements.txt": "flask\n", **files})

    source = parse_settings(site_config(good_config), tmp_path).app.source

    assert source.python_request == request_
    assert dict(source.deps_files).get("python-request.txt", b"").decode().strip() == request_


@pytest.mark.parametrize(
    ("value", "expected"),
    [([], ()), (["build-essential", "libpq-dev", "libpq-dev"], ("build-essential", "libpq-dev"))],
)
def test_build_packages(
    tmp_path: Path, good_config: dict[str, Any], value: list[str], expected: tuple[str, ...]
) -> None:
    assert parse_settings({**good_config, "buildPackages": value}, PROJECT_DIR).app.build_packages == expected


@pytest.mark.parametrize("value", [["libpq-dev; rm -rf /"], ["Build-Essential"], "build-essential"])
def test_build_packages_that_are_not_package_names_are_refused(good_config: dict[str, Any], value: Any) -> None:
    with pytest.raises(SettingsError) as refused:
        parse_settings({**good_config, "buildPackages": value}, PROJECT_DIR)

    message = str(refused.value)
    assert "flask-droplet:buildPackages = " in message
    assert "expected" in message


def test_src_layout_imports_from_src_and_keeps_its_instance_folder_there(
    tmp_path: Path, good_config: dict[str, Any]
) -> None:
    app_dir_with(tmp_path, {"requirements.txt": "flask\n", "src/shop/__init__.py": ""})

    settings = parse_settings(site_config(good_config, wsgiTarget="shop:create_app()"), tmp_path)

    assert settings.app.source.import_root == "src"
    assert settings.app.state_links == (("src/instance", "instance"),)


def test_linked_dirs_follow_the_instance_folder(tmp_path: Path, good_config: dict[str, Any]) -> None:
    app_dir_with(tmp_path, {"requirements.txt": "flask\n"})
    config = site_config(good_config, linkedDirs=["uploads/", "media/avatars", "uploads", "instance"])

    settings = parse_settings(config, tmp_path)

    assert settings.app.linked_dirs == ("uploads", "media/avatars", "instance")
    assert settings.app.state_links == (
        ("instance", "instance"),
        ("uploads", "uploads"),
        ("media/avatars", "media/avatars"),
    )


def test_release_command_is_split_like_a_shell_line(tmp_path: Path, good_config: dict[str, Any]) -> None:
    app_dir_with(tmp_path, {"requirements.txt": "flask\n"})

    settings = parse_settings(site_config(good_config, releaseCommand="flask --app 'my app' db upgrade"), tmp_path)

    assert settings.app.release_command == ("flask", "--app", "my app", "db", "upgrade")
    assert parse_settings(site_config(good_config), tmp_path).app.release_command == ()


def test_https_settings(tmp_path: Path, good_config: dict[str, Any]) -> None:
    settings = parse_settings(good_config, PROJECT_DIR)
    assert (settings.app.site.https, settings.app.site.acme_server, settings.app.site.acme_email) == (
        True,
        "https://acme-v02.api.letsencrypt.org/directory",
        None,
    )
    assert settings.app.site.host_names == ()

    config = {
        **good_config,
        "domain": "Weather.Example.org",
        "wwwAlias": "true",
        "dnsZone": "example.org.",
        "acmeServer": "letsencrypt-staging",
        "acmeEmail": "ops@example.org",
        "https": "false",
    }
    settings = parse_settings(config, PROJECT_DIR)
    assert settings.app.site.host_names == ("weather.example.org", "www.weather.example.org")
    assert settings.app.site.dns_zone == "example.org"
    assert settings.app.site.acme_server == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert settings.app.site.https is False
    custom = parse_settings({**good_config, "acmeServer": "https://acme.example:14000/dir"}, PROJECT_DIR)
    assert custom.app.site.acme_server == "https://acme.example:14000/dir"


def test_volume_name_is_what_digitalocean_accepts_and_unique_to_the_stack(good_config: dict[str, Any]) -> None:
    assert parse_settings(good_config, PROJECT_DIR, "Prod.EU_1").server.volume_name == "weather-prod-eu-1-state"
    assert parse_settings(good_config, PROJECT_DIR, "staging").server.volume_name == "weather-staging-state"
    long_name = volume_name("a" * 31, "stack-" * 20)
    assert len(long_name) <= 64 and long_name.endswith("-state") and "--" not in long_name
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", name) for name in (long_name, volume_name("app", "___")))
    assert parse_settings({**good_config, "volumeSize": "0"}, PROJECT_DIR).server.volume_name is None


def test_workers_follow_the_droplet_size_unless_set(good_config: dict[str, Any]) -> None:
    sizes = {
        "s-1vcpu-1gb": 3,
        "s-1vcpu-512mb-10gb": 3,
        "s-2vcpu-4gb": 5,
        "g-4vcpu-16gb": 9,
        "c-8": 17,
        "c2-16vcpu-32gb": 32,
    }
    for size, workers in sizes.items():
        assert parse_settings({**good_config, "size": size}, PROJECT_DIR).app.workers == workers, size
    assert parse_settings({**good_config, "size": "s-2vcpu-4gb", "workers": 2}, PROJECT_DIR).app.workers == 2


def test_alert_settings_default_to_no_alerts_and_sane_thresholds(good_config: dict[str, Any]) -> None:
    settings = parse_settings(good_config, PROJECT_DIR)

    assert settings.alerts.emails == ()
    assert (
        settings.alerts.cpu_percent,
        settings.alerts.memory_percent,
        settings.alerts.disk_percent,
    ) == (90, 90, 85)
    assert (settings.alerts.window, settings.alerts.latency_ms, settings.alerts.certificate_days) == (
        "5m",
        2000,
        2,
    )
    assert settings.server.droplet_backups is False


def test_alert_settings_as_pulumi_config_hands_them_over(good_config: dict[str, Any]) -> None:
    config = {
        **good_config,
        "alertEmails": [" ops@example.org", "oncall@example.org", "ops@example.org"],
        "alertCpuPercent": "75",
        "alertWindow": "1h",
        "alertLatencyMs": "800",
        "domain": "weather.example.org",
        "alertCertificateDays": "14",
        "dropletBackups": "true",
    }

    settings = parse_settings(config, PROJECT_DIR)

    assert settings.alerts.emails == ("ops@example.org", "oncall@example.org")
    assert (settings.alerts.cpu_percent, settings.alerts.window, settings.alerts.latency_ms) == (
        75,
        "1h",
        800,
    )
    assert settings.alerts.certificate_days == 14
    assert settings.server.droplet_backups is True


def test_alert_thresholds_are_checked_without_addresses_too(good_config: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({**good_config, "alertDiskPercent": 0, "alertWindow": "1d"}, PROJECT_DIR)

    assert [problem.split(" = ")[0] for problem in caught.value.problems] == [
        "flask-droplet:alertDiskPercent",
        "flask-droplet:alertWindow",
    ]


def test_certificate_days_for_the_address_matter_only_with_https(good_config: dict[str, Any]) -> None:
    assert parse_settings({**good_config, "https": False, "alertCertificateDays": 10}, PROJECT_DIR)
    with pytest.raises(SettingsError, match="alertCertificateDays = 10: expected at most 2 without a domain"):
        parse_settings({**good_config, "alertCertificateDays": 10}, PROJECT_DIR)


def test_one_droplet_with_sqlite_is_the_default(good_config: dict[str, Any]) -> None:
    settings = parse_settings(good_config, PROJECT_DIR)

    assert (
        settings.server.instances,
        settings.server.database,
        settings.server.database_size,
        settings.server.database_nodes,
    ) == (
        1,
        "sqlite",
        "db-s-1vcpu-1gb",
        1,
    )
    assert not settings.server.behind_balancer
    # One droplet holds its own certificate.
    assert settings.server_tls


def test_fleet_settings_as_pulumi_config_hands_them_over(good_config: dict[str, Any]) -> None:
    config = {
        **good_config,
        "instances": "3",
        "database": "postgres",
        "databaseSize": "db-s-2vcpu-4gb",
        "databaseNodes": "2",
        "domain": "weather.example.org",
        "dnsZone": "example.org",
    }

    settings = parse_settings(config, PROJECT_DIR, "prod")

    assert (
        settings.server.instances,
        settings.server.database,
        settings.server.database_size,
        settings.server.database_nodes,
    ) == (
        3,
        "postgres",
        "db-s-2vcpu-4gb",
        2,
    )
    assert settings.server.behind_balancer
    # The balancer holds the certificate; the droplets serve it plain HTTP.
    assert settings.app.site.https and not settings.server_tls
    # No Volume behind a balancer: a Volume attaches to one droplet, and the state is in the database.
    assert (settings.server.volume_size, settings.server.volume_name) == (0, None)


def test_one_droplet_may_keep_its_data_in_postgres_and_its_volume(good_config: dict[str, Any]) -> None:
    settings = parse_settings({**good_config, "database": "postgres"}, PROJECT_DIR, "dev")

    assert not settings.server.behind_balancer and settings.server_tls
    assert settings.server.volume_name == "weather-dev-state"


def test_an_app_without_data_may_run_on_several_droplets_over_http(good_config: dict[str, Any]) -> None:
    settings = parse_settings({**good_config, "instances": 10, "database": "none", "https": False}, PROJECT_DIR)

    assert settings.server.instances == 10 and settings.server.behind_balancer and not settings.server_tls


def test_sqlite_on_several_droplets_is_refused_saying_why(good_config: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as refused:
        parse_settings({**good_config, "instances": 3}, PROJECT_DIR)

    assert refused.value.problems == [
        "flask-droplet:database = 'sqlite': expected postgres (or none, for an app that keeps no data) with "
        "instances = 3: each droplet would keep its own SQLite file, and what a visitor saved would depend on "
        "which droplet the balancer sent them to",
        "flask-droplet:https = True: expected a domain with instances = 3: the Load Balancer's certificate is for "
        "a domain name. Set domain (with dnsZone when DigitalOcean hosts its DNS, or with balancerCertificate and "
        "balancerCertificateKey when it is elsewhere), or https false for plain HTTP at the balancer's address",
    ]


def test_sqlite_on_several_droplets_is_refused_before_any_resource(good_config: dict[str, Any]) -> None:
    run = run_program({**good_config, "instances": 3, "https": False})

    assert isinstance(run.error, SettingsError)
    assert [problem.split(":")[1].split(" = ")[0] for problem in run.error.problems] == ["database"]
    assert run.resources == []
    assert run.calls == []


def test_database_url_is_the_apps_own_with_sqlite(good_config: dict[str, Any]) -> None:
    # Only the cluster's connection string is the deploy's to set.
    settings = parse_settings({**good_config, "appEnv": {"DATABASE_URL": "postgresql://elsewhere/db"}}, PROJECT_DIR)

    assert settings.app.env["DATABASE_URL"] == "postgresql://elsewhere/db"


def test_each_topic_reports_its_problem_with_the_others(good_config: dict[str, Any]) -> None:
    bad = {
        "region": "mars1",  # the droplet and network
        "healthPath": "healthz",  # the app
        "appEnv": {"PATH": "/tmp"},  # the app's environment
        "releasesToKeep": 0,  # releases
        "acmeEmail": "nobody",  # HTTPS and DNS
        "backupInterval": "monthly",  # state and backups
        "databaseNodes": 9,  # fleet and database
        "alertWindow": "2m",  # alerts
    }

    with pytest.raises(SettingsError) as caught:
        parse_settings({**good_config, **bad}, PROJECT_DIR)

    assert sorted(problem.split(" = ")[0].removeprefix("flask-droplet:") for problem in caught.value.problems) == (
        sorted(bad)
    )
