"""Slowing down whoever guesses secrets over HTTP (docs/api.md, "Wrong secrets").

Every HTTP route that checks a secret (the console's login and the REST API's bearer token, both
the admin token; the RPC API's AccessKey signatures) asks the instance's one
:class:`SecretFailures` before it checks, and tells it the outcome. A source (a client's IP
address; for IPv6 its /64 network, which one host usually has whole) may fail
:data:`FREE_FAILURES` times in a row; then it must wait 1 s before its next attempt, 2 s after
the next failure, 4 s, ... up to :data:`MAX_DELAY`. While it waits its requests are answered
429 with Retry-After, their secret unchecked, so that waiting cannot be skipped by guessing
faster. A success forgets the source; so does :data:`FORGET_AFTER` without a failure. At most
:data:`MAX_SOURCES` sources are kept (those that failed least recently go first): memory stays
bounded whatever strangers send, and other sources are never slowed.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:
    from certmq.web.metrics import Metrics

log = logging.getLogger("certmq.api")

FREE_FAILURES = 5  # wrong secrets in a row answered without delay
MAX_DELAY = 300.0  # seconds: the longest wait between two attempts
FORGET_AFTER = 900.0  # seconds without a failure after which a source starts afresh
MAX_SOURCES = 10_000


class SecretRoute(StrEnum):
    """The HTTP routes that check a secret (a label of the metrics)."""

    CONSOLE_LOGIN = "console-login"
    REST_API = "rest-api"
    RPC_API = "rpc-api"


class TooManyFailures(Exception):
    """The source failed too often: it may try again in ``retry_after`` seconds."""

    def __init__(self, source: str, retry_after: int) -> None:
        super().__init__(
            f"too many wrong secrets from {source}: try again in {retry_after} s "
            f"(each further wrong secret doubles the wait)"
        )
        self.source = source
        self.retry_after = retry_after


def source_of(request: Request) -> str:
    """The source a request is counted against: its client address, IPv6 by /64 network."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Source:
    failures: int
    last_failure: float
    wait_until: float


class SecretFailures:
    """The failed attempts of each source, and the wait they earn it."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        free_failures: int = FREE_FAILURES,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.free_failures = free_failures
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_sources = max_sources
        self.clock = clock
        # Least recently failing first. Sync dependencies of FastAPI run in worker threads.
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, source: str, route: SecretRoute) -> None:
        """Raise :class:`TooManyFailures` while ``source`` must wait; before its secret is checked."""
        if not self._sources:
            return
        now = self.clock()
        with self._lock:
            entry = self._sources.get(source)
            if entry is None or entry.wait_until <= now:
                return
            wait = math.ceil(entry.wait_until - now)
        if self.metrics is not None:
            self.metrics.count_secret_throttled(route)
        raise TooManyFailures(source, wait)

    def failed(self, source: str, route: SecretRoute) -> None:
        """``source`` sent a wrong secret."""
        now = self.clock()
        with self._lock:
            self._forget_old(now)
            entry = self._sources.pop(source, None)
            if entry is None or now - entry.last_failure > self.forget_after:
                entry = _Source(0, now, now)
            entry.failures += 1
            entry.last_failure = now
            delay = 0.0
            if entry.failures >= self.free_failures:
                delay = min(self.max_delay, 2.0 ** min(entry.failures - self.free_failures, 32))
                entry.wait_until = now + delay
            self._sources[source] = entry
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        if self.metrics is not None:
            self.metrics.count_secret_failure(route)
        if delay:
            log.warning(
                "%s: %d wrong secrets in a row from %s; its next attempt is answered after %d s",
                route, entry.failures, source, math.ceil(delay),
            )  # fmt: skip

    def succeeded(self, source: str) -> None:
        """``source`` sent the right secret: its failures are forgotten."""
        if source in self._sources:
            with self._lock:
                self._sources.pop(source, None)

    def _forget_old(self, now: float) -> None:
        sources = self._sources
        while sources:
            oldest = next(iter(sources.values()))
            if now - oldest.last_failure <= self.forget_after:
                return
            sources.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sources)
