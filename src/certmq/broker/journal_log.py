"""The journal's segment files in ``DATA_DIR/journal``: appended to by one worker thread, so that
the event loop never waits on the disk, and read back in order at start.

The event loop hands the writer a batch of encoded records per turn (:meth:`LogWriter.write`);
the thread writes every batch waiting for it as one block with one ``write(2)`` (group commit), adds an
``fdatasync(2)`` when the broker promises to survive a power loss, and then reports the
sequence number of the last record written. A checkpoint moves the writer to a new segment;
once the checkpoint is saved, the segments it covers are deleted.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from certmq.broker.checkpoint_store import StateStoreError
from certmq.broker.journal import SEGMENT_HEADER, JournalFormatError, Record, RecordDecoder, encode_block

log = logging.getLogger("certmq.broker")

JOURNAL_DIRECTORY = "journal"
_SUFFIX = ".log"
_READ_SIZE = 4 * 1024 * 1024
# How long the writer waits before trying again a write that failed (a full disk, say).
_RETRY_SECONDS = 1.0


class JournalError(StateStoreError):
    """The journal cannot be read; the message says what to do."""


def prepare_directory(directory: Path) -> None:
    """Create the journal's directory if need be; raise JournalError unless the broker can
    write in it (the acknowledgements of durable messages would wait for ever)."""
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as error:
        raise JournalError(
            f"{directory}: cannot create the journal directory ({error.strerror}). The data "
            "directory must be writable by the broker; or set mqtt.persistence = false."
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise JournalError(
            f"{directory}: the broker cannot write in its journal directory. Give its user write "
            "access, or set mqtt.persistence = false."
        )


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:016d}{_SUFFIX}"


def segment_numbers(directory: Path) -> list[int]:
    """The numbers of the segment files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(
        int(path.name[: -len(_SUFFIX)])
        for path in directory.iterdir()
        if path.name.endswith(_SUFFIX) and path.name[: -len(_SUFFIX)].isdigit()
    )


def delete_segments(directory: Path, up_to: int) -> None:
    """Remove the segments numbered ``up_to`` or less (a checkpoint covers them)."""
    for number in segment_numbers(directory):
        if number <= up_to:
            segment_path(directory, number).unlink(missing_ok=True)


@dataclass
class LogContents:
    """What :func:`read_log` found."""

    last_segment: int = 0  # 0: none
    size: int = 0  # bytes of records kept
    records: int = 0
    last_write: float = 0.0  # wall-clock time the newest segment was last written
    discarded: int = 0  # bytes of a torn tail, cut off


def read_log(directory: Path, covered: int, apply: Callable[[list[Record]], None]) -> LogContents:
    """Pass every record of the segments after ``covered`` to ``apply``, oldest first, a few
    megabytes' worth at a time; delete the segments ``covered`` or older.

    A torn or damaged tail of the newest segment that holds records (what a process killed in
    the middle of a write leaves) is cut off. Damage anywhere else raises :class:`JournalError`:
    the records after it would be lost.
    """
    delete_segments(directory, covered)
    contents = LogContents()
    torn: tuple[Path, int, str] | None = None
    for number in segment_numbers(directory):
        path = segment_path(directory, number)
        contents.last_segment = number
        contents.last_write = max(contents.last_write, path.stat().st_mtime)
        decoder = RecordDecoder()
        with path.open("rb") as segment:
            header = segment.read(len(SEGMENT_HEADER))
            if len(header) < len(SEGMENT_HEADER):
                # Created, and the process died before its header was written: nothing in it.
                if torn is None:
                    torn = (path, 0, "it ends inside its header")
                continue
            if header != SEGMENT_HEADER:
                raise JournalError(
                    f"{path} is not a segment of a journal this certmq can read (its header is "
                    f"{header!r}). Move the journal directory away to start without it; the "
                    "messages and sessions recorded since the last checkpoint are then lost."
                )
            while chunk := segment.read(_READ_SIZE):
                try:
                    records = decoder.feed(chunk)
                except JournalFormatError as error:
                    raise JournalError(
                        f"{path}: {error}. Run the certmq that wrote it, or move the journal directory "
                        "away to start without the records since the last checkpoint."
                    ) from None
                if records:
                    if torn is not None:
                        damaged, offset, reason = torn
                        raise JournalError(
                            f"{damaged} is damaged at byte {offset} ({reason}), and later segments "
                            "hold records: starting would lose the records after the damage. Restore "
                            f"the journal directory from a backup, or cut the file there (truncate -s "
                            f"{offset} {damaged}) to start without them."
                        )
                    contents.records += len(records)
                    apply(records)
        contents.size += decoder.offset
        if decoder.damage is not None or decoder.pending:
            reason = decoder.damage or "its last record is cut short"
            torn = (path, len(SEGMENT_HEADER) + decoder.offset, reason)
    if torn is not None:
        path, valid, reason = torn
        discarded = path.stat().st_size - valid
        if discarded:
            log.warning(
                "journal %s: %s; the %d bytes after byte %d are cut off", path, reason, discarded, valid
            )
            contents.discarded = discarded
        if valid < len(SEGMENT_HEADER):
            path.unlink()
        else:
            os.truncate(path, valid)
    return contents


