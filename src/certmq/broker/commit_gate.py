"""What a reply that acknowledges something waits for: the work it acknowledges, made safe.

A PUBACK, a PUBREC, a SUBACK or a CONNACK may acknowledge work that is not done when the packet
is handled: records of the journal not yet written (certmq.broker.recorder), a message not yet
stored by the cluster's message stream, a subscription not yet known to the other nodes
(certmq.cluster). Each such kind of work is a :class:`CommitSource`, which counts what was
appended and what is committed, in order. The :class:`CommitGate` joins the sources of a
broker: a connection takes :meth:`CommitGate.mark` after a packet whose handling appended
work, and holds the replies it queued until :meth:`CommitGate.passed` says every source has
committed up to that mark (certmq.broker.connection).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Protocol

Mark = tuple[int, ...]


class CommitSource(Protocol):
    """Work appended in order and committed in order."""

    # How many pieces of work were appended, and how many of the first are committed.
    appended: int
    committed: int

    def when_committed(self, callback: Callable[[], None], count: int) -> None:
        """Call ``callback`` on the loop once ``committed`` reaches ``count`` (once)."""
        ...


class CommitGate:
    """The sources whose work replies wait for."""

    __slots__ = ("sources",)

    def __init__(self, sources: Sequence[CommitSource]) -> None:
        self.sources = tuple(sources)

    @property
    def appended(self) -> int:
        """Changes whenever any source appends work (a packet's handling is compared before and after)."""
        total = 0
        for source in self.sources:
            total += source.appended
        return total

    def mark(self) -> Mark:
        """Where every source stands now."""
        return tuple(source.appended for source in self.sources)

    def passed(self, mark: Mark) -> bool:
        """Whether every source has committed the work appended up to ``mark``."""
        return all(source.committed >= appended for source, appended in zip(self.sources, mark, strict=True))

    def when_committed(self, callback: Callable[[], None], mark: Mark) -> None:
        """Call ``callback`` once a source that had not reached ``mark`` commits up to its part
        of it (it checks :meth:`passed` again, and waits again for the next source if need be)."""
        for source, appended in zip(self.sources, mark, strict=True):
            if source.committed < appended:
                source.when_committed(callback, appended)
                return
        callback()


class Commits:
    """Counts of appended and committed work, and the callbacks waiting for a count: each is
    woken once, when the count it waits for is committed, not at every commit (a hundred
    publishers waiting on one stream's answers would otherwise each be woken by every answer)."""

    def __init__(self) -> None:
        self.appended = 0
        self.committed = 0
        # (count, order, callback), the smallest count first.
        self._waiting: list[tuple[int, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def when_committed(self, callback: Callable[[], None], count: int) -> None:
        if count <= self.committed:
            callback()
            return
        heapq.heappush(self._waiting, (count, next(self._order), callback))

    def _committed_to(self, committed: int) -> None:
        """The first ``committed`` pieces are committed: wake whoever waits for no more."""
        if committed > self.committed:
            self.committed = committed
        waiting = self._waiting
        while waiting and waiting[0][0] <= self.committed:
            heapq.heappop(waiting)[2]()


class OutOfOrderCommits(Commits):
    """A :class:`CommitSource` whose pieces of work complete in any order (requests answered by
    another server): ``committed`` is the length of the completed prefix."""

    def __init__(self) -> None:
        super().__init__()
        self._completed: set[int] = set()

    def append(self) -> int:
        """A new piece of work; its number, for :meth:`complete`."""
        self.appended += 1
        return self.appended

    def complete(self, number: int) -> None:
        """Piece ``number`` is done (or abandoned: its reply is not sent, see the caller)."""
        if number <= self.committed:
            return
        completed = self._completed
        completed.add(number)
        committed = self.committed
        while committed + 1 in completed:
            committed += 1
            completed.discard(committed)
        if committed != self.committed:
            self._committed_to(committed)
