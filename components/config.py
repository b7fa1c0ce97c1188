"""Read the stack's Pulumi config once, into validated `Settings`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pulumi

from components.settings import CONFIG_KEYS, Settings, parse_settings

#: Keys whose values are lists or maps (given as YAML in the stack file).
STRUCTURED_KEYS = frozenset(
    {"sshPublicKeys", "sshKeyFingerprints", "adminCidrs", "linkedDirs", "appEnv", "alertEmails"}
)


def load_settings(project_dir: Path, namespace: str = "flask-droplet") -> Settings:
    """Read every key of `namespace` and validate them together; raises `SettingsError`."""
    config = pulumi.Config(namespace)
    raw: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        value = config.get(key)
        if value is not None and key in STRUCTURED_KEYS:
            # Text that is not JSON stays text: validation names the key and says what it expects.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        raw[key] = value
    return parse_settings(raw, project_dir, pulumi.get_stack())
