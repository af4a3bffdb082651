"""Rate limiting of the RPC API: a token bucket per AccessKey (403 ``SystemOverFlow``).

Each AccessKey may make ``burst`` calls at once, then ``rate`` calls per second. Only requests
whose signature verified are counted, so that nobody can use up another key's calls by sending
requests in its name, and there is one bucket per AccessKey of the instance at most.

:class:`RateLimiter` keeps the buckets of a single node in memory; the nodes of a cluster share
theirs in the registry (:class:`certmq.api.rpc.shared_guards.SharedRateLimiter`), so that an
AccessKey's calls count on every node alike.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from certmq.config import ConfigError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class CallBudget(Protocol):
    rate: float

    async def take(self, key: str) -> float:
        """Take one call from ``key``'s bucket: 0.0 when allowed, otherwise the seconds to wait
        until the next call would be."""
        ...


def check_rate_settings(rate: float, burst: int) -> None:
    """Raise ConfigError unless ``rate`` and ``burst`` make a bucket (``rate`` 0: no limit)."""
    if not math.isfinite(rate) or rate < 0:
        raise ConfigError(f"api.rate_limit must be 0 (no limit) or more, not {rate!r}")
    if rate > 0 and burst < 1:
        raise ConfigError(f"api.rate_burst must be 1 or more, not {burst!r}")


class RateLimiter:
    """Token buckets keyed by AccessKeyId. ``rate`` 0 turns limiting off."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        check_rate_settings(rate, burst)
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one call from ``key``'s bucket: 0.0 when allowed, otherwise the seconds to wait
        until the next call would be."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    async def take(self, key: str) -> float:
        return self.acquire(key)
