"""`Monitoring`: DigitalOcean's alerts on the droplets' metrics and an uptime check on the site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_digitalocean as digitalocean

from core.settings import Settings

#: Where DigitalOcean's uptime checks probe from, as `UptimeCheck.regions` names them.
UPTIME_REGIONS = ("us_east", "us_west", "eu_west", "se_asia")
#: The two probe regions nearest each droplet region (by its letters: nyc3 -> nyc). Two, so the
#: check's results per region tell trouble on one probe's network from the site being down; the
#: nearest, so the latency measured is the site's and not the distance's.
NEAREST_UPTIME_REGIONS = {
    "nyc": ("us_east", "us_west"),
    "tor": ("us_east", "us_west"),
    "sfo": ("us_west", "us_east"),
    "lon": ("eu_west", "us_east"),
    "ams": ("eu_west", "us_east"),
    "fra": ("eu_west", "us_east"),
    "sgp": ("se_asia", "eu_west"),
    "blr": ("se_asia", "eu_west"),
    "syd": ("se_asia", "us_west"),
    "atl": ("us_east", "us_west"),
    "ric": ("us_east", "us_west"),
}
#: How long the site may fail to answer before the `down` alert, the shortest DigitalOcean allows: a
#: deploy never takes the site down (systemd holds its socket through a restart), so this is an outage.
DOWN_PERIOD = "2m"
#: How long the certificate must stay under its threshold before the `ssl_expiry` alert.
CERTIFICATE_PERIOD = "1h"

#: (name suffix, DigitalOcean's metric, what the description calls it): the droplet metrics that alert.
DROPLET_METRICS = (
    ("cpu", "v1/insights/droplet/cpu", "CPU"),
    ("memory", "v1/insights/droplet/memory_utilization_percent", "memory"),
    ("disk", "v1/insights/droplet/disk_utilization_percent", "disk"),
)


def uptime_regions(droplet_region: str) -> tuple[str, ...]:
    """The probe regions for a droplet region; all of them for a region this table does not know."""
    return NEAREST_UPTIME_REGIONS.get(droplet_region.rstrip("0123456789"), UPTIME_REGIONS)


@dataclass(frozen=True)
class MonitoringArgs:
    settings: Settings
    """Validated stack settings: the addresses, thresholds and window."""
    droplet_ids: Sequence[pulumi.Input[str]]
    """The droplets whose metrics alert: every one of the stack's, the policy applies to each."""
    url: pulumi.Input[str]
    """The site's URL as the deploy found it (https:// once it has its certificate): what the uptime check requests."""
    stack_tag: str
    """The droplet's PROJECT:STACK tag: names the stack in every check and alert, so mail from two stacks differs."""


@dataclass(frozen=True)
class SiteAlert:
    """One of the uptime check's alerts: when it fires, and how it is named in the mail."""

    suffix: str
    said: str
    type: str
    period: str
    threshold: int | None = None
    comparison: str | None = None


