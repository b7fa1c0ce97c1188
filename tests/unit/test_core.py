"""The pure core (core/) imports neither Pulumi nor a provider SDK, nor the Pulumi components."""

from __future__ import annotations

import ast
import subprocess
import sys

from core.slugs import DATABASE_SIZES, DROPLET_SIZES
from tests.pulumi_harness import PROJECT_DIR

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


def test_no_pure_module_names_pulumi_or_the_components_even_where_it_is_not_run() -> None:
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("pulumi", "components")), f"{path.name} imports {name}"


def test_the_size_slugs_are_the_provider_sdks() -> None:
    from pulumi_digitalocean import DatabaseSlug, DropletSlug

    assert tuple(s.value for s in DropletSlug) == DROPLET_SIZES
    assert tuple(s.value for s in DatabaseSlug) == DATABASE_SIZES
