"""More than one droplet: the stack's VPC, and the Load Balancer that holds the site's address and certificate.

`WebServer` declares the droplets; this module declares what stands around them
when there are several (or when a database cluster needs a private network to
reach them): a VPC in the droplets' region, and a DigitalOcean Load Balancer in
it that checks each droplet as `core/balancer.py` says and sends visitors
to the healthy ones over plain HTTP. The balancer ends HTTPS as the droplet's own
nginx would (HTTP/2, HTTP/3, TLS 1.2 and 1.3 with DigitalOcean's `STRONG` ciphers,
HTTP redirected), with DigitalOcean's Let's Encrypt certificate or one the user brings.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_digitalocean as digitalocean

from core.balancer import BALANCER_CHECK
from core.settings import Settings

#: The balancer's size in nodes: one node (10,000 requests a second, 250 new TLS connections a second) is
#: far more than one small droplet serves, and each node is billed.
BALANCER_SIZE_UNIT = 1
#: How long `pulumi destroy` retries the VPC's delete while its members leave it.
VPC_DELETE_TIMEOUT = "20m"
#: Where visitors' requests reach the droplets: nginx's site, in plain HTTP (the balancer holds TLS).
DROPLET_HTTP_PORT = 80
#: Where visitors' HTTPS reaches the balancer: over TCP (HTTP/2) and over UDP (HTTP/3), one port for both as
#: DigitalOcean asks (an HTTP/3 rule needs an HTTPS or HTTP/2 rule on its port).
HTTPS_PORT = 443
#: The balancer's cipher suites: `STRONG` or `DEFAULT`, the only two the API names (`tls_cipher_policy`).
TLS_CIPHER_POLICY = "STRONG"
#: The forwarding rules' entry protocols for HTTPS: HTTP/2 over TLS, and HTTP/3 over QUIC, both ending at the
#: balancer and going on to the droplets as plain HTTP.
HTTPS_ENTRY_PROTOCOLS = ("http2", "http3")


def needs_private_network(settings: Settings) -> bool:
    """A VPC whenever droplets stand behind a balancer or talk to a database cluster; one droplet alone needs none."""
    return settings.server.behind_balancer or settings.server.database == "postgres"


def private_network(settings: Settings, stack_tag: str) -> digitalocean.Vpc | None:
    """The stack's own VPC in the droplets' region, or None when nothing needs one.

    Its name is left to Pulumi (a VPC's name is unique in the account) and DigitalOcean
    picks a free private range: nothing here depends on the addresses, only on the
    network being the same for the droplets, the balancer and the cluster.
    """
    if not needs_private_network(settings):
        return None
    return digitalocean.Vpc(
        "network",
        region=settings.server.region,
        description=f"{stack_tag}: the app's droplets, their balancer and database",
        # A deleted cluster (or balancer) leaves the VPC some minutes after its delete returns, and until then the
        # VPC's delete answers 403/409 ("Can not delete VPC with members", pulumi/pulumi-digitalocean#105). The
        # provider retries it for the delete timeout, 2 minutes by default (`resourceDigitalOceanVPCDelete`).
        opts=pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(delete=VPC_DELETE_TIMEOUT)),
    )


def site_certificate(name: str, settings: Settings, opts: pulumi.ResourceOptions) -> digitalocean.Certificate:
    """The balancer's certificate for the site's names: DigitalOcean's Let's Encrypt one, or the one brought.

    DigitalOcean answers the ACME challenge in the domain's zone, so its own certificate
    needs `dnsZone`; for a domain whose DNS is elsewhere the user brings one
    (`balancerCertificate`), which DigitalOcean stores as it is and never renews. Which of
    the two is checked with the settings. The name is left to Pulumi: a certificate that
    changes (its names, or the brought one) is replaced, the new one created (under a new
    name, as the provider asks) and put on the balancer before the old one is deleted.
    """
    brought = settings.app.site.balancer_certificate
    if brought is None:
        return digitalocean.Certificate(
            name,
            type=digitalocean.CertificateType.LETS_ENCRYPT,
            domains=list(settings.app.site.host_names),
            opts=opts,
        )
    assert settings.app.site.balancer_certificate_key is not None, (
        "the settings take a brought certificate with its key"
    )
    return digitalocean.Certificate(
        name,
        type=digitalocean.CertificateType.CUSTOM,
        leaf_certificate=brought.leaf,
        certificate_chain=brought.intermediates or None,
        # A Pulumi secret in the state and the preview; the provider keeps only its hash (`resource_certificate.go`).
        private_key=pulumi.Output.secret(str(settings.app.site.balancer_certificate_key)),
        opts=opts,
    )


def load_balancer(
    name: str,
    settings: Settings,
    droplet_ids: Sequence[pulumi.Input[str]],
    vpc_id: pulumi.Input[str],
    certificate: digitalocean.Certificate | None,
    opts: pulumi.ResourceOptions,
) -> digitalocean.LoadBalancer:
    """A regional Load Balancer in the VPC, in front of `droplet_ids`, checking each one as `BALANCER_CHECK` says.

    HTTP on port 80 goes to each droplet's port 80; with a `certificate`, HTTPS on 443
    (HTTP/2 over TCP, HTTP/3 over UDP) ends at the balancer with the `STRONG` cipher policy
    and goes on as HTTP to port 80 too, and plain HTTP is redirected to it. The droplet's
    nginx tells the two apart by the X-Forwarded-Proto the balancer adds, and sends HSTS
    and its other security headers through the balancer. No sticky sessions: a deploy takes
    one droplet at a time out of the rotation, and a visitor held to it would wait for it
    instead of moving on to another.
    """
    forwarding_rules = [
        digitalocean.LoadBalancerForwardingRuleArgs(
            entry_port=80, entry_protocol="http", target_port=DROPLET_HTTP_PORT, target_protocol="http"
        )
    ]
    if certificate is not None:
        forwarding_rules += [
            digitalocean.LoadBalancerForwardingRuleArgs(
                entry_port=HTTPS_PORT,
                entry_protocol=protocol,
                target_port=DROPLET_HTTP_PORT,
                target_protocol="http",
                # By name: a Let's Encrypt certificate's id changes with every renewal.
                certificate_name=certificate.name,
            )
            for protocol in HTTPS_ENTRY_PROTOCOLS
        ]
    return digitalocean.LoadBalancer(
        name,
        region=settings.server.region,
        vpc_uuid=vpc_id,
        size_unit=BALANCER_SIZE_UNIT,
        droplet_ids=[pulumi.Output.from_input(droplet_id).apply(int) for droplet_id in droplet_ids],
        healthcheck=digitalocean.LoadBalancerHealthcheckArgs(
            protocol="http",
            port=BALANCER_CHECK.port,
            path=settings.app.health_path,
            check_interval_seconds=BALANCER_CHECK.interval_seconds,
            response_timeout_seconds=BALANCER_CHECK.timeout_seconds,
            unhealthy_threshold=BALANCER_CHECK.unhealthy_threshold,
            healthy_threshold=BALANCER_CHECK.healthy_threshold,
        ),
        sticky_sessions=digitalocean.LoadBalancerStickySessionsArgs(type="none"),
        forwarding_rules=forwarding_rules,
        redirect_http_to_https=certificate is not None,
        # Set whether or not HTTPS is served: a later certificate then changes no policy.
        tls_cipher_policy=TLS_CIPHER_POLICY,
        # The program writes the domain's records itself (with dnsZone); DigitalOcean's own for the
        # certificate's names would be a second set that `pulumi destroy` knows nothing of.
        disable_lets_encrypt_dns_records=True,
        opts=opts,
    )
