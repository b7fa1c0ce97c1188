"""The certificate check: one that serves is kept, else one is requested, before anything changes."""

from __future__ import annotations

from agent import notify
from agent.checks import check_dns, install_tool
from agent.context import Agent

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def names(agent: Agent, public_ipv4: str) -> tuple[str, ...]:
    """What the certificate must cover: the site's host names, or with no domain its address."""
    return agent.config.host_names or (public_ipv4,)


def certificate_serves(agent: Agent, public_ipv4: str, any_server: bool = False) -> bool:
    """The certificate covers every name (or the address) for an hour more, from the ACME server (or any)."""
    config, system = agent.config, agent.system
    cert = f"{config.layout.certificate_dir}/fullchain.pem"
    if not system.exists(cert):
        return False
    if not any_server:
        renewal = system.read_text(config.layout.certificate_renewal) or ""
        if f"server = {config.acme_server}" not in renewal.splitlines():
            return False
    if not system.run(["openssl", "x509", "-in", cert, "-noout", "-checkend", "3600"]).ok:
        return False
    extension = system.run(["openssl", "x509", "-in", cert, "-noout", "-ext", "subjectAltName"]).stdout
    sans = set("".join(extension.splitlines()[1:]).replace(" ", "").split(","))
    return all(f"DNS:{name}" in sans or f"IPAddress:{name}" in sans for name in names(agent, public_ipv4))


def request_certificate(agent: Agent, public_ipv4: str) -> bool:
    """Over HTTP-01, answered from the ACME webroot, which nginx serves for any name on port 80."""
    config = agent.config
    if config.domain:
        # Named, so that a lineage that held an address certificate does not keep its 6-day profile.
        identity = ["--preferred-profile", "classic"]
        for name in config.host_names:
            identity += ["--domain", name]
    else:
        # Let's Encrypt issues IP-address certificates in its 6-day profile only.
        identity = ["--ip-address", public_ipv4, "--preferred-profile", "shortlived"]
    contact = ["--email", config.acme_email, "--no-eff-email"] if config.acme_email else []
    agent.system.make_dirs(config.layout.acme_webroot)
    agent.log(f"requesting a certificate for {' '.join(names(agent, public_ipv4))} from {config.acme_server}")
    command = [
        config.layout.certbot,
        "certonly",
        "--non-interactive",
        "--agree-tos",
        "--webroot",
        "--webroot-path",
        config.layout.acme_webroot,
        "--cert-name",
        config.app_name,
        "--server",
        config.acme_server,
        *(contact or ["--register-unsafely-without-email"]),
        *identity,
        "--force-renewal",
        "--deploy-hook",
        "systemctl reload nginx",
    ]
    return agent.system.run(command, output="stderr", env={"REQUESTS_CA_BUNDLE": CA_BUNDLE}).ok


def ensure_certificate(agent: Agent, public_ipv4: str) -> bool:
    """A certificate that serves, or a loud reason why there is none; whether the HTTPS site may be used."""
    config = agent.config
    if not config.https:
        return False
    if certificate_serves(agent, public_ipv4):
        return True
    if config.domain:
        check_dns(agent, public_ipv4)
    if (
        install_tool(agent, "certbot", config.certbot_version, config.layout.certbot)
        and request_certificate(agent, public_ipv4)
        and certificate_serves(agent, public_ipv4)
    ):
        return True
    if config.domain:
        agent.fail(
            f"https: no certificate for {' '.join(config.host_names)} from {config.acme_server} (certbot's output "
            "above; /var/log/letsencrypt/letsencrypt.log). The live site is unchanged."
        )
    serves = certificate_serves(agent, public_ipv4, any_server=True)
    outcome = "the current certificate keeps serving" if serves else "the site stays on plain HTTP"
    warning = (
        f"no certificate for {public_ipv4} from {config.acme_server} (certbot's output above); "
        f"{outcome} and the next deploy tries again"
    )
    agent.log(f"WARNING: {warning}")
    notify.certificate_not_issued(agent, warning.replace(" (certbot's output above)", " (the deploy's log)"))
    return serves
