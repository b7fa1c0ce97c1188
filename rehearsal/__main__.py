"""scripts/rehearse [up|deploy|rollback|replace|down] [--stack NAME] [--set KEY=VALUE ...]
scripts/rehearse run [--stack NAME] [--set KEY=VALUE ...] -- COMMAND [ARGS...]
scripts/rehearse logs [-f] [-n LINES] | backup | restore [BACKUP] | notify test"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from core.plan import deploy_script_command, logs_command
from core.settings import SettingsError
from rehearsal import run
from rehearsal.deploy import DeployError
from rehearsal.nspawn import RehearsalError


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # A stopped run (Ctrl-C, or SIGTERM from a CI runner) removes what it created.
    signal.signal(signal.SIGTERM, interrupt)
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse",
        description="The production server on this machine: boot it, let cloud-init set it up, deploy the app.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="up",
        choices=("up", "deploy", "rollback", "replace", "run", "logs", "backup", "restore", "notify", "down"),
    )
    parser.add_argument(
        "release",
        nargs="?",
        help="with rollback: the release to go back to (default: the previous); "
        "with restore: the backup to put back (default: the newest); with notify: test",
    )
    parser.add_argument("-f", "--follow", action="store_true", help="with logs: keep showing new lines")
    parser.add_argument("-n", "--lines", type=int, help="with logs: how many of the last lines (default: 50)")
    parser.add_argument("--stack", default="dev", help="read settings from Pulumi.STACK.yaml (default: dev)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=parse_override,
        default=[],
        metavar="KEY=VALUE",
        help='override a config key, e.g. --set workers=4 or --set \'appEnv={"A":"b"}\'',
    )
    parser.epilog = (
        "run: everything after -- runs as the app's user in the live release, with its environment and "
        "sandbox, e.g. scripts/rehearse run -- flask --app myapp init-db; its exit code is rehearse's. "
        "logs: the site's requests (nginx's access log, with their ids) and the journal of the app and nginx. "
        "backup: back up the app's state directory now. restore: put a backup back, with the app stopped. "
        "notify test: a message to each of notifyWebhooks. "
        "replace: a new machine from the same image and user-data takes the old one's place and its "
        "Volume, as when a droplet is replaced. down: removes everything, the Volume too"
    )
    words = sys.argv[1:] if argv is None else argv
    split = words.index("--") if "--" in words else len(words)
    args = parser.parse_args(words[:split])
    command = words[split + 1 :]
    if (args.command == "run") != bool(command):
        parser.error("run takes a command after --, and only run does")
    overrides = dict(args.overrides)
    try:
        if args.command == "run":
            return run.run_once(args.stack, overrides, command)
        if args.command == "logs":
            return run.on_server(args.stack, overrides, lambda s: logs_command(s, args.follow, args.lines))
        if args.command in ("backup", "restore", "notify"):
            words = [args.command, *([args.release] if args.release else [])]
            return run.on_server(args.stack, overrides, lambda s: deploy_script_command(s, *words))
        if args.command == "down":
            run.down()
            run.progress("down: nothing of the rehearsal is left on this machine")
        elif args.command == "rollback":
            run.progress(f"release {run.rollback(args.stack, overrides, args.release)} is live")
        elif args.command == "deploy":
            release_id, ran = run.redeploy(args.stack, overrides)
            run.progress(f"release {release_id}; steps run: {', '.join(ran) or 'none (nothing changed)'}")
        else:
            try:
                url, _, timings = run.up(args.stack, overrides, replace=args.command == "replace")
            except KeyboardInterrupt:
                run.progress("interrupted: removing the machine")
                run.down()
                return 130
            run.progress(f"seconds: {timings}")
            print(url)
    except SettingsError as err:
        print(err, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C ends `logs -f` (and any other command on the machine); the machine stays up.
        return 130
    except (RehearsalError, DeployError) as err:
        print(f"rehearse: {err}", file=sys.stderr)
        if args.command != "down":
            print("rehearse: the machine is left up to look at; `scripts/rehearse down` removes it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
