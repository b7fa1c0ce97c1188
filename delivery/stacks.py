"""The stacks a repository's workflows keep: production, and one review stack per pull request."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from delivery.pulumi_cli import Pulumi, PulumiError

#: A review stack's name: the pull request's number.
REVIEW_STACK = re.compile(r"^pr-(\d+)$")


def review_stack(number: int) -> str:
    return f"pr-{number}"


def review_number(stack: str) -> int | None:
    matched = REVIEW_STACK.match(stack)
    return int(matched[1]) if matched else None


def read_template(template: Path) -> dict[str, object]:
    """The config values a review stack takes over the production stack's, from TEMPLATE's `config:`; None
    takes a key out, so that it has its default."""
    loaded = yaml.safe_load(template.read_text()) or {}
    config = loaded.get("config") if isinstance(loaded, dict) else None
    if not isinstance(config, dict) or not config:
        raise PulumiError(f"{template}: needs a `config:` mapping of the values review stacks take")
    secure = [key for key, value in config.items() if isinstance(value, dict) and "secure" in value]
    if secure:
        raise PulumiError(
            f"{template}: holds encrypted values ({', '.join(secure)}); review stacks take secrets "
            "from the production stack"
        )
    return {str(key): value for key, value in config.items()}


def configure_review_stack(pulumi: Pulumi, stack: str, source: str, template: Path) -> None:
    """STACK's config: SOURCE's (secrets encrypted again for STACK), then TEMPLATE's values over it.

    Made again on every run, from files a clone has: the workflow's checkout holds no review stack's
    file, and the production stack's config may have changed since the last run.
    """
    values = read_template(template)
    if stack not in pulumi.stacks():
        # Not selected: the stack a user has selected stays so, whoever runs this.
        pulumi.ok("stack", "init", "--no-select", stack)
    pulumi.ok("config", "cp", "--dest", stack, stack=source)
    stack_file = pulumi.project / f"Pulumi.{stack}.yaml"
    settings = yaml.safe_load(stack_file.read_text()) if stack_file.exists() else None
    settings = settings if isinstance(settings, dict) else {}
    config = {**(settings.get("config") or {}), **values}
    # A key the template sets to null is taken out: the review stack has its default.
    settings["config"] = {key: value for key, value in config.items() if value is not None}
    stack_file.write_text(yaml.safe_dump(settings, sort_keys=False))


def stack_outputs(pulumi: Pulumi, stack: str) -> dict[str, object]:
    """STACK's outputs, secrets masked as the CLI masks them ("[secret]")."""
    outputs = json.loads(pulumi.ok("stack", "output", "--json", stack=stack) or "{}")
    return dict(outputs) if isinstance(outputs, dict) else {}


def outputs_markdown(outputs: dict[str, object]) -> str:
    """Each output with a value: one line each, a block for those of several lines."""
    lines = []
    for name, value in outputs.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        if "\n" in text.strip() or "`" in text:
            lines += [f"- `{name}`:", "", "  ```", *(f"  {line}" for line in text.strip().splitlines()), "  ```"]
        else:
            lines.append(f"- `{name}`: `{text}`")
    return "\n".join(lines) + "\n" if lines else "(no outputs)\n"
