"""A browser's HTTP cache, as far as a deploy can trip it: what it reuses, revalidates or downloads.

RFC 9111 in the parts that matter here: a response with `max-age` is reused without a
request while it is fresh (`immutable` or not); `no-cache` (or no freshness at all) is
revalidated with its ETag, and a 304 reuses the stored body.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ASSET_LINK = re.compile(r'(?:href|src)="(/static/[^"]+)"')


@dataclass
class Stored:
    body: bytes
    etag: str | None
    fresh_until: float


@dataclass
class Browser:
    origin: str
    """The site's origin, e.g. https://10.213.7.2"""
    opener: Any
    """How requests go out: something with `open(request, timeout=...)`, such as `Rehearsal.open`."""
    cache: dict[str, Stored] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)
    revalidated: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def fetch(self, path: str) -> bytes:
        stored = self.cache.get(path)
        if stored is not None and time.monotonic() < stored.fresh_until:
            self.reused.append(path)
            return stored.body
        request = urllib.request.Request(self.origin + path)  # noqa: S310 - the site under test
        if stored is not None and stored.etag:
            request.add_header("If-None-Match", stored.etag)
        try:
            with self.opener(request, timeout=10) as response:
                body = response.read()
                headers = response.headers
        except urllib.error.HTTPError as err:
            if err.code != 304 or stored is None:
                raise
            self.revalidated.append(path)
            return stored.body
        self.downloaded.append(path)
        self.cache[path] = Stored(body, headers.get("ETag"), time.monotonic() + max_age(headers.get("Cache-Control")))
        return body

    def load(self, page: str) -> dict[str, bytes]:
        """The page and every static file it links, as the browser gets them: {path: body}."""
        html = self.fetch(page).decode()
        return {path: self.fetch(path) for path in dict.fromkeys(ASSET_LINK.findall(html))}

    def forget_what_happened(self) -> None:
        self.downloaded.clear()
        self.revalidated.clear()
        self.reused.clear()


def max_age(cache_control: str | None) -> float:
    directives = [d.strip().lower() for d in (cache_control or "").split(",")]
    if "no-cache" in directives or "no-store" in directives:
        return 0
    for directive in directives:
        if directive.startswith("max-age="):
            return float(directive.split("=", 1)[1])
    return 0
