"""flask-droplet: a Flask app on a DigitalOcean droplet. Settings -> components -> exports."""

from pathlib import Path

import pulumi

from components.config import load_settings
from components.database import Database, DatabaseArgs
from components.deployment import AppDeployment, AppDeploymentArgs
from components.fleet import private_network
from components.monitoring import Monitoring, MonitoringArgs
from components.plan import build_deploy_plan, logs_command
from components.render import DEPLOY_USER, render_user_data
from components.settings import DATABASE_URL
from components.webserver import WebServer, WebServerArgs, check_volume_stays, droplet_tags

PROJECT_DIR = Path(__file__).resolve().parent

settings = load_settings(PROJECT_DIR)
tags = droplet_tags(pulumi.get_project(), pulumi.get_stack())
check_volume_stays(settings, stack_tag=tags[-1])
plan = build_deploy_plan(settings, PROJECT_DIR / "build" / pulumi.get_stack())

network = private_network(settings, stack_tag=tags[-1])
server = WebServer(
    "web",
    WebServerArgs(
        settings=settings,
        user_data=render_user_data(settings),
        tags=tags,
        vpc_id=network.id if network is not None else None,
    ),
)
database = None
if settings.database == "postgres":
    assert network is not None  # a cluster always has the stack's VPC
    database = Database(
        "database",
        DatabaseArgs(settings=settings, vpc_id=network.id, droplet_ids=[server.droplet_id], tags=tags),
    )
deployment = AppDeployment(
    "app",
    AppDeploymentArgs(
        host=server.ipv4_address,
        server_id=server.droplet_id,
        public_ipv4=server.public_ipv4,
        plan=plan,
        private_key=settings.ssh_private_key,
        extra_env=database.url.apply(lambda url: {DATABASE_URL: url}) if database is not None else None,
    ),
    # Its firewall lets the droplet in: the release command may migrate the database.
    opts=pulumi.ResourceOptions(depends_on=[server] if database is None else [server, database]),
)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(settings=settings, droplet_ids=[server.droplet_id], url=deployment.url, stack_tag=tags[-1]),
)

pulumi.export("ipv4_address", server.public_ipv4)
# https:// once the site has its certificate; http:// when none could be had (the deploy's log says why).
pulumi.export("url", deployment.url)
pulumi.export("ssh", server.ipv4_address.apply(lambda ip: f"ssh {DEPLOY_USER}@{ip}"))
# The site's requests and the app's and nginx's journal, followed; without -t and -f, the last lines.
pulumi.export("logs", server.ipv4_address.apply(lambda ip: f"ssh -t {DEPLOY_USER}@{ip} {logs_command(settings, True)}"))
pulumi.export("release_id", deployment.release_id)
pulumi.export("warnings", deployment.warnings)
# Where the app's data lives when the droplet is replaced: the Volume's name, id and mount point (or None).
pulumi.export("state_volume", server.state_volume)
# What DigitalOcean watches and whom it tells (or None without alertEmails).
pulumi.export("alerts", monitoring.alerts)
# The database cluster's hostname in the VPC (None without one); its credentials are only in DATABASE_URL.
pulumi.export("database_host", database.private_host if database is not None else None)
