"""What the droplets and their Load Balancer agree on: where the balancer checks each droplet, and how often.

The same figures configure DigitalOcean's Load Balancer (`components/fleet.py`),
the rehearsal's stand-in for it, and the deploy's waits while it takes a droplet
out of rotation and puts it back.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The ranges a DigitalOcean VPC takes its addresses from (RFC 1918): the balancer reaches droplets from one.
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


@dataclass(frozen=True)
class BalancerCheck:
    """The balancer's health check of each droplet; DigitalOcean's smallest interval, timeout and thresholds."""

    port: int = 8080
    """nginx's port for the balancer's check: the app's health path, or 503 while a deploy drains the droplet."""
    interval_seconds: int = 3
    timeout_seconds: int = 3
    unhealthy_threshold: int = 2
    """Failed checks in a row that take a droplet out of rotation."""
    healthy_threshold: int = 2
    """Passed checks in a row that put it back."""

    @property
    def out_of_rotation_seconds(self) -> int:
        """The longest a droplet that starts failing its check may still be sent requests."""
        return self.interval_seconds * (self.unhealthy_threshold + 1) + self.timeout_seconds

    @property
    def into_rotation_seconds(self) -> int:
        """The longest a droplet that passes its check again may wait for requests."""
        return self.interval_seconds * (self.healthy_threshold + 1) + self.timeout_seconds


BALANCER_CHECK = BalancerCheck()
