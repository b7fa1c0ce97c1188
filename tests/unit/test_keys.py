"""Each config key is declared once, in Pulumi.yaml: the settings and docs/config.md follow it."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import settings as settings_module
from core.keys import CONFIG_DOC, DEFAULTS, KEYS, SECRET_KEYS, config_reference
from core.settings import (
    ADDRESS_CERTIFICATE_DAYS_MAX,
    WORKERS_FROM_SIZE,
    ConfigValues,
    Settings,
    parse_settings,
)
from tests.pulumi_harness import PROJECT_DIR

PYTHON_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


def test_the_config_reference_is_generated_from_the_declarations() -> None:
    assert CONFIG_DOC.read_text() == config_reference(), "docs/config.md is stale: run scripts/config-doc"


def test_every_declaration_has_a_type_a_description_and_a_default_of_its_type() -> None:
    for key in KEYS.values():
        assert key.type in PYTHON_TYPES, key.name
        assert key.description.strip(), key.name
        if key.required:
            continue
        expected = (dict, list) if key.structured and key.type == "string" else PYTHON_TYPES[key.type]
        assert isinstance(key.default, expected) and not (expected is int and isinstance(key.default, bool)), key.name
    assert [name for name, key in KEYS.items() if key.required] == ["adminCidrs"]
    assert {"appEnv", "balancerCertificateKey", "notifyWebhooks", "offsiteIdentity", "sshPrivateKey"} == SECRET_KEYS


def test_validation_reads_every_declared_key_and_no_other(
    good_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ConfigValues] = []

    class Recorded(ConfigValues):
        def __init__(self, raw: Any) -> None:
            super().__init__(raw)
            seen.append(self)

    monkeypatch.setattr(settings_module, "ConfigValues", Recorded)
    parse_settings(good_config, PROJECT_DIR)

    assert seen[0].read == set(KEYS)
    with pytest.raises(LookupError, match="not declared"):
        seen[0]["undeclaredKey"]


def setting_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every field of the settings, its parts' own included, by its path (`app.site.domain`)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        yield f"{prefix}{field.name}", field
        if dataclasses.is_dataclass(hints[field.name]) and hints[field.name].__module__ == cls.__module__:
            yield from setting_fields(hints[field.name], f"{prefix}{field.name}.")


def test_the_settings_have_no_defaults_of_their_own() -> None:
    """Defaults are the declarations': a default on the dataclass, or on one of its parts, would be a second one."""
    fields = list(setting_fields(Settings))

    assert {"server.region", "app.workers", "app.site.domain", "alerts.window"} <= {path for path, _ in fields}
    assert [path for path, f in fields if f.default is not dataclasses.MISSING] == []
    assert [path for path, f in fields if f.default_factory is not dataclasses.MISSING] == []


def test_the_constants_that_name_a_default_are_the_declared_ones() -> None:
    assert DEFAULTS["workers"] == WORKERS_FROM_SIZE
    assert DEFAULTS["alertCertificateDays"] == ADDRESS_CERTIFICATE_DAYS_MAX


def test_lists_and_maps_may_come_as_json_text(good_config: dict[str, Any], tmp_path: Path) -> None:
    config = {**good_config, "alertEmails": '["ops@example.org"]', "appEnv": '{"SECRET_KEY": "x"}'}

    settings = parse_settings(config, PROJECT_DIR)

    assert settings.alerts.emails == ("ops@example.org",)
    assert dict(settings.app.env) == {"SECRET_KEY": "x"}
