"""`AppDeployment`: runs the deploy plan on a server over SSH with pulumi-command."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from core.plan import DeployPlan, RemoteCommand, Upload, parse_deploy_output
from core.render import sha256_text
from core.settings import Settings

#: How long the deploy keeps dialling a new droplet whose sshd is not up yet (each dial refused at once).
DIAL_BUDGET_SECONDS = 600
#: pulumi-command waits between failed dials as Pulumi's `retry.Until` does (`sdk/go/common/util/retry/until.go`):
#: 100 ms, then 1.5 times longer each time, never more than 5 s.
DIAL_FIRST_WAIT_SECONDS, DIAL_BACKOFF, DIAL_LONGEST_WAIT_SECONDS = 0.1, 1.5, 5.0
#: A dial that gets no answer (a droplet not on the network yet, a firewall dropping the packets) gives up after this.
PER_DIAL_TIMEOUT_SECONDS = 10


def dial_wait_seconds(failed_dials: int) -> float:
    """Seconds pulumi-command spends waiting between `failed_dials` failed dials, before it gives up."""
    return sum(
        min(DIAL_FIRST_WAIT_SECONDS * DIAL_BACKOFF**attempt, DIAL_LONGEST_WAIT_SECONDS)
        for attempt in range(failed_dials)
    )


def dial_error_limit(budget_seconds: float) -> int:
    """The fewest failed dials whose waits between them last `budget_seconds`."""
    limit = 0
    while dial_wait_seconds(limit) < budget_seconds:
        limit += 1
    return limit


#: 128: ten minutes of dials refused at once, about 32 minutes when every dial waits out its timeout
#: (40, the limit before, lasted 2.7 minutes of refused dials).
DIAL_ERROR_LIMIT = dial_error_limit(DIAL_BUDGET_SECONDS)


@dataclass(frozen=True)
class AppDeploymentArgs:
    host: pulumi.Input[str]
    """Address of the server."""
    host_key: pulumi.Input[str]
    """The server's Ed25519 host key (`ssh-ed25519 AAAA...`): every connection checks it before it sends anything."""
    server_id: pulumi.Input[str]
    """Identity of the server; a new server reruns every step."""
    public_ipv4: pulumi.Input[str]
    """The address the site is reached at (the Reserved IP): its certificate's, without a domain."""
    plan: DeployPlan
    """The ordered steps, from `build_deploy_plan`."""
    private_key: pulumi.Input[str] | None = None
    """SSH private key for the deploy user; None uses the SSH agent (SSH_AUTH_SOCK)."""
    extra_env: pulumi.Input[Mapping[str, str]] | None = None
    """Variables beside appEnv that exist only with other resources (DATABASE_URL); kept secret."""


class AppDeployment(pulumi.ComponentResource):
    """Waits for cloud-init, uploads the release and runs the deploy script.

    Each step's `triggers` are content hashes, so an unchanged app and config
    run nothing on `pulumi up`, and a change reruns exactly the steps it touches
    and those after them.
    """

    release_id: pulumi.Output[str]
    url: pulumi.Output[str]
    """Where the site answers, as the deploy found it: https:// once it has a certificate."""
    warnings: pulumi.Output[list[str]]
    """Hardening extras that are not running (fail2ban, say): the site serves, but say so."""

    def __init__(self, name: str, args: AppDeploymentArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:app:AppDeployment", name, None, opts)
        plan = args.plan
        connection = remote.ConnectionArgs(
            host=args.host,
            user=plan.login_user,
            host_key=args.host_key,
            private_key=pulumi.Output.secret(args.private_key) if args.private_key is not None else None,
            dial_error_limit=DIAL_ERROR_LIMIT,
            per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
        )
        # The secret environment, and its hash: a changed secret redeploys, and the hash stays secret too.
        extra_env: pulumi.Output[Mapping[str, str]] = pulumi.Output.from_input(args.extra_env or {})
        stdin: pulumi.Output[str] = pulumi.Output.secret(extra_env.apply(plan.stdin_with))
        stdin_hash: pulumi.Output[str] = pulumi.Output.secret(stdin.apply(sha256_text))

        previous: list[pulumi.Resource] = []
        last: pulumi.Resource | None = None
        for step in plan.steps:
            step_opts = pulumi.ResourceOptions(parent=self, depends_on=list(previous))
            triggers: list[pulumi.Input[str]] = [args.server_id, step.content_hash]
            if isinstance(step, Upload):
                last = remote.CopyToRemote(
                    f"{name}-{step.name}",
                    connection=connection,
                    source=pulumi.FileAsset(str(step.local_path)),
                    remote_path=step.remote_path,
                    triggers=triggers,
                    opts=step_opts,
                )
            elif isinstance(step, RemoteCommand):
                if step.takes_public_address:
                    triggers.append(args.public_ipv4)
                if step.stdin_is_secret:
                    triggers.append(stdin_hash)
                last = remote.Command(
                    f"{name}-{step.name}",
                    connection=connection,
                    create=(
                        pulumi.Output.from_input(args.public_ipv4).apply(step.command_for)
                        if step.takes_public_address
                        else step.command
                    ),
                    stdin=stdin if step.stdin_is_secret else None,
                    triggers=triggers,
                    # Progress goes to stderr; stdout carries what `parse_deploy_output` reads.
                    logging=remote.Logging.STDERR,
                    add_previous_output_in_env=False,
                    opts=step_opts,
                )
            previous = [last]

        assert isinstance(last, remote.Command), "a deploy plan ends with the deploy command"
        release_id = plan.release_id
        self.release_id = last.stdout.apply(lambda _: release_id)
        report = last.stdout.apply(parse_deploy_output)
        self.url = report.apply(lambda r: r.url)
        self.warnings = report.apply(lambda r: list(r.warnings))
        self.register_outputs({"release_id": self.release_id, "url": self.url, "warnings": self.warnings})


def site_url(settings: Settings, address: pulumi.Input[str], after: AppDeployment) -> pulumi.Output[str]:
    """The site's URL behind a balancer, known once `after` (the rollout's last deploy) has finished.

    The balancer holds the certificate, so it is not the deploy that finds out whether the
    site has one: with `https` (which needs a domain in DigitalOcean's DNS with several
    droplets) it is https://DOMAIN/, without it http:// at the domain or the balancer's address.
    """
    scheme = "https" if settings.https else "http"
    return pulumi.Output.all(after.release_id, address).apply(
        lambda values: f"{scheme}://{settings.domain or values[1]}/"
    )
