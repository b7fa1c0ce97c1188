"""The droplet's first boot, after cloud-init has written the manifest's first-boot files.

cloud-init runs it once, as root, from the copy of this package its user-data carries
(`python3 -I /usr/local/lib/flaskdroplet/first-boot`): the state Volume mounted, the
host firewall up with SSH allowed first, sshd hardened, the login policy, the kernel's
settings, the app's directories and nginx's site, then nginx and the app's socket
started. A failure stops cloud-init, which reports it; a hardening extra that cannot run
(fail2ban) is said and does not stop the server from coming up.
"""

from __future__ import annotations

import re

from agent.config import load
from agent.context import Agent, Failed
from agent.system import RealSystem

#: Seconds before a service start that failed is tried the second and last time: systemd refuses a
#: start "because of unavailable resources" when it cannot spawn the process at that moment, which
#: passes on a droplet still busy with its first boot.
START_RETRY_SECONDS = 3

#: OpenSSH from this version on offers the post-quantum key exchange (mlkem768x25519-sha256).
POST_QUANTUM_OPENSSH = (9, 9)
#: Bits of the RSA host key, and the smallest Diffie-Hellman group exchange modulus kept.
RSA_HOST_KEY_BITS = 4096
MIN_MODULUS_BITS = 3071

#: /etc/login.defs: new files private to their group; passwords (all locked here) hashed slowly and aged.
LOGIN_DEFS = (
    ("UMASK", "027"),
    ("PASS_MAX_DAYS", "365"),
    ("PASS_MIN_DAYS", "1"),
    ("SHA_CRYPT_MIN_ROUNDS", "500000"),
    ("SHA_CRYPT_MAX_ROUNDS", "1000000"),
)
NGINX_CONF = "/etc/nginx/nginx.conf"


def mount_state_volume(agent: Agent) -> None:
    """The app's state lives on its Volume: mounted before anything can write there."""
    if not agent.config.state_device:
        return
    must(agent, "systemctl", "daemon-reload")
    must(agent, "systemctl", "enable", "--now", agent.config.layout.state_mount_unit)


def enable_firewall(agent: Agent) -> None:
    """ufw denies everything inbound but its ports; SSH is allowed before it is enabled, so no session is cut.

    Behind a balancer, its health check reaches nginx's check port from the private networks."""
    config = agent.config
    must(agent, "ufw", "default", "deny", "incoming")
    must(agent, "ufw", "default", "allow", "outgoing")
    for port in config.ufw_allowed_ports:
        must(agent, "ufw", "allow", port)
    for network in config.balancer_networks:
        must(agent, "ufw", "allow", "proto", "tcp", "from", network, "to", "any", "port", str(config.balancer_port))
    must(agent, "ufw", "--force", "enable")


def openssh_version(agent: Agent) -> tuple[int, int]:
    """The machine's OpenSSH as (major, minor), from `ssh -V` ("OpenSSH_9.6p1 Ubuntu-3ubuntu13.5, ...")."""
    result = agent.system.run(["ssh", "-V"])
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stderr + result.stdout)
    if not found:
        agent.fail(f"cannot tell the OpenSSH version from `ssh -V`: {(result.stderr or result.stdout).strip()!r}")
    return int(found.group(1)), int(found.group(2))


def strong_moduli(text: str) -> str | None:
    """/etc/ssh/moduli without the groups under MIN_MODULUS_BITS, or None when it has none to drop."""
    kept, dropped = [], False
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) >= 5 and fields[4].isdigit() and int(fields[4]) < MIN_MODULUS_BITS:
            dropped = True
        else:
            kept.append(line)
    return "".join(kept) if dropped else None


def harden_sshd(agent: Agent) -> None:
    """The sshd algorithm drop-in this OpenSSH can read, an RSA 4096 host key, no ECDSA one, strong moduli.

    sshd must accept the result (`sshd -t`) or the drop-in goes again: a refused sshd on a
    droplet is a lost server."""
    config, system = agent.config, agent.system
    choice = "post-quantum" if openssh_version(agent) >= POST_QUANTUM_OPENSSH else "classic"
    choices = system.read_text(f"{config.layout.ssh_choices_dir}/crypto-{choice}.conf")
    if choices is None:
        agent.fail(f"{config.layout.ssh_choices_dir}/crypto-{choice}.conf is missing")
    system.write_file(config.layout.ssh_crypto_drop_in, choices, mode=0o644)

    rsa_key = "/etc/ssh/ssh_host_rsa_key"
    bits = system.run(["ssh-keygen", "-l", "-f", f"{rsa_key}.pub"]).stdout.split()[:1]
    if bits != [str(RSA_HOST_KEY_BITS)]:
        system.remove(rsa_key)
        system.remove(f"{rsa_key}.pub")
        must(agent, "ssh-keygen", "-q", "-t", "rsa", "-b", str(RSA_HOST_KEY_BITS), "-N", "", "-f", rsa_key)
    system.remove("/etc/ssh/ssh_host_ecdsa_key")
    system.remove("/etc/ssh/ssh_host_ecdsa_key.pub")
    moduli = strong_moduli(system.read_text("/etc/ssh/moduli") or "")
    if moduli is not None:
        system.write_file("/etc/ssh/moduli", moduli, mode=0o644)

    if not system.run(["sshd", "-t"], output="stderr").ok:
        system.remove(config.layout.ssh_crypto_drop_in)
        say(agent, f"WARNING: sshd refused the {choice} algorithms; they are not used")
        return
    must(agent, "systemctl", "try-restart", "ssh.service")
    say(agent, f"sshd uses the {choice} algorithms, an Ed25519 and an RSA {RSA_HOST_KEY_BITS} host key")


