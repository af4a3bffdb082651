"""Where a broker keeps what must outlive it: one interface for every place it can be kept
(docs/configuration.md, "What survives a restart").

A broker's durable state is two things: **checkpoints**, snapshots of its retained messages and
persistent sessions, and the **journal**, the records of every change since the last
checkpoint, in order. The broker appends to the journal before it acknowledges anything
durable; it saves a checkpoint now and then, after which the journal it covers is deleted; at
start it loads the last checkpoint and applies the journal after it
(certmq.broker.state_keeper). :class:`DurableStorage` is what it needs of a place to keep them;
:class:`LocalStorage`, the embedded default, keeps the checkpoints in SQLite (or any
:class:`StateStore`) and the journal in segment files of the data directory
(certmq.broker.journal_log).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from certmq.broker.checkpoint_store import BrokerState, StateStore
from certmq.broker.journal import Record
from certmq.broker.journal_log import LogContents, LogWriter, delete_segments, prepare_directory, read_log


class JournalWriter(Protocol):
    """Appends the journal's records, a batch at a time, in order."""

    def write(self, segment: int, records: list[bytes], sequence: int) -> None:
        """Append ``records`` (encoded) to ``segment``; ``sequence`` counts the records
        appended so far, these included. Returns at once: the storage reports the batch
        written (durable) later, through the ``committed`` callback it was opened with."""
        ...

    def close(self) -> None:
        """Write what was handed over, then stop (blocks)."""
        ...


class DurableStorage(Protocol):
    """Checkpoints and the journal after them, for one broker (or one node of a cluster).

    Every call but :meth:`open_journal`'s writer blocks; the broker makes them from a worker
    thread, never from the event loop."""

    def load_checkpoint(self) -> BrokerState | None:
        """The last checkpoint saved; None when none was ever saved."""
        ...

    def save_checkpoint(self, state: BrokerState) -> None:
        """Replace the checkpoint with ``state``, all or nothing: a save that fails or is
        interrupted leaves the previous checkpoint in place."""
        ...

    def read_journal(self, covered: int, apply: Callable[[list[Record]], None]) -> LogContents:
        """Apply the journal's records after segment ``covered`` (the last checkpoint's), in
        order, a batch at a time; a batch cut short by a crash ends it."""
        ...

    def open_journal(self, committed: Callable[[int], None]) -> JournalWriter:
        """The writer of the journal from now on; ``committed(sequence)`` is called (from any
        thread) once the records up to ``sequence`` are durable."""
        ...

    def delete_journal(self, up_to: int) -> None:
        """Delete the journal's segments up to ``up_to``, which a saved checkpoint covers."""
        ...

    def close(self) -> None: ...


class LocalStorage:
    """The embedded default: checkpoints in ``checkpoints`` (SQLite in the data directory), the
    journal in segment files of ``journal_directory``, written by a thread of its own.

    ``sync``: every commit of the journal waits for ``fdatasync(2)`` (``durability =
    "power-loss"``); otherwise a record counts as written once the kernel has it."""

    def __init__(self, checkpoints: StateStore, journal_directory: Path, *, sync: bool = False) -> None:
        self.checkpoints = checkpoints
        self.journal_directory = journal_directory
        self.sync = sync

    def load_checkpoint(self) -> BrokerState | None:
        return self.checkpoints.load()

    def save_checkpoint(self, state: BrokerState) -> None:
        self.checkpoints.save(state)

    def read_journal(self, covered: int, apply: Callable[[list[Record]], None]) -> LogContents:
        prepare_directory(self.journal_directory)
        return read_log(self.journal_directory, covered, apply)

    def open_journal(self, committed: Callable[[int], None]) -> JournalWriter:
        return LogWriter(self.journal_directory, sync=self.sync, committed=committed)

    def delete_journal(self, up_to: int) -> None:
        delete_segments(self.journal_directory, up_to)

    def close(self) -> None:
        self.checkpoints.close()
