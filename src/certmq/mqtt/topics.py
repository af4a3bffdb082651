"""Topic names, topic filters and the subscription tree (MQTT 3.1.1 section 4.7, 5.0 section 4.7 and 4.8.2).

A topic name is what a PUBLISH is sent to (``sensors/kitchen/temperature``); a topic filter
is what a SUBSCRIBE asks for and may hold the wildcards ``+`` (exactly one level) and ``#``
(this level and every level below). Topics whose first character is ``$`` (``$SYS/...``)
are not matched by a wildcard in the first level, so ``#`` does not receive broker
statistics.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from certmq.mqtt.errors import MalformedPacket

V = TypeVar("V")

SHARED_SUBSCRIPTION_PREFIX = "$share/"


def validate_topic_name(topic: str) -> None:
    """Raise :class:`MalformedPacket` unless ``topic`` may be published to.

    A topic name is at least one character long and holds neither wildcard nor U+0000.
    (MQTT 5.0 lets a PUBLISH carry an empty topic name together with a Topic Alias; the
    codec handles that case before calling this.)
    """
    if not topic:
        raise MalformedPacket("topic name is empty; a topic name must be at least one character long")
    if "+" in topic or "#" in topic:
        raise MalformedPacket(
            f"topic name {topic!r} contains a wildcard (+ or #); wildcards are for topic filters"
        )
    if "\x00" in topic:
        raise MalformedPacket(f"topic name {topic!r} contains the null character U+0000")


def validate_topic_filter(topic_filter: str) -> None:
    """Raise :class:`MalformedPacket` unless ``topic_filter`` may be subscribed to.

    Checks the wildcard rules (``#`` alone in the last level, ``+`` alone in its level), the
    absence of U+0000, and for ``$share/{group}/{filter}`` the shared subscription syntax.
    """
    if topic_filter.startswith(SHARED_SUBSCRIPTION_PREFIX):
        # parse_shared_subscription validates the group and then the real filter.
        parse_shared_subscription(topic_filter)
        return
    _validate_plain_topic_filter(topic_filter)


def _validate_plain_topic_filter(topic_filter: str) -> None:
    if not topic_filter:
        raise MalformedPacket("topic filter is empty; a topic filter must be at least one character long")
    if "\x00" in topic_filter:
        raise MalformedPacket(f"topic filter {topic_filter!r} contains the null character U+0000")
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise MalformedPacket(
                f"topic filter {topic_filter!r}: '#' must be the whole last level (as in 'a/#' or '#')"
            )
        if "+" in level and level != "+":
            raise MalformedPacket(
                f"topic filter {topic_filter!r}: '+' must be a whole level (as in 'a/+/c'), not part of one"
            )


def parse_shared_subscription(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into ``(group, filter)``; ``(None, topic_filter)`` otherwise.

    Raises :class:`MalformedPacket` when a shared subscription is ill-formed: the group
    must be non-empty and free of ``/``, ``+`` and ``#``, and it must be followed by ``/``
    and a valid topic filter (MQTT 5.0 4.8.2). Only the real filter is validated when the
    topic filter is not shared, as for :func:`validate_topic_filter`.
    """
    if not topic_filter.startswith(SHARED_SUBSCRIPTION_PREFIX):
        _validate_plain_topic_filter(topic_filter)
        return None, topic_filter
    group, separator, real_filter = topic_filter[len(SHARED_SUBSCRIPTION_PREFIX) :].partition("/")
    if not separator:
        raise MalformedPacket(
            f"shared subscription {topic_filter!r} has no topic filter; write $share/<group>/<filter>"
        )
    if not group:
        raise MalformedPacket(f"shared subscription {topic_filter!r} has an empty group name")
    if "+" in group or "#" in group:
        raise MalformedPacket(f"shared subscription {topic_filter!r}: the group name may not contain + or #")
    if not real_filter:
        raise MalformedPacket(
            f"shared subscription {topic_filter!r} has an empty topic filter after the group"
        )
    _validate_plain_topic_filter(real_filter)
    return group, real_filter


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a PUBLISH to ``topic`` is delivered to a subscription on ``topic_filter``.

    Both are taken literally: pass the real filter of a shared subscription (see
    :func:`parse_shared_subscription`), not the ``$share/...`` form.
    """
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


# Topics whose matches a tree keeps (see TopicTree).
MATCH_CACHE = 8192


class _TopicNode(Generic[V]):
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _TopicNode[V]] = {}
        self.subscribers: dict[Hashable, V] = {}


class TopicTree(Generic[V]):
    """Subscriptions in a trie of topic levels.

    Each filter's node holds the subscribers of that filter in a dict keyed by whatever the
    caller chooses (a client id, a shared group...). :meth:`match` walks only the branches
    a topic can reach, so its cost depends on the depth of the topic and on the
    subscriptions that match, not on how many unrelated subscriptions exist.

    Filters are taken literally: subscribe a shared subscription under its real filter.

    What :meth:`match` found for a topic is kept until the next change of the tree, for up to
    MATCH_CACHE topics: a device publishes to the same few topics again and again.
    """

    __slots__ = ("_cache", "_count", "_root")

    def __init__(self) -> None:
        self._root: _TopicNode[V] = _TopicNode()
        self._count = 0
        self._cache: dict[str, list[dict[Hashable, V]]] = {}

    def __len__(self) -> int:
        """Number of (filter, key) entries."""
        return self._count

    def subscribe(self, topic_filter: str, key: Hashable, value: V) -> bool:
        """Store ``value`` for ``key`` on ``topic_filter``; True if the key was new there, False if replaced."""
        self._cache.clear()
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _TopicNode()
            node = child
        is_new = key not in node.subscribers
        node.subscribers[key] = value
        if is_new:
            self._count += 1
        return is_new

    def unsubscribe(self, topic_filter: str, key: Hashable) -> V | None:
        """Remove ``key`` from ``topic_filter`` and return its value (None if it was not there)."""
        self._cache.clear()
        levels = topic_filter.split("/")
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return None
            path.append(child)
        node = path[-1]
        if key not in node.subscribers:
            return None
        value = node.subscribers.pop(key)
        self._count -= 1
        # Prune the branch back up to the first node still in use, so that a tree whose
        # subscriptions come and go does not keep growing.
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.subscribers or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return value

    def match(self, topic: str) -> list[dict[Hashable, V]]:
        """The subscriber dicts of every filter that matches the topic name ``topic``.

        ``topic`` must be a valid topic name (no wildcards), as the codec guarantees for
        every PUBLISH it decodes.

        The list and the dicts are the tree's own (not copies): do not change them, and
        iterate them before changing the tree. Each matching filter contributes one non-empty dict.
        """
        cache = self._cache
        matched = cache.get(topic)
        if matched is None:
            if len(cache) >= MATCH_CACHE:
                cache.clear()
            matched = cache[topic] = self._match(topic)
        return matched

    def _match(self, topic: str) -> list[dict[Hashable, V]]:
        matched: list[dict[Hashable, V]] = []
        nodes = [self._root]
        # A first-level wildcard does not match a topic starting with '$' (MQTT 4.7.2).
        wildcards_allowed = not topic.startswith("$")
        for level in topic.split("/"):
            next_nodes: list[_TopicNode[V]] = []
            for node in nodes:
                children = node.children
                if not children:
                    continue
                if wildcards_allowed:
                    multi_level = children.get("#")
                    if multi_level is not None and multi_level.subscribers:
                        matched.append(multi_level.subscribers)
                    single_level = children.get("+")
                    if single_level is not None:
                        next_nodes.append(single_level)
                    exact = children.get(level)
                    if exact is not None:
                        next_nodes.append(exact)
                else:
                    exact = children.get(level)
                    if exact is not None:
                        next_nodes.append(exact)
            if not next_nodes:
                return matched
            nodes = next_nodes
            wildcards_allowed = True
        for node in nodes:
            if node.subscribers:
                matched.append(node.subscribers)
            # 'a/#' also matches 'a' itself.
            multi_level = node.children.get("#")
            if multi_level is not None and multi_level.subscribers:
                matched.append(multi_level.subscribers)
        return matched
