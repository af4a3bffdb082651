"""Retained messages (MQTT 3.3.1.3): one per topic, found by topic filter on SUBSCRIBE.

Kept in a trie of topic levels so that a SUBSCRIBE walks only the branches its filter can
match, however many retained topics there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from certmq.broker.messages import Message


class RetainedStore(Protocol):
    """Where retained messages live; the durable store implements the same interface."""

    def set(self, message: Message) -> None: ...
    def clear(self, topic: str) -> None: ...
    def matching(self, topic_filter: str) -> Iterator[Message]: ...
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

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Message]:
        """Every retained message, `$` topics included, in no particular order."""
        return self._all_below(self._root, skip_system=False)

    def set(self, message: Message) -> None:
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if node.message is None:
            self._count += 1
        node.message = message

    def clear(self, topic: str) -> None:
        path = [self._root]
        for level in topic.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if path[-1].message is None:
            return
        path[-1].message = None
        self._count -= 1
        levels = topic.split("/")
        # Prune the branch back up to the first node still in use.
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.message is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

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
