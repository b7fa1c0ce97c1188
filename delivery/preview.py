"""What `pulumi preview --json` says a stack's update would do, told as a pull request comment.

The first line of the comment is the verdict a reviewer needs: whether a droplet, a Volume or a
database cluster (what holds the site and its data) would be replaced or deleted. The diff below it
is built from the same JSON: each resource that would change, with its changed inputs, secrets as
the CLI masks them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: The kinds of resource whose replacement or deletion loses a server or data, by the name in their type
#: token (`digitalocean:index/droplet:Droplet` is a "Droplet").
STATEFUL_KINDS = {"Droplet": "droplet", "Volume": "Volume", "DatabaseCluster": "database cluster"}
#: The steps that delete a resource, or make a new one in its place.
DESTRUCTIVE_OPS = frozenset({"delete", "replace", "create-replacement", "delete-replaced"})
#: The CLI's value for an input known only once the update runs.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
#: Pulumi's display symbols for each step.
SYMBOLS = {
    "create": "+ ",
    "update": "~ ",
    "delete": "- ",
    "replace": "+-",
    "create-replacement": "++",
    "delete-replaced": "--",
    "read": "> ",
    "import": "= ",
}
#: How the engine refuses to replace a protected resource (`production: true`), and how the program refuses
#: a droplet's replacement without `allowReplace` (components/account.py): the update would replace them.
PROTECTED_REPLACEMENT = re.compile(
    r'unable to replace resource "(?P<urn>[^"]+)"\s+as it is currently marked for protection'
)
REFUSED_REPLACEMENT = re.compile(
    r"allowReplace = false: DigitalOcean cannot change these droplets in place, only "
    r"replace them: (?P<droplets>.*?)\. Each new droplet"
)
#: GitHub refuses a comment longer than 65536 characters; the diff is cut well before.
DIFF_LIMIT = 60_000
#: The longest value shown in the diff.
VALUE_LIMIT = 120


@dataclass(frozen=True)
class Step:
    """One resource the update would change."""

    op: str
    type: str
    name: str
    changes: tuple[tuple[str, str, str], ...]
    """Each changed input: its name, its value before and after (as shown)."""

    @property
    def kind(self) -> str | None:
        """'droplet', 'Volume' or 'database cluster', or None for a resource that holds nothing."""
        return STATEFUL_KINDS.get(self.type.rsplit(":", 1)[-1])

    @property
    def loses_state(self) -> bool:
        return self.kind is not None and self.op in DESTRUCTIVE_OPS


@dataclass(frozen=True)
class Preview:
    """A stack's preview, read from `pulumi preview --json`."""

    stack: str
    production: bool
    steps: tuple[Step, ...]
    summary: dict[str, int]
    failure: str | None = None
    """What the CLI printed when the preview itself failed."""
    refused: tuple[str, ...] = ()
    """What the update would replace, as the failure says it was refused: the engine (protected) or the
    program (without allowReplace) stopped the preview there."""

    @property
    def losses(self) -> tuple[Step, ...]:
        # One replacement shows as several steps (replace, create-replacement, delete-replaced): name it once.
        seen: dict[tuple[str, str], Step] = {}
        for step in self.steps:
            if step.loses_state:
                seen.setdefault((step.type, step.name), step)
        return tuple(seen.values())

    @property
    def passes(self) -> bool:
        """False when the preview failed, or a production stack would lose a droplet, a Volume or a cluster."""
        return self.failure is None and not (self.production and self.losses)


#: What `pulumi preview --expect-no-changes` says when it fails for changes alone.
CHANGES_NOT_EXPECTED = "no changes were expected but changes were proposed"


def read_preview(stack: str, stdout: str, stderr: str, returncode: int, expect_no_changes: bool = False) -> Preview:
    """The preview that `pulumi preview --json` printed (STDOUT), or its failure.

    With EXPECT_NO_CHANGES, a preview that fails only because it found changes has not failed: those
    changes are the answer.
    """
    try:
        data: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError:
        data = {}
    config = data.get("config") or {}
    production = any(key.split(":", 1)[-1] == "production" and value == "true" for key, value in config.items())
    steps = tuple(read_step(step) for step in data.get("steps") or [] if step.get("op") not in ("same", "refresh"))
    errors = [str(d.get("message", "")) for d in data.get("diagnostics") or [] if d.get("severity") == "error"]
    changes_alone = expect_no_changes and CHANGES_NOT_EXPECTED in stderr
    failure = None
    if errors or not data or (returncode != 0 and not changes_alone):
        failure = "\n".join(errors) or stderr.strip() or stdout.strip() or f"pulumi preview exited {returncode}"
    return Preview(
        stack, production, steps, dict(data.get("changeSummary") or {}), failure, refused_replacements(failure)
    )


