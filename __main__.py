"""flask-droplet: a Flask app on DigitalOcean droplets. Settings -> components -> exports."""

import functools
from pathlib import Path

import pulumi

from components.account import survey_account, token_problems
from components.config import load_settings
from components.database import Database, DatabaseArgs
from components.deployment import DeployTarget, roll_out
from components.fleet import private_network
from components.monitoring import Monitoring, MonitoringArgs
from components.offsite import OffsiteStorage, OffsiteStorageArgs, spaces_key_problems
from components.webserver import WebServer, WebServerArgs, droplet_tags
from core.cloudinit import render_user_data
from core.layout import DEPLOY_USER
from core.plan import logs_line, restore_offsite_line, rollout_plans
from core.ssh_host_keys import known_hosts_line
from core.sshagent import agent_problems

PROJECT_DIR = Path(__file__).resolve().parent
#: The `WebServer`'s name, which its droplets' names start with.
SERVER = "web"

settings = load_settings(PROJECT_DIR, also=token_problems)
tags = droplet_tags(pulumi.get_project(), settings.server.stack_name)
# What the account and this machine hold already, checked before any resource: every problem at once.
account = survey_account(
    settings,
    stack_tag=tags[-1],
    server=SERVER,
    problems=agent_problems(settings) + spaces_key_problems(settings),
    default_stack_tag=droplet_tags(pulumi.get_project(), pulumi.get_stack())[-1],
)
# With what the account adds: the public keys of sshKeyFingerprints, which every deploy authorizes.
settings = account.settings
# One plan for each droplet, the first's alone running releaseCommand.
plans = rollout_plans(settings, PROJECT_DIR / "build" / pulumi.get_stack())

network = private_network(settings, stack_tag=tags[-1])
server = WebServer(
    SERVER,
    WebServerArgs(
        settings=settings,
        user_data_for=functools.partial(render_user_data, settings),
        tags=tags,
        vpc_id=network.id if network is not None else None,
        replaced=account.replaced,
        registered_keys=account.registered_keys,
    ),
)
database = None
if settings.server.database == "postgres":
    assert network is not None  # a cluster always has the stack's VPC
    database = Database(
        "database",
        DatabaseArgs(settings=settings, vpc_id=network.id, droplet_ids=server.droplet_ids, tags=tags),
    )

# The bucket for the backups' off-site copies (with offsiteRegion), and the droplets' key to it.
offsite = (
    OffsiteStorage("offsite", OffsiteStorageArgs(settings=settings, stack_tag=tags[-1]))
    if settings.backups.offsite_region is not None
    else None
)

# A rolling deploy: one droplet at a time, each after the one before it has finished.
targets = zip(server.droplet_ids, server.droplet_addresses, server.host_keys, strict=True)
rollout = roll_out(
    settings,
    plans,
    [DeployTarget(*target) for target in targets],
    public_ipv4=server.public_ipv4,
    after=server,
    database=database,
    offsite=offsite.target if offsite is not None else None,
)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(settings=settings, droplet_ids=server.droplet_ids, url=rollout.url, stack_tag=tags[-1]),
)

# The site's address: the Reserved IP of one droplet, or the Load Balancer's.
pulumi.export("ipv4_address", server.public_ipv4)
# One droplet: https:// once the site has its certificate; http:// when none could be had (the deploy's log
# says why). Behind a balancer: the site at the balancer, once the rollout has reached every droplet.
pulumi.export("url", rollout.url)
# The first droplet's login and logs (the one that runs releaseCommand); droplet_addresses has the others.
pulumi.export("ssh", server.ipv4_address.apply(lambda ip: f"ssh {DEPLOY_USER}@{ip}"))
# Each droplet's host key for ~/.ssh/known_hosts (`pulumi stack output known_hosts >> ~/.ssh/known_hosts`),
# so `ssh` checks it from the first login on, as the deploy does.
pulumi.export(
    "known_hosts",
    pulumi.Output.all(
        *(
            pulumi.Output.all(address, key).apply(lambda pair: known_hosts_line(pair[0], pair[1]))
            for address, key in zip(server.droplet_addresses, server.host_keys, strict=True)
        )
    ).apply(lambda lines: "\n".join(lines) + "\n"),
)
# The site's requests and the app's and nginx's journal, followed; without -t and -f, the last lines.
pulumi.export("logs", server.ipv4_address.apply(functools.partial(logs_line, settings)))
pulumi.export("release_id", rollout.release_id)
# What serves but needs a hand; with several droplets, each line starts with the droplet's address.
pulumi.export("warnings", rollout.warnings)
# Where the app's data lives when the droplet is replaced: the Volume's name, id and mount point (or None).
pulumi.export("state_volume", server.state_volume)
# The off-site copies' bucket (None without offsiteRegion), and the restore of the newest of them onto the
# first droplet, the age identity on its stdin (it lists them all first; a name after --offsite picks one).
pulumi.export("offsite_bucket", offsite.bucket_name if offsite is not None else None)
pulumi.export(
    "restore_offsite",
    server.ipv4_address.apply(functools.partial(restore_offsite_line, settings)) if offsite is not None else None,
)
# What DigitalOcean watches and whom it tells (or None without alertEmails).
pulumi.export("alerts", monitoring.alerts)
# The Load Balancer's address (None for one droplet), and each droplet's own, the first first.
pulumi.export("balancer_address", server.balancer_address)
pulumi.export("droplet_addresses", pulumi.Output.all(*server.droplet_addresses))
# The database cluster's hostname in the VPC (None without one); its credentials are only in DATABASE_URL.
pulumi.export("database_host", database.private_host if database is not None else None)
