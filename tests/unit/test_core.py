"""The pure core (core/) imports neither Pulumi nor a provider SDK, nor the Pulumi components."""

from __future__ import annotations

import subprocess
import sys

import jinja2
import jinja2.meta
import pytest

from core import render
from core.settings import parse_settings
from core.slugs import DATABASE_SIZES, DROPLET_SIZES
from tests.conftest import OFFSITE_CONFIG
from tests.pulumi_harness import PROJECT_DIR

# Imported at collection: a test module imported later, after the Pulumi mocks' threads, can fail to compile.
from tests.unit.test_render import GOLDEN_CONFIGS, golden_settings

CORE = PROJECT_DIR / "core"
PURE_MODULES = sorted(f"core.{path.stem}" for path in CORE.glob("*.py") if path.stem != "__init__")

#: Run with every `pulumi*` import refused: each core module must still import.
IMPORT_WITHOUT_PULUMI = """
import importlib, sys

class NoPulumi:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("pulumi"):
            raise ImportError(f"a pure module imported {name}")
        return None

sys.meta_path.insert(0, NoPulumi())
for module in sys.argv[1:]:
    importlib.import_module(module)
assert not [name for name in sys.modules if name.startswith("pulumi")]
"""


def test_no_pure_module_imports_pulumi_or_a_provider_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT_PULUMI, *PURE_MODULES],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert PURE_MODULES and done.returncode == 0, done.stderr


#: Every import statement of the core's files, even one in a branch never run. In a process of its own:
#: under 3.11, `ast.parse` after the Pulumi mocks' threads can fail on a recursion-depth check.
IMPORTS_NAMED = """
import ast, pathlib, sys

for path in sorted(pathlib.Path("core").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            if name.startswith(("pulumi", "components")):
                print(f"{path.name} imports {name}")
"""


def test_no_pure_module_names_pulumi_or_the_components_even_where_it_is_not_run() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_NAMED],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_the_size_slugs_are_the_provider_sdks() -> None:
    from pulumi_digitalocean import DatabaseSlug, DropletSlug

    assert tuple(s.value for s in DropletSlug) == DROPLET_SIZES
    assert tuple(s.value for s in DatabaseSlug) == DATABASE_SIZES


def test_each_template_is_handed_what_it_reads_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    handed: dict[str, set[str]] = {}
    real = render._render

    def recording(template: str, **context: object) -> str:
        handed.setdefault(template, set()).update(context)
        return real(template, **context)

    monkeypatch.setattr(render, "_render", recording)
    # The golden variants, and one with a worker process and a scheduled job.
    work = {
        "processes": {"worker": "huey_consumer weather.tasks.huey"},
        "schedules": {"nightly": {"command": "flask --app weather report", "when": "0 3 * * *"}},
        **OFFSITE_CONFIG,
    }
    for settings in [
        *(golden_settings(variant) for variant in GOLDEN_CONFIGS),
        parse_settings({**GOLDEN_CONFIGS["ip"], **work}, PROJECT_DIR),
    ]:
        render.render_server_files(settings)
        render.render_renew_units(settings)

    templates = sorted(path.name for path in render.TEMPLATE_DIR.glob("*.j2"))
    assert sorted(handed) == templates
    for template, names in handed.items():
        source = render._ENV.loader.get_source(render._ENV, template)[0]  # type: ignore[union-attr]
        reads = jinja2.meta.find_undeclared_variables(render._ENV.parse(source))
        assert names == reads, template