class LogWriter:
    """Appends batches of encoded records to segment files, from one worker thread.

    ``committed(sequence)`` is called from that thread after the records up to ``sequence``
    are written (and, with ``sync``, on the disk); the caller hands it on to its event loop.
    """

    def __init__(self, directory: Path, *, sync: bool, committed: Callable[[int], None]) -> None:
        self.directory = directory
        self.sync = sync
        self._committed = committed
        self._queue: queue.SimpleQueue[tuple[int, list[bytes], int] | None] = queue.SimpleQueue()
        self._segment = 0
        self._fd = -1
        self._thread = threading.Thread(target=self._run, name="certmq-journal", daemon=True)
        self._thread.start()

    def write(self, segment: int, records: list[bytes], sequence: int) -> None:
        """Append ``records`` to segment ``segment`` (a new number opens a new file); the last
        of them has sequence number ``sequence``. Returns at once."""
        self._queue.put((segment, records, sequence))

    def close(self) -> None:
        """Write what was handed over, then stop the thread (blocks)."""
        self._queue.put(None)
        self._thread.join()

    # -- the worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batches = [self._queue.get()]
            # Everything the loop handed over meanwhile goes out with this write: group commit.
            while True:
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in batches:
                stopping = True
                batches = batches[: batches.index(None)]
            if batches:
                self._write_batches(batches)  # type: ignore[arg-type]
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write_batches(self, batches: list[tuple[int, list[bytes], int]]) -> None:
        pending: list[bytes] = []
        for segment, records, _ in batches:
            if segment != self._segment:
                self._persist(pending)
                pending = []
                self._open(segment)
            pending.extend(records)
        self._persist(pending)
        self._committed(batches[-1][2])

    def _persist(self, records: list[bytes]) -> None:
        if not records:
            return
        data = memoryview(encode_block(records))
        while True:
            try:
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
                if self.sync:
                    os.fdatasync(self._fd)
                return
            except OSError as error:
                # Acknowledgements wait until the records are written: never send one early.
                log.error(
                    "writing the journal failed (%s); acknowledgements of durable messages wait, "
                    "trying again in %.0f s",
                    error,
                    _RETRY_SECONDS,
                )
                time.sleep(_RETRY_SECONDS)

    def _open(self, segment: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = segment_path(self.directory, segment)
        while True:
            try:
                fd = self._create(path)
                break
            except OSError as error:
                log.error("opening journal segment %s failed (%s); trying again", path, error)
                time.sleep(_RETRY_SECONDS)
        self._fd = fd
        self._segment = segment

    def _create(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, SEGMENT_HEADER)
            if self.sync:
                os.fdatasync(fd)
                # The new file's name must reach the disk too.
                directory = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except BaseException:
            os.close(fd)
            raise
        return fd
