"""A steady HTTP load from the host, bounded in rate, count and time, that records every failure."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.latencies) + len(self.failures)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")

    def summary(self) -> str:
        return (
            f"{self.sent} requests, {len(self.failures)} failed, "
            f"p50 {self.percentile(50) * 1000:.0f} ms, p99 {self.percentile(99) * 1000:.0f} ms"
        )


class Load:
    """`with Load(url, rate=60): ...` sends `rate` GETs a second until the block ends (or `max_seconds`)."""

    def __init__(
        self,
        url: str,
        rate: float = 60,
        max_seconds: float = 180,
        timeout: float = 15,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.url, self.rate, self.max_seconds, self.timeout = url, rate, max_seconds, timeout
        self.context = context
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=64)
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)
        self.started = 0.0
        self.seconds = 0.0

    def _one(self) -> None:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout, context=self.context) as response:  # noqa: S310
                response.read()
                ok, what = 200 <= response.status < 300, f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as err:
            ok, what = False, repr(err)
        with self._lock:
            if ok:
                self.result.latencies.append(time.monotonic() - start)
            else:
                self.result.failures.append(f"{time.monotonic() - self.started:.2f}s {what}")

    def _schedule(self) -> None:
        interval = 1 / self.rate
        limit = int(self.rate * self.max_seconds)
        for n in range(limit):
            if self._stop.is_set():
                break
            delay = self.started + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._pool.submit(self._one)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._scheduler.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self._stop.set()
        self._scheduler.join()
        self._pool.shutdown(wait=True)
        self.seconds = time.monotonic() - self.started


class SlowClients:
    """`with SlowClients(address, port, count=300, seconds=15)`: connections that send their headers
    one line a second and never finish them. Bounded in count and time; all closed at the end."""

    def __init__(self, address: str, port: int, count: int = 300, seconds: float = 15) -> None:
        self.address, self.port, self.count, self.seconds = address, port, count, seconds
        self.opened = 0
        self.cut_off = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._sockets: list[socket.socket] = []

    def _drip(self) -> None:
        for _ in range(self.count):
            try:
                connection = socket.create_connection((self.address, self.port), timeout=5)
                connection.sendall(f"GET / HTTP/1.1\r\nHost: {self.address}\r\n".encode())
                self._sockets.append(connection)
                self.opened += 1
            except OSError:
                pass
        deadline = time.monotonic() + self.seconds
        line = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            line += 1
            for connection in list(self._sockets):
                try:
                    connection.sendall(f"X-Slow-{line}: x\r\n".encode())
                except OSError:
                    self._sockets.remove(connection)
                    connection.close()
                    self.cut_off += 1
            self._stop.wait(1)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.seconds + 60)
        for connection in self._sockets:
            connection.close()
