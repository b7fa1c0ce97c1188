"""`python -m delivery COMMAND`: the steps of the repository's workflows (scripts/ runs each one).

preview --stack S --comment FILE   the preview of S as a pull request comment; fails when a stack with
                                   `production: true` would lose a droplet, a Volume or a cluster
review up N --comment FILE         the review stack pr-N, from the production stack and the template
review down N --comment FILE       pr-N destroyed, and removed from the backend
review prune --open FILE           every review stack whose pull request is not listed in FILE
up --stack S --summary FILE        `pulumi up` of S (waiting for another update to finish)
drift --stack S --summary FILE     fails when S's resources differ from what the program declares
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from delivery.preview import comment, read_preview, report
from delivery.pulumi_cli import Pulumi, PulumiError, tail
from delivery.stacks import (
    configure_review_stack,
    outputs_markdown,
    review_number,
    review_stack,
    stack_outputs,
)

#: The review stacks' config over the production stack's, in the repository.
REVIEW_TEMPLATE = Path("review/Pulumi.pr.yaml")
#: What finds a comment of these steps again on the pull request, to update it instead of adding one.
PREVIEW_MARKER = "flask-droplet:preview"
REVIEW_MARKER = "flask-droplet:review-stack"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    pulumi = Pulumi(Path(args.cwd).resolve())
    try:
        code: int = args.run(pulumi, args)
    except PulumiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return code


def preview(pulumi: Pulumi, args: argparse.Namespace) -> int:
    done = pulumi.run("preview", "--diff", "--refresh", "--json", stack=args.stack, json_out=True)
    result = read_preview(args.stack, done.stdout, done.stderr, done.returncode)
    body = comment(result, f"{PREVIEW_MARKER}:{args.stack}")
    write(args.comment, body)
    print(body.splitlines()[0])
    return 0 if result.passes else 1


def review_up(pulumi: Pulumi, args: argparse.Namespace) -> int:
    stack = review_stack(args.number)
    configure_review_stack(pulumi, stack, args.source, pulumi.project / args.template)
    done = pulumi.update("up", "--yes", "--diff", stack=stack)
    if done.returncode != 0:
        write(args.comment, review_comment(stack, f"`pulumi up` failed:\n\n```\n{tail(done.text)}\n```\n"))
        return 1
    outputs = stack_outputs(pulumi, stack)
    url = outputs.get("url")
    write(args.comment, review_comment(stack, f"is up at {url}\n\n{outputs_markdown(outputs)}"))
    print(url)
    return 0


def review_down(pulumi: Pulumi, args: argparse.Namespace) -> int:
    stack = review_stack(args.number)
    if stack not in pulumi.stacks():
        write(args.comment, review_comment(stack, "is not in the backend: nothing to remove.\n"))
        print(f"{stack}: not in the backend, nothing to remove")
        return 0
    configure_review_stack(pulumi, stack, args.source, pulumi.project / args.template)
    done = pulumi.update("destroy", "--yes", "--remove", stack=stack)
    if done.returncode != 0:
        write(args.comment, review_comment(stack, f"could not be destroyed:\n\n```\n{tail(done.text)}\n```\n"))
        return 1
    write(args.comment, review_comment(stack, "was destroyed and removed from the backend.\n"))
    print(f"{stack}: destroyed and removed")
    return 0


def review_prune(pulumi: Pulumi, args: argparse.Namespace) -> int:
    """Each review stack whose pull request is not among the open ones (one number a line in --open)."""
    open_numbers = {int(word) for word in Path(args.open).read_text().split()}
    closed = sorted(
        number for number in map(review_number, pulumi.stacks()) if number is not None and number not in open_numbers
    )
    failed = []
    for number in closed:
        down = argparse.Namespace(**{**vars(args), "number": number, "comment": None})
        if review_down(pulumi, down) != 0:
            failed.append(review_stack(number))
    removed = len(closed) - len(failed)
    print(f"review stacks of closed pull requests: {removed} removed" + (f", failed: {failed}" if failed else ""))
    return 1 if failed else 0


def up(pulumi: Pulumi, args: argparse.Namespace) -> int:
    # Refreshed first, as the pull request's preview was: what it showed is what the merge does, and a
    # change made by hand is put back.
    done = pulumi.update("up", "--yes", "--diff", "--refresh", stack=args.stack)
    if done.returncode != 0:
        write(args.summary, f"## `pulumi up` of `{args.stack}` failed\n\n```\n{tail(done.text)}\n```\n", append=True)
        return 1
    outputs = outputs_markdown(stack_outputs(pulumi, args.stack))
    write(args.summary, f"## `pulumi up` of `{args.stack}`\n\n{outputs}", append=True)
    return 0


def drift(pulumi: Pulumi, args: argparse.Namespace) -> int:
    """`pulumi preview --refresh --expect-no-changes`: a change made outside Pulumi fails it."""
    done = pulumi.run("preview", "--refresh", "--expect-no-changes", "--json", stack=args.stack, json_out=True)
    result = read_preview(args.stack, done.stdout, done.stderr, done.returncode, expect_no_changes=True)
    if done.returncode == 0 and result.failure is None:
        write(args.summary, f"## `{args.stack}`: no drift\n\nIts resources are as the program declares them.\n", True)
        print(f"{args.stack}: no drift")
        return 0
    title = "drift" if result.failure is None else "the drift check failed"
    body = report(result, "pulumi preview --refresh --expect-no-changes")
    write(args.summary, f"## `{args.stack}`: {title}\n\n{body}", append=True)
    print(
        f"{args.stack}: {title}: its resources differ from what the program declares (changed outside Pulumi?)"
        if result.failure is None
        else f"{args.stack}: {title}:\n{result.failure}",
        file=sys.stderr,
    )
    return 1


def review_comment(stack: str, text: str) -> str:
    return f"Review stack `{stack}` {text}\n<!-- {REVIEW_MARKER} -->\n"


def write(path: str | None, text: str, append: bool = False) -> None:
    if path:
        with open(path, "a" if append else "w", encoding="utf-8") as file:
            file.write(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m delivery", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cwd", default=".", help="the Pulumi project's directory (default: here)")
    commands = top.add_subparsers(required=True)

    command = commands.add_parser("preview", parents=[common], help="the stack's preview as a pull request comment")
    command.add_argument("--stack", required=True)
    command.add_argument("--comment", help="file to write the comment's body to")
    command.set_defaults(run=preview)

    review = commands.add_parser("review", help="review stacks, one per pull request").add_subparsers(required=True)
    for name, run in (("up", review_up), ("down", review_down), ("prune", review_prune)):
        command = review.add_parser(name, parents=[common])
        if name == "prune":
            command.add_argument("--open", required=True, help="file of the open pull requests' numbers")
        else:
            command.add_argument("number", type=int, help="the pull request's number")
            command.add_argument("--comment", help="file to write the pull request comment's body to")
        command.add_argument("--from", dest="source", default="production", help="the stack whose config it takes")
        command.add_argument("--template", default=str(REVIEW_TEMPLATE), help="the values it takes over that config")
        command.set_defaults(run=run)

    for name, run in (("up", up), ("drift", drift)):
        command = commands.add_parser(name, parents=[common])
        command.add_argument("--stack", required=True)
        command.add_argument("--summary", help="file to add a Markdown summary to (the job's summary)")
        command.set_defaults(run=run)
    return top


if __name__ == "__main__":
    sys.exit(main())
