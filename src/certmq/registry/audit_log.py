"""The two audit logs, of authentication decisions and of the calls of the RPC API: one
:class:`AuditLog` type, used twice (:data:`DECISION_LOG`, :data:`OPERATIONS_LOG`).

Recording is cheap and synchronous, for the hot paths (a CONNECT, an API call): the entry is
queued in memory, bounded (:mod:`certmq.registry.pending`), and written within about half a
second, in a batch, by a background task. The refusals of strangers are folded in memory before
anything is written (:mod:`certmq.registry.folding`). A log is searched with a
:class:`~certmq.registry.log_query.LogQuery` and pruned by rows and age (docs/registry.md,
"Retention and folding").
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from certmq.registry.folding import DECISIONS, OPERATIONS, FoldingRule, RefusalFolding
from certmq.registry.log_query import DecisionQuery, LogQuery, OperationQuery
from certmq.registry.log_rows import decision_row, operation_row
from certmq.registry.log_store import LogTable
from certmq.registry.pending import PendingRows, measured_decision, measured_operation
from certmq.registry.records import DecisionEntry, DecisionRecord, OperationEntry, OperationRecord
from certmq.registry.worker import DatabaseWorker

Entry = TypeVar("Entry", DecisionEntry, OperationEntry)
Record = TypeVar("Record")
Query = TypeVar("Query", bound=LogQuery)


@dataclass(frozen=True, slots=True)
class LogKind(Generic[Entry, Record, Query]):
    """What tells one log from the other."""

    name: str  # "decision log", for the warnings
    items: str  # "decisions", for the warnings
    known: Callable[[Entry], bool]  # whether an entry's peer proved an identity: never folded
    measure: Callable[[Entry], tuple[Entry, int]]  # an entry bounded, and its bytes estimated
    folding: FoldingRule[Entry]
    row: Callable[[Entry], dict[str, Any]]  # an entry's columns
    query: type[Query]  # what searches it


DECISION_LOG: LogKind[DecisionEntry, DecisionRecord, DecisionQuery] = LogKind(
    "decision log",
    "decisions",
    operator.attrgetter("identity_known"),
    measured_decision,
    DECISIONS,
    decision_row,
    DecisionQuery,
)
OPERATIONS_LOG: LogKind[OperationEntry, OperationRecord, OperationQuery] = LogKind(
    "operations log",
    "API operations",
    operator.attrgetter("authenticated"),
    measured_operation,
    OPERATIONS,
    operation_row,
    OperationQuery,
)


class AuditLog(Generic[Entry, Record, Query]):
    """One log: what waits in memory to be written, the open fold windows, and its table.

    ``wakeup`` is set when ``flush_rows`` entries wait, for the task that writes them. At most
    ``max_rows`` rows of at most ``max_age`` are kept."""

    def __init__(
        self,
        kind: LogKind[Entry, Record, Query],
        table: LogTable[Record, Query],
        worker: DatabaseWorker,
        *,
        wakeup: asyncio.Event,
        flush_rows: int,
        max_rows: int,
        max_age: datetime.timedelta,
        fold_window: datetime.timedelta,
        pending_max_rows: int,
        pending_max_bytes: int,
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self.kind: LogKind[Entry, Record, Query] = kind
        self._known: Callable[[Entry], bool] = kind.known
        self._table = table
        self._worker = worker
        self._wakeup = wakeup
        self.flush_rows = flush_rows
        self.max_rows = max_rows
        self.max_age = max_age
        self._clock = clock
        self._pending: PendingRows[Entry] = PendingRows(
            kind.name, kind.items, kind.measure, max_rows=pending_max_rows, max_bytes=pending_max_bytes
        )
        self._folding: RefusalFolding[Entry] = RefusalFolding(kind.folding, fold_window)

    def record(self, entry: Entry) -> None:
        """Queue ``entry`` to be written. A refusal of a stranger is folded with the others of
        its source and kind, in memory."""
        pending = self._pending
        if self._known(entry):
            pending.append(entry)
            if len(pending) >= self.flush_rows:
                self._wakeup.set()
        else:
            self._queue(self._folding.add(entry))

    def _queue(self, entries: Iterable[Entry]) -> None:
        pending = self._pending
        for entry in entries:
            pending.append(entry)
        if len(pending) >= self.flush_rows:
            self._wakeup.set()

    def close_fold_windows(self, *, every: bool = False) -> None:
        """Queue the rows of the fold windows that have closed by now (all of them with ``every``)."""
        folding = self._folding
        if folding.open_windows:
            self._queue(folding.close_all() if every else folding.close_expired(self._clock()))

    async def flush(self, *, close_all_windows: bool = False) -> None:
        """Write every queued entry now, with the rows of the fold windows that have closed (all
        of them with ``close_all_windows``), and wait for the writes already under way."""
        self.close_fold_windows(every=close_all_windows)
        batch = self._pending.take()
        row = self.kind.row

        def write() -> None:
            self._table.append([row(entry) for entry in batch])

        try:
            await self._worker.run(write)
        except Exception:
            # Put them back, in order, so that the next flush tries again.
            self._pending.put_back(batch)
            raise

    def prune(self, now: datetime.datetime) -> int:
        """On the database thread: delete the rows beyond the bounds; return how many went."""
        return self._table.prune(max_rows=self.max_rows, older_than=now - self.max_age)

    async def search(self, query: Query | None = None) -> list[Record]:
        """The recorded rows ``query`` asks for (by default the newest 100), newest first. Entries
        still queued in memory are not included: :meth:`flush` first to see them."""
        asked = self.kind.query() if query is None else query
        return await self._worker.run(functools.partial(self._table.search, asked))

    @property
    def folded(self) -> dict[str, int]:
        """Refusals of strangers counted into folded rows instead of written one by one, by the
        label the folding rule gives them (a reason, an error code)."""
        return dict(self._folding.folded)

    @property
    def open_fold_windows(self) -> int:
        return self._folding.open_windows

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """What the queued entries take in memory, estimated."""
        return self._pending.bytes

    @property
    def dropped(self) -> int:
        return self._pending.dropped
