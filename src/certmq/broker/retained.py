"""Retained messages (MQTT 3.3.1.3): one per topic, found by topic filter on SUBSCRIBE.

Kept in a trie of topic levels so that a SUBSCRIBE walks only the branches its filter can
match, however many retained topics there are. The store counts what it holds in bytes, the
trie's nodes included, so that the retained limits bound its memory whatever the topics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from certmq.broker.messages import Message, message_size

# What one node of the trie costs beside its level's name: the node, its dict of children and
# its entry in its parent's (measured with tracemalloc on CPython 3.11: 240 bytes).
NODE_OVERHEAD = 240


class RetainedStore(Protocol):
    """Where retained messages live; the durable store implements the same interface."""

    def set(self, message: Message) -> None: ...
    def clear(self, topic: str) -> None: ...
    def matching(self, topic_filter: str) -> Iterator[Message]: ...
    def growth(self, message: Message) -> tuple[int, bool]: ...
    @property
    def size(self) -> int: ...
    def __iter__(self) -> Iterator[Message]: ...
    def __len__(self) -> int: ...


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class MemoryRetainedStore:
    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0
        self._size = 0

    def __len__(self) -> int:
        return self._count

    @property
    def size(self) -> int:
        """Bytes held: each message's size (``message_size``) and each trie node's."""
        return self._size

    def growth(self, message: Message) -> tuple[int, bool]:
        """What storing ``message`` would add: (bytes, negative when it replaces a larger
        message; True when its topic holds no message yet)."""
        levels = message.topic.split("/")
        node = self._root
        for depth, level in enumerate(levels):
            child = node.children.get(level)
            if child is None:
                return message_size(message) + sum(map(_node_size, levels[depth:])), True
            node = child
        if node.message is None:
            return message_size(message), True
        return message_size(message) - message_size(node.message), False

    def __iter__(self) -> Iterator[Message]:
        """Every retained message, `$` topics included, in no particular order."""
        return self._all_below(self._root, skip_system=False)

    def set(self, message: Message) -> None:
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
                self._size += _node_size(level)
            node = child
        if node.message is None:
            self._count += 1
        else:
            self._size -= message_size(node.message)
        node.message = message
        self._size += message_size(message)

    def clear(self, topic: str) -> None:
        path = [self._root]
        for level in topic.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if path[-1].message is None:
            return
        self._size -= message_size(path[-1].message)
        path[-1].message = None
        self._count -= 1
        levels = topic.split("/")
        # Prune the branch back up to the first node still in use.
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.message is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
            self._size -= _node_size(levels[depth - 1])

    def matching(self, topic_filter: str) -> Iterator[Message]:
        yield from self._walk(self._root, topic_filter.split("/"), 0)

    def _walk(self, node: _Node, levels: list[str], index: int) -> Iterator[Message]:
        if index == len(levels):
            if node.message is not None:
                yield node.message
            return
        level = levels[index]
        if level == "#":
            # `a/#` also matches `a` itself.
            if node.message is not None and index > 0:
                yield node.message
            yield from self._all_below(node, skip_system=index == 0)
        elif level == "+":
            for name, child in node.children.items():
                if index == 0 and name.startswith("$"):
                    continue
                yield from self._walk(child, levels, index + 1)
        else:
            named = node.children.get(level)
            if named is not None:
                yield from self._walk(named, levels, index + 1)

    def _all_below(self, node: _Node, skip_system: bool) -> Iterator[Message]:
        stack = [child for name, child in node.children.items() if not (skip_system and name.startswith("$"))]
        while stack:
            current = stack.pop()
            if current.message is not None:
                yield current.message
            stack.extend(current.children.values())


def _node_size(level: str) -> int:
    return NODE_OVERHEAD + len(level)
