"""What this node's sessions want from the other nodes, and the NATS subscriptions that bring
it (certmq.cluster.router): per key (a topic filter, or a shared subscription's group and
filter), how many local subscriptions hold it, so that the NATS subscriptions of a key are made
for its first and ended with its last."""

from __future__ import annotations

from typing import Generic, TypeVar

from nats.aio.subscription import Subscription

K = TypeVar("K")


class Interest(Generic[K]):
    """Local subscriptions per key, and the NATS subscriptions made for each."""

    def __init__(self) -> None:
        self._counts: dict[K, int] = {}
        self._subscribed: dict[K, list[Subscription]] = {}

    def __len__(self) -> int:
        return len(self._subscribed)

    def add(self, key: K) -> bool:
        """One more local subscription of ``key``: whether it is the first."""
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        return count == 0

    def remove(self, key: K) -> list[Subscription]:
        """One local subscription of ``key`` fewer: the NATS subscriptions to end when it was
        the last."""
        count = self._counts.get(key, 0)
        if count > 1:
            self._counts[key] = count - 1
            return []
        self._counts.pop(key, None)
        return self._subscribed.pop(key, [])

    def needs_subscribing(self, key: K) -> bool:
        """Whether ``key`` is wanted and has no NATS subscriptions yet."""
        return key in self._counts and key not in self._subscribed

    def missing(self) -> list[K]:
        """The keys wanted without NATS subscriptions (after a reconnection, say)."""
        return [key for key in self._counts if key not in self._subscribed]

    def subscribed(self, key: K, subscriptions: list[Subscription]) -> bool:
        """Keep the NATS subscriptions just made for ``key``; False when it is no longer
        wanted (its last local subscription went meanwhile): the caller ends them."""
        if key not in self._counts:
            return False
        self._subscribed[key] = subscriptions
        return True
