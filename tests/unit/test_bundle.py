"""The release bundle: what a release carries, and what it leaves to the server."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from core.bundle import agent_archive_bytes, bundle_bytes
from core.plan import run_command
from core.render import render_agent_settings
from core.settings import parse_settings


def bundle_members(settings: Any) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(bundle_bytes(settings)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def shop(tmp_path: Path, good_config: dict[str, Any], **extra: Any) -> Any:
    app = tmp_path / "shop"
    for name, text in {
        "pyproject.toml": '[project]\nname = "shop"\nversion = "1"\ndependencies = ["flask==3.1.3"]\n',
        "src/shop/__init__.py": "def create_app(): ...\n",
        "src/shop/static/site.css": "body {}\n",
        "src/instance/config.py": "SECRET_KEY = 'laptop only'\n",
        "uploads/cat.jpg": "not a cat\n",
        "media/avatars/a.png": "not an avatar\n",
        "media/keep.txt": "shipped\n",
    }.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    config = {
        **good_config,
        "appDir": "shop",
        "wsgiTarget": "shop:create_app()",
        "staticDir": "src/shop/static",
        "linkedDirs": ["uploads", "media/avatars"],
        **extra,
    }
    return parse_settings(config, tmp_path)


def test_release_ships_code_and_dependencies_but_not_state(tmp_path: Path, good_config: dict[str, Any]) -> None:
    members = bundle_members(shop(tmp_path, good_config))

    assert {name for name in members if name.startswith("app/")} == {
        "app/pyproject.toml",
        "app/src/shop/__init__.py",
        "app/src/shop/static/site.css",
        "app/media/keep.txt",
    }
    assert members["deps/requirements.txt"].decode().splitlines()[1:] == ["flask==3.1.3"]
    assert members["server/state-links"] == b"src/instance instance\nuploads uploads\nmedia/avatars media/avatars\n"


def test_agent_settings_carry_the_import_root_and_release_command(tmp_path: Path, good_config: dict[str, Any]) -> None:
    settings = shop(tmp_path, good_config, releaseCommand="flask --app shop db upgrade --tag 'a b'")

    shipped = json.loads(render_agent_settings(settings))

    assert shipped["import_root"] == "src"
    assert shipped["release_command"] == ["flask", "--app", "shop", "db", "upgrade", "--tag", "a b"]


def test_agent_archive_is_the_same_bytes_each_time_and_holds_no_fake(
    tmp_path: Path, good_config: dict[str, Any]
) -> None:
    settings = shop(tmp_path, good_config)

    data = agent_archive_bytes(settings)

    assert data == agent_archive_bytes(settings)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "__main__.py" in names and "agent/settings.json" in names and "agent/deploy.py" in names
    assert "agent/fake.py" not in names


def test_one_off_command_is_quoted_for_the_remote_shell(tmp_path: Path, good_config: dict[str, Any]) -> None:
    command = run_command(shop(tmp_path, good_config), ["flask", "--app", "shop", "say", "it's; rm -rf /"])

    assert command == (
        "sudo /bin/bash /home/deploy/flaskdroplet/deploy.sh run -- flask --app shop say 'it'\"'\"'s; rm -rf /'"
    )