def refused_replacements(failure: str | None) -> tuple[str, ...]:
    """What a failed preview says it refused to replace, each as the comment names it."""
    if failure is None:
        return ()
    named = []
    for found in PROTECTED_REPLACEMENT.finditer(failure):
        token, name = found["urn"].split("::")[-2:]
        kind = token.rsplit(":", 1)[-1]
        named.append(f"the {STATEFUL_KINDS.get(kind, kind)} `{name}` (protected: `production: true`)")
    for found in REFUSED_REPLACEMENT.finditer(failure):
        named += [
            f"the droplet `{reason.split(' ', 1)[0]}` (without `allowReplace`)"
            for reason in found["droplets"].split("; ")
        ]
    return tuple(dict.fromkeys(named))


def read_step(step: dict[str, Any]) -> Step:
    urn = str(step["urn"])
    old_state = step.get("oldState") or {}
    old = old_state.get("inputs") or {}
    new = (step.get("newState") or {}).get("inputs") or {}
    changed = {
        key
        for key in set(old) | set(new)
        if not key.startswith("__") and readable(old.get(key)) != readable(new.get(key))
    }
    # What the provider found different, when the inputs are not (a change made outside Pulumi, read back
    # by the refresh): the value the resource has now against the one the program declares.
    found = old_state.get("outputs") or {}
    # A dynamic provider's update names its changes only in the detailed diff, by property path.
    detailed = [str(path).split(".", 1)[0].split("[", 1)[0] for path in step.get("detailedDiff") or {}]
    listed = (step.get("replaceReasons") or []) + (step.get("diffReasons") or []) + detailed
    reasons = {str(key) for key in listed if not str(key).startswith("__")} - changed
    if not changed and not reasons:
        # Nothing named: what the refresh read back (a change made by hand) against what the program declares.
        reasons = {
            key
            for key in new
            if not key.startswith("__") and key in found and readable(found[key]) != readable(new[key])
        }
    changes = tuple(
        (key, shown(found.get(key) if key in reasons else old.get(key)), shown(new.get(key)))
        for key in sorted(changed | reasons)
    )
    return Step(str(step["op"]), urn.split("::")[-2].rsplit("$", 1)[-1], urn.split("::")[-1], changes)


def readable(value: object) -> object:
    """VALUE as a reader takes it: unknowns said as such wherever they are, the provider's `__defaults` out."""
    if value == UNKNOWN:
        return "(known after the update)"
    if isinstance(value, dict):
        return {key: readable(item) for key, item in value.items() if key != "__defaults"}
    if isinstance(value, list):
        return [readable(item) for item in value]
    return value


def shown(value: object) -> str:
    if value is None:
        return "(none)"
    if value == UNKNOWN:
        return "(known after the update)"
    text = json.dumps(readable(value), sort_keys=True)
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 3] + "..."


def verdict(preview: Preview) -> str:
    """The comment's first line."""
    stack = f"`{preview.stack}`"
    if preview.refused:
        return f"**{stack}: replaces {', '.join(preview.refused)}**, which the update refuses: this check fails."
    if preview.failure is not None:
        return f"**{stack}: the preview failed**, so nothing here says what an update would do."
    if not preview.losses:
        counts = ", ".join(f"{n} to {op}" for op, n in sorted(preview.summary.items()) if op != "same" and n)
        return f"**{stack}: no droplet or Volume would be replaced or deleted** ({counts or 'no changes'})."
    named = ", ".join(f"the {step.kind} `{step.name}` ({step.op})" for step in preview.losses)
    if preview.production:
        return f"**{stack}: replaces or deletes {named}**, on a stack with `production: true`: this check fails."
    return f"**{stack}: replaces or deletes {named}**."


def comment(preview: Preview, marker: str) -> str:
    """The pull request comment: the verdict, MARKER (an HTML comment that finds it again), the diff."""
    lines = [verdict(preview), "", f"<!-- {marker} -->", ""]
    if preview.losses and preview.production and preview.failure is None:
        lines += [
            "To go ahead on purpose: first merge a pull request that only sets `production` to false in the "
            "stack's file (its `pulumi up` lifts the protection and changes nothing else), then this one, "
            "then one that sets it back.",
            "",
        ]
    return "\n".join(lines) + report(preview, "pulumi preview --diff --refresh")


def report(preview: Preview, command: str) -> str:
    """What COMMAND said: the diff of each resource that would change, or the CLI's error."""
    if preview.failure is not None:
        return f"`{command}` of the stack `{preview.stack}` failed:\n\n```\n{preview.failure[-DIFF_LIMIT:]}\n```\n"
    diff = "\n".join(diff_lines(preview.steps)) or "(no changes)"
    if len(diff) > DIFF_LIMIT:
        diff = diff[:DIFF_LIMIT] + "\n... (cut: run `pulumi preview --diff` for the rest)"
    return f"`{command}` of the stack `{preview.stack}`:\n\n```diff\n{diff}\n```\n"


def diff_lines(steps: tuple[Step, ...]) -> list[str]:
    lines = []
    for step in steps:
        mark = "-" if step.op in ("delete", "delete-replaced") else "+" if step.op != "update" else "!"
        lines.append(f"{mark} {SYMBOLS.get(step.op, '  ')} {step.type} {step.name} ({step.op})")
        lines += [f"      {key}: {before} => {after}" for key, before, after in step.changes]
    return lines
