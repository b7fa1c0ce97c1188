"""The local rehearsal: the droplet's stand-in, booted with systemd-nspawn and deployed over SSH."""
