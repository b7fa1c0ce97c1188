"""Read the stack's Pulumi config once, into validated `Settings`."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config

from core.keys import CONFIG_KEYS
from core.settings import Settings, SettingsError, parse_settings

#: The project's name in this repository; a project made from it by `pulumi new` may have another.
PROJECT = "flask-droplet"


class ConfigError(SettingsError, pulumi.RunError):
    """A `SettingsError` that the Pulumi CLI shows as its message alone, without a Python traceback."""


def load_settings(project_dir: Path, also: Callable[[], list[str]] = list) -> Settings:
    """Read every key of the project's namespace and validate them together; raises `ConfigError`.

    `also` gives the problems that can be found without valid settings (the API token's), told with
    the config's own when there are any, so a user meets them in one run and not in rounds.
    """
    namespace = pulumi.get_project()
    config = pulumi.Config(namespace)
    # Lists and maps come as JSON text; the settings decode them.
    raw: dict[str, Any] = {key: config.get(key) for key in CONFIG_KEYS}
    unknown = undeclared_keys(stack_config_keys(), namespace, pulumi.get_stack())
    try:
        settings = parse_settings(raw, project_dir, pulumi.get_stack())
    except SettingsError as error:
        raise ConfigError(unknown + error.problems + also()) from None
    if unknown:
        raise ConfigError(unknown + also())
    return settings


def stack_config_keys() -> Iterable[str]:
    """Every key the engine gave the program (`namespace:key`): the stack's values and Pulumi.yaml's defaults."""
    config: Mapping[str, Any] = pulumi.runtime.config.CONFIG.get()
    return config.keys()


def undeclared_keys(keys: Iterable[str], namespace: str, stack: str) -> list[str]:
    """A problem for each key of this project that Pulumi.yaml does not declare (a typo is not ignored).

    The engine checks the types of declared keys but passes undeclared ones through unread.
    """
    problems = []
    for full_key in sorted(keys):
        key_namespace, _, key = full_key.partition(":")
        if key_namespace == namespace and key not in CONFIG_KEYS:
            close = difflib.get_close_matches(key, CONFIG_KEYS, n=1)
            hint = f"; did you mean {namespace}:{close[0]}?" if close else ""
            problems.append(
                f"{full_key} is not a setting of this project (Pulumi.yaml declares every one){hint} "
                f"Remove it with: pulumi config rm {full_key}"
            )
        elif key_namespace == PROJECT != namespace and key in CONFIG_KEYS:
            problems.append(
                f"{full_key} belongs to the project {PROJECT!r}, and this project is {namespace!r}: "
                f"its settings are {namespace}:KEY. Rename the key in Pulumi.{stack}.yaml to {namespace}:{key}"
            )
    return problems
