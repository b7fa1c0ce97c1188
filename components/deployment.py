"""`AppDeployment`: runs the deploy plan on a server over SSH with pulumi-command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.database import Database
from core.droplets import members
from core.plan import DeployPlan, RemoteCommand, Upload, parse_deploy_output
from core.render import sha256_text
from core.settings import DATABASE_URL, Settings

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
    offsite: pulumi.Input[Mapping[str, str]] | None = None
    """The off-site bucket and its key (`OffsiteStorage.target`), for the droplet's off-site file; kept secret."""


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
        offsite: pulumi.Output[Mapping[str, str]] = pulumi.Output.from_input(args.offsite or {})
        stdin: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(extra_env, offsite).apply(lambda given: plan.stdin_with(given[0], given[1]))
        )
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
    scheme = "https" if settings.app.site.https else "http"
    return pulumi.Output.all(after.release_id, address).apply(
        lambda values: f"{scheme}://{settings.app.site.domain or values[1]}/"
    )


@dataclass(frozen=True)
class DeployTarget:
    """One droplet the rollout deploys to."""

    droplet_id: pulumi.Input[str]
    address: pulumi.Input[str]
    """The droplet's own address, which the deploy dials."""
    host_key: pulumi.Input[str]
    """Its Ed25519 host key, which every connection pins."""


@dataclass(frozen=True)
class Rollout:
    """The rolling deploy: one `AppDeployment` a droplet, each after the one before it has finished."""

    deployments: tuple[AppDeployment, ...]
    url: pulumi.Output[str]
    """The site as the first deploy found it; behind a balancer, at the balancer once the last has finished."""
    warnings: pulumi.Output[list[str]]
    """Every droplet's warnings; with several droplets, each line starts with the droplet's address."""

    @property
    def release_id(self) -> pulumi.Output[str]:
        """The release the rollout put on every droplet: the last deploy's."""
        return self.deployments[-1].release_id


def roll_out(
    settings: Settings,
    plans: Sequence[DeployPlan],
    targets: Sequence[DeployTarget],
    *,
    public_ipv4: pulumi.Input[str],
    after: pulumi.Resource,
    database: Database | None = None,
    offsite: pulumi.Input[Mapping[str, str]] | None = None,
) -> Rollout:
    """Deploy `plans[i]` on `targets[i]`, one droplet at a time, each once the one before it has finished.

    The first failure stops the rollout, and the droplets after it keep serving the release they
    had. The first deploy waits for `after` (the droplets) and for the database, whose firewall
    lets the droplets in: its release command may migrate the database. `offsite` is the off-site
    bucket each droplet copies its backups to.
    """
    extra_env = database.url.apply(lambda url: {DATABASE_URL: url}) if database is not None else None
    deployments: list[AppDeployment] = []
    for member, plan, target in zip(members(settings), plans, targets, strict=True):
        before: list[pulumi.Resource] = [deployments[-1]] if deployments else [after]
        if database is not None and not deployments:
            before.append(database)
        deployments.append(
            AppDeployment(
                member.deployment_name,
                AppDeploymentArgs(
                    host=target.address,
                    host_key=target.host_key,
                    server_id=target.droplet_id,
                    public_ipv4=public_ipv4,
                    plan=plan,
                    private_key=settings.server.ssh_private_key,
                    extra_env=extra_env,
                    offsite=offsite,
                ),
                opts=pulumi.ResourceOptions(depends_on=before),
            )
        )
    first, last = deployments[0], deployments[-1]
    url = first.url if not settings.server.behind_balancer else site_url(settings, public_ipv4, after=last)
    warnings = rollout_warnings(deployments, [target.address for target in targets])
    return Rollout(tuple(deployments), url, warnings)


def rollout_warnings(
    deployments: Sequence[AppDeployment], addresses: Sequence[pulumi.Input[str]]
) -> pulumi.Output[list[str]]:
    """One droplet's warnings as they are; several droplets', each line prefixed with its droplet's address."""
    if len(deployments) == 1:
        return deployments[0].warnings
    return pulumi.Output.all(
        *(
            pulumi.Output.all(address, deployment.warnings).apply(lambda found: [f"{found[0]}: {w}" for w in found[1]])
            for address, deployment in zip(addresses, deployments, strict=True)
        )
    ).apply(lambda lists: [warning for found in lists for warning in found])
