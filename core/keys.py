"""The stack's config keys, declared once: the `config:` block of `Pulumi.yaml`.

Each key there has its type, its default (none for a key every stack must set), its
description and, for a secret, `secret: true`. The Pulumi engine checks a stack's values
against those types and hands over the defaults; the settings take their defaults, their
list of keys and their secrets from the same block, and `docs/config.md` is generated
from it (`scripts/config-doc`). Adding a key: its declaration there, its check in
`settings.py`, its use.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

#: The project file beside the program: `pulumi new` copies it with the code, whatever the project's name.
PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
#: The generated reference of every key.
CONFIG_DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"

#: Keys declared as strings whose text is JSON: Pulumi's config types have no map, so a map is given as JSON.
JSON_KEYS = frozenset({"appEnv", "notifyWebhooks", "processes", "schedules"})


@dataclass(frozen=True)
class Key:
    """One declared config key."""

    name: str
    type: str
    """Pulumi's config type: string, integer, boolean or array (of `items`)."""
    description: str
    default: Any
    """The default, decoded (a map for a JSON key); None when `required`."""
    required: bool
    """No default: every stack sets it."""
    secret: bool
    items: str | None = None
    """The type of an array's items."""

    @property
    def structured(self) -> bool:
        """Its values are lists or maps, which `pulumi config` hands over as JSON text."""
        return self.type == "array" or self.name in JSON_KEYS

    def decode(self, value: Any) -> Any:
        """A structured key's JSON text as the list or map it holds; text that is not JSON stays text.

        Validation then names the key and says what it expects.
        """
        if self.structured and isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value


def read_declaration(path: Path = PROJECT_FILE) -> dict[str, Key]:
    """Every key the project file's `config:` block declares, in its order.

    Names with a namespace (`pulumi:tags`, which `pulumi new` adds; `digitalocean:region`) are
    values for other namespaces, not this project's keys.
    """
    declared: dict[str, Any] = yaml.safe_load(path.read_text())["config"]
    keys: dict[str, Key] = {}
    for name, entry in declared.items():
        if ":" in name:
            continue
        key = Key(
            name=name,
            type=entry["type"],
            description=entry["description"],
            default=None,
            required="default" not in entry,
            secret=bool(entry.get("secret", False)),
            items=entry.get("items", {}).get("type"),
        )
        keys[name] = replace(key, default=key.decode(entry.get("default")))
    return keys


KEYS = read_declaration()
#: Every key the stack may set.
CONFIG_KEYS = tuple(KEYS)
#: The value each key takes when the stack leaves it out; a required key has none.
DEFAULTS: dict[str, Any] = {name: key.default for name, key in KEYS.items() if not key.required}
#: Keys whose values never appear in a message.
SECRET_KEYS = frozenset(name for name, key in KEYS.items() if key.secret)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _shown_default(key: Key) -> str:
    if key.required:
        return "required"
    if key.default in ("", [], {}):
        return "empty"
    shown = json.dumps(key.default) if not isinstance(key.default, str) else key.default
    return f"`{shown}`"


def config_reference(keys: dict[str, Key] | None = None) -> str:
    """The text of `docs/config.md`: every key with its type, default and description."""
    keys = KEYS if keys is None else keys
    lines = [
        "# Config keys",
        "",
        "<!-- Generated from Pulumi.yaml by scripts/config-doc; edit the declarations there. -->",
        "",
        "Every key the stack takes, as `Pulumi.yaml` declares it. Set one with",
        "`pulumi config set KEY VALUE` (`--secret` for a secret, `--path 'KEY[0]'` for a list's items);",
        "`pulumi preview` checks them all before anything changes, and lists every problem at once.",
        "",
        "| Key | Type | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for key in keys.values():
        shown_type = f"array of {key.items}" if key.type == "array" and key.items else key.type
        if key.name in JSON_KEYS:
            shown_type += " (JSON object)"
        if key.secret:
            shown_type += ", secret"
        lines.append(f"| `{key.name}` | {shown_type} | {_cell(_shown_default(key))} | {_cell(key.description)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # `python -m core.keys --write` (scripts/config-doc) writes docs/config.md; without it, prints it.
    if sys.argv[1:] == ["--write"]:
        CONFIG_DOC.write_text(config_reference())
    else:
        sys.stdout.write(config_reference())