class Monitoring(pulumi.ComponentResource):
    """Email alerts on each droplet's CPU, memory and disk, and an uptime check on the site.

    DigitalOcean's metrics agent (each droplet's `monitoring`) feeds the droplet alerts, one
    policy per metric applied to every droplet of the stack;
    the uptime check requests the site's URL from the probe regions nearest the droplet
    and alerts when it is down, slow, or (over HTTPS) its certificate is close to expiry.
    Without `alert_emails` nothing is created.
    """

    alerts: pulumi.Output[dict[str, Any]] | None
    """What is watched, at which thresholds, and who hears of it; None without `alert_emails`."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flaskdroplet:ops:Monitoring", name, None, opts)
        settings = args.settings
        self.alerts = None
        if not settings.alerts.emails:
            self.register_outputs({"alerts": None})
            return
        self._name, self._args = name, args
        droplet = self._droplet_alerts()
        url = pulumi.Output.from_input(args.url)
        site = self._site_alerts(self._uptime_check(url))
        emails = list(settings.alerts.emails)
        self.alerts = url.apply(lambda target: {"emails": emails, "droplet": droplet, "site": {"url": target, **site}})
        self.register_outputs({"alerts": self.alerts})

    def _droplet_alerts(self) -> dict[str, Any]:
        """One policy per metric over every droplet of the stack; what they watch, as the `alerts` output says it."""
        settings, args = self._args.settings, self._args
        thresholds = {
            "cpu": settings.alerts.cpu_percent,
            "memory": settings.alerts.memory_percent,
            "disk": settings.alerts.disk_percent,
        }
        for metric, metric_type, measured in DROPLET_METRICS:
            digitalocean.MonitorAlert(
                f"{self._name}-{metric}",
                type=metric_type,
                compare="GreaterThan",
                value=thresholds[metric],
                window=settings.alerts.window,
                # The droplets by id, not by tag: the project's tag is on every stack's droplet.
                entities=list(args.droplet_ids),
                alerts=digitalocean.MonitorAlertAlertsArgs(emails=list(settings.alerts.emails)),
                enabled=True,
                description=(f"{args.stack_tag}: {measured} above {thresholds[metric]}% for {settings.alerts.window}"),
                opts=pulumi.ResourceOptions(parent=self),
            )
        droplet: dict[str, Any] = {f"{metric}_percent": value for metric, value in thresholds.items()}
        droplet["window"] = settings.alerts.window
        return droplet

    def _uptime_check(self, url: pulumi.Output[str]) -> digitalocean.UptimeCheck:
        """The site's URL requested from the probe regions nearest the droplet."""
        return digitalocean.UptimeCheck(
            f"{self._name}-uptime",
            name=f"{self._args.stack_tag}: the site",
            target=url,
            # A site with no certificate yet answers on http://; its check follows the URL there and back.
            type=url.apply(lambda target: "https" if target.startswith("https://") else "http"),
            regions=list(uptime_regions(self._args.settings.server.region)),
            enabled=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _site_alerts(self, check: digitalocean.UptimeCheck) -> dict[str, Any]:
        """The uptime check's alerts: down, slow, and (over HTTPS) a certificate close to expiry."""
        settings = self._args.settings
        site_alerts = [
            SiteAlert("down", "the site is down", "down", DOWN_PERIOD),
            SiteAlert(
                "latency",
                "the site is slow",
                "latency",
                settings.alerts.window,
                settings.alerts.latency_ms,
                "greater_than",
            ),
        ]
        site: dict[str, Any] = {
            "regions": list(uptime_regions(settings.server.region)),
            "down_for": DOWN_PERIOD,
            "latency_ms": settings.alerts.latency_ms,
        }
        if settings.app.site.https:
            # Fewer days left than the threshold; days left change slowly: the longest period offered.
            site_alerts.append(
                SiteAlert(
                    "certificate",
                    "the certificate expires soon",
                    "ssl_expiry",
                    CERTIFICATE_PERIOD,
                    settings.alerts.certificate_days,
                    "less_than",
                )
            )
            site["certificate_days"] = settings.alerts.certificate_days
        for alert in site_alerts:
            digitalocean.UptimeAlert(
                f"{self._name}-{alert.suffix}",
                check_id=check.id,
                name=f"{self._args.stack_tag}: {alert.said}",
                type=alert.type,
                threshold=alert.threshold,
                comparison=alert.comparison,
                # DigitalOcean requires a period on every uptime alert, and answers 500 without one
                # (digitalocean/openapi#828); the provider sends "" when it is unset
                # (`resourceDigitalOceanUptimeAlertCreate`).
                period=alert.period,
                notifications=[digitalocean.UptimeAlertNotificationArgs(emails=list(settings.alerts.emails))],
                opts=pulumi.ResourceOptions(parent=self),
            )
        return site