def login_defs(text: str) -> str:
    """/etc/login.defs with LOGIN_DEFS' values, each set where the file has the setting (commented or not)."""
    for name, value in LOGIN_DEFS:
        text = re.sub(rf"^#?\s*{name}\s+[0-9]+\s*$", f"{name} {value}", text, flags=re.MULTILINE)
    return text


def apply_login_policy(agent: Agent) -> None:
    text = agent.system.read_text("/etc/login.defs")
    if text is None:
        return
    wanted = login_defs(text)
    if wanted != text:
        agent.system.write_file("/etc/login.defs", wanted, mode=0o644)


def apply_sysctls(agent: Agent) -> None:
    """The kernel settings; inside a container (the rehearsal) the kernel's own stay the host's."""
    if not agent.system.run(["sysctl", "--quiet", "--system"]).ok:
        say(agent, "some sysctls were refused")


def nginx_conf(text: str, connections: int) -> str:
    """nginx.conf with each worker's connections set (only its events block can set them)."""
    return re.sub(r"^(\s*worker_connections)\s+[0-9]+;", rf"\g<1> {connections};", text, flags=re.MULTILINE)


def prepare_site(agent: Agent) -> None:
    """The app's directories, and nginx serving the app's site instead of its default one."""
    config, system = agent.config, agent.system
    for directory in (config.layout.root, config.layout.releases, config.layout.acme_webroot):
        system.make_dirs(directory, mode=0o755)
    system.remove("/etc/nginx/sites-enabled/default")
    system.symlink(config.layout.nginx_site, config.layout.nginx_site_link)
    text = system.read_text(NGINX_CONF)
    if text is None:
        agent.fail(f"{NGINX_CONF} is missing: is nginx installed?")
    wanted = nginx_conf(text, config.nginx_worker_connections)
    if wanted != text:
        system.write_file(NGINX_CONF, wanted, mode=0o644)
    must(agent, "nginx", "-t")


def start_once_more_on_failure(agent: Agent, unit: str, *verb: str) -> None:
    """`systemctl VERB... UNIT` that, failing, says why (its journal) and is tried once more.

    One refused start must not leave the droplet serving nothing; a second failure stops the first boot."""
    if agent.systemctl(*verb, unit):
        return
    say(agent, f"WARNING: {unit} did not start; once more in {START_RETRY_SECONDS} s")
    agent.system.run(["journalctl", "-b", "-u", unit, "-n", "20", "--no-pager"], output="stderr")
    agent.system.sleep(START_RETRY_SECONDS)
    if not agent.systemctl(*verb, unit):
        agent.fail(f"{unit} did not start (journalctl -b -u {unit})")


def start_services(agent: Agent) -> None:
    """nginx restarted inside its sandbox drop-in (a reload would not enter it), the app's socket listening."""
    config = agent.config
    must(agent, "systemctl", "daemon-reload")
    start_once_more_on_failure(agent, "nginx.service", "restart")
    start_once_more_on_failure(agent, config.layout.socket_unit, "enable", "--now")
    must(agent, "systemctl", "enable", config.layout.service_unit)


def start_fail2ban(agent: Agent) -> None:
    """A hardening extra never fails the first boot (fail2ban 1.0.2 has crashed on Python 3.12): its
    configuration is checked first, a failure is said here, and every deploy reports it."""
    system = agent.system
    if not (system.run(["fail2ban-client", "--test"]).ok and agent.systemctl("restart", "fail2ban")):
        say(agent, "WARNING: fail2ban did not start (journalctl -u fail2ban)")


def must(agent: Agent, *argv: str) -> None:
    """A step of the first boot: its output in cloud-init's log, and a failure stops the first boot."""
    if not agent.system.run(list(argv), output="stderr").ok:
        agent.fail(f"`{' '.join(argv)}` failed")


def say(agent: Agent, message: str) -> None:
    agent.system.log(f"flask-droplet: {message}")


def restart_journald(agent: Agent) -> None:
    """The journal on disk, as the manifest's drop-in asks, from the first boot on."""
    must(agent, "systemctl", "restart", "systemd-journald")


#: The first boot's steps, in order.
STEPS = (
    mount_state_volume,
    restart_journald,
    enable_firewall,
    harden_sshd,
    apply_login_policy,
    apply_sysctls,
    prepare_site,
    start_services,
    start_fail2ban,
)


def first_boot(agent: Agent) -> int:
    try:
        for step in STEPS:
            step(agent)
    except Failed as failure:
        say(agent, f"first boot FAILED: {failure}")
        return 1
    return 0


def main() -> int:
    system = RealSystem()
    try:
        return first_boot(Agent(system, load()))
    finally:
        system.close()
