"""The droplet's cloud-init user-data: its users, packages and host keys, the manifest's first-boot files,
and the agent's first-boot phase that runcmd runs once.
"""

from __future__ import annotations

import ast
import base64
from typing import Any

import yaml

from agent.manifest import Entry
from core.layout import DEPLOY_USER
from core.policy import PACKAGES
from core.render import AGENT_DIR, render_agent_settings, server_manifest
from core.settings import Settings
from core.ssh_host_keys import HostKeys
from core.zipapp import zip_application


class _CloudConfigDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the user-data reads like the files it writes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CloudConfigDumper.add_representer(str, _represent_str)


#: The agent's first-boot phase (`agent/firstboot.py`) as a zip application of the modules it needs
#: and the stack's settings; the user-data carries it, readable by root only, and runcmd runs it once.
FIRST_BOOT_ARCHIVE = "/usr/local/lib/flaskdroplet/first-boot.pyz"
FIRST_BOOT_COMMAND = ("/usr/bin/python3", "-I", FIRST_BOOT_ARCHIVE)
FIRST_BOOT_MODULES = ("__init__.py", "config.py", "context.py", "firstboot.py", "layout.py", "strict.py", "system.py")
FIRST_BOOT_ENTRY = "from agent.firstboot import main\n\nraise SystemExit(main())\n"


def first_boot_archive(settings: Settings) -> bytes:
    files = {"__main__.py": FIRST_BOOT_ENTRY.encode(), "agent/settings.json": render_agent_settings(settings).encode()}
    files |= {f"agent/{name}": code for name, code in FIRST_BOOT_CODE.items()}
    return zip_application(files)


def without_docstrings(source: str) -> str:
    """The module's code as Python reads it, without its docstrings and comments: DigitalOcean takes at most
    64 KiB of user-data, and the first boot's modules are most of it. The deploy ships them whole."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


#: The first boot's modules as the archive carries them, made once, at import: a droplet's user-data is
#: rendered in Pulumi's callbacks, several at once in threads, and CPython 3.11's ast module is not safe
#: to use from several threads together ("AST constructor recursion depth mismatch").
FIRST_BOOT_CODE = {name: without_docstrings((AGENT_DIR / name).read_text()).encode() for name in FIRST_BOOT_MODULES}


def _write_file(entry: Entry) -> dict[str, Any]:
    """A cloud-init `write_files` entry; "deferred" ones are written once the packages are installed."""
    written: dict[str, Any] = {
        "path": entry.path,
        "content": entry.content,
        "owner": entry.owner,
        "permissions": entry.mode,
    }
    if entry.first_boot == "deferred":
        written["defer"] = True
    return written


def render_user_data(settings: Settings, host_keys: HostKeys) -> str:
    """The droplet's cloud-init user-data, with the host keys the program made for it.

    Its one secret is those host keys: on the droplet only root reads user-data (the app's
    user is refused the metadata service, `render_ufw_after_init`). The app's environment
    arrives later, with each deploy.
    """
    layout = settings.layout
    document: dict[str, Any] = {
        "package_update": True,
        "packages": list(PACKAGES),
        "ssh_pwauth": False,
        # The program's host keys are the server's only ones: the image's are deleted, and with keys
        # given cloud-init makes none.
        "ssh_deletekeys": True,
        "ssh_keys": host_keys.as_dict(),
        "disable_root": True,
        # The distribution's default user becomes the deploy user; DigitalOcean's
        # registered keys and the keys below both land in its authorized_keys.
        "user": {
            "name": DEPLOY_USER,
            "gecos": "Deploys releases over SSH",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
        },
        "users": [
            "default",
            {
                "name": layout.app_user,
                "gecos": f"Runs {settings.app.name}",
                "system": True,
                "shell": "/usr/sbin/nologin",
                "homedir": layout.root,
                "no_create_home": True,
                "lock_passwd": True,
            },
        ],
        "ssh_authorized_keys": list(settings.server.ssh_public_keys),
        # The manifest's first-boot files; each deploy keeps those it owns as rendered.
        "write_files": [
            *(_write_file(entry) for entry in server_manifest(settings) if entry.first_boot),
            {
                "path": FIRST_BOOT_ARCHIVE,
                "content": base64.encodebytes(first_boot_archive(settings)).decode(),
                "encoding": "b64",
                "owner": "root:root",
                "permissions": "0600",
            },
        ],
        "runcmd": [[*FIRST_BOOT_COMMAND]],
    }
    body = yaml.dump(document, Dumper=_CloudConfigDumper, sort_keys=False, width=1000, default_flow_style=None)
    return "#cloud-config\n" + body
