"""Subscriptions and the search for the sessions a message goes to.

Ordinary subscriptions sit in the topic tree keyed by client id. A shared subscription
(`$share/group/filter`, MQTT 5.0 4.8.2) sits in the same tree as one :class:`SharedGroup`
keyed by ``("$share", group)``, which hands each message to one member in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from certmq.mqtt.topics import TopicTree, parse_shared_subscription


@dataclass(slots=True)
class SubscriptionEntry:
    """One subscription of one session, with its MQTT 5.0 options."""

    client_id: str
    topic_filter: str  # as subscribed, including a `$share/group/` prefix
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None
    # True when the client's rights do not cover every topic of the filter (the topic rules
    # changed since it subscribed): each message is then checked before it is delivered.
    filtered: bool = False

    def options(self) -> tuple[str, int, bool, bool, int, int | None]:
        """Every field but the client id, in order: what is kept of a subscription."""
        return (
            self.topic_filter,
            self.qos,
            self.no_local,
            self.retain_as_published,
            self.retain_handling,
            self.subscription_id,
        )


class SharedGroup:
    __slots__ = ("_cursor", "members", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, SubscriptionEntry] = {}
        self._cursor = 0

    def pick(self, is_online: Callable[[str], bool]) -> SubscriptionEntry | None:
        """The next member in turn, preferring members whose client is connected."""
        members = list(self.members.values())
        if not members:
            return None
        count = len(members)
        for offset in range(count):
            entry = members[(self._cursor + offset) % count]
            if is_online(entry.client_id):
                self._cursor = (self._cursor + offset + 1) % count
                return entry
        entry = members[self._cursor % count]
        self._cursor = (self._cursor + 1) % count
        return entry


class SubscriptionIndex:
    def __init__(self) -> None:
        self.tree: TopicTree[SubscriptionEntry | SharedGroup] = TopicTree()
        self._shared: dict[tuple[str, str], SharedGroup] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, entry: SubscriptionEntry) -> bool:
        """Add or replace a subscription; True when it is new."""
        group, topic_filter = parse_shared_subscription(entry.topic_filter)
        if group is None:
            new = self.tree.subscribe(topic_filter, entry.client_id, entry)
        else:
            shared = self._shared.get((group, topic_filter))
            if shared is None:
                shared = self._shared[group, topic_filter] = SharedGroup(group)
                self.tree.subscribe(topic_filter, ("$share", group), shared)
            new = entry.client_id not in shared.members
            shared.members[entry.client_id] = entry
        if new:
            self._count += 1
        return new

    def shared_group(self, group: str, topic_filter: str) -> SharedGroup | None:
        """The members of ``$share/{group}/{topic_filter}``, if it has any."""
        return self._shared.get((group, topic_filter))

    def remove(self, client_id: str, full_filter: str) -> bool:
        """Remove a subscription; True when it existed."""
        group, topic_filter = parse_shared_subscription(full_filter)
        if group is None:
            removed = self.tree.unsubscribe(topic_filter, client_id) is not None
        else:
            shared = self._shared.get((group, topic_filter))
            removed = shared is not None and shared.members.pop(client_id, None) is not None
            if shared is not None and not shared.members:
                del self._shared[group, topic_filter]
                self.tree.unsubscribe(topic_filter, ("$share", group))
        if removed:
            self._count -= 1
        return removed
