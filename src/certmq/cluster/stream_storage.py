"""A node's checkpoints and journal kept in NATS JetStream, where every node of the cluster can
read them (certmq.broker.durable_storage, docs/cluster.md).

- **The journal** is the stream ``<PREFIX>_JOURNAL``, one subject per node
  (``<prefix>.journal.<node>``), on disk on every replica. What the broker hands over in one
  turn of its event loop goes out as the bytes of one block of the journal's format
  (certmq.broker.journal), cut into NATS messages of at most :data:`CHUNK` bytes, each saying the
  segment it belongs to. The batch counts as written once the stream has acknowledged its last
  message: its replicas have it. Batches that wait meanwhile go out together (group commit).
- **The checkpoints** are objects of the object store ``<PREFIX>_CHECKPOINTS``, one per node: the
  SQLite file :class:`~certmq.broker.checkpoint_store.SqliteStateStore` writes, whole, so that a
  checkpoint has one format wherever it is kept. The object store replaces an object all at
  once: a reader gets the old checkpoint or the new one.

Reading a journal back feeds each segment's messages, in order, to one
:class:`~certmq.broker.journal.RecordDecoder`: a block cut short at the end of a segment was
never acknowledged (the node stopped while writing it) and is left out; a block whose checksum
does not match stops the start, as in a journal on disk.

The broker calls the storage from worker threads (its calls block); this one does its work on
the event loop of the node's NATS connection and waits for it there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DiscardPolicy, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import ObjectNotFoundError, ServiceUnavailableError
from nats.js.object_store import ObjectStore

from certmq.broker.checkpoint_store import STATE_FILE_NAME, BrokerState, SqliteStateStore
from certmq.broker.journal import JournalFormatError, Record, RecordDecoder, encode_block
from certmq.broker.journal_log import JournalError, LogContents
from certmq.cluster.nats_link import failure_text
from certmq.cluster.subjects import level_token

log = logging.getLogger("certmq.cluster")

_T = TypeVar("_T")

# The bytes of the journal one NATS message carries at most: within the 1 MiB a NATS server
# takes by default, with room for the headers.
CHUNK = 512 * 1024
# The header of a journal message that names its segment.
SEGMENT = "Certmq-Segment"
# How long a call of the broker waits for NATS before it fails.
CALL_TIMEOUT = 30.0
# How long the stream may take to acknowledge a message of the journal before it is sent again
# (with the same message id: the stream keeps one copy).
PUBLISH_TIMEOUT = 5.0
# Between two questions to JetStream that went unanswered.
RETRY_PAUSE = 0.25
# A journal that cannot be written says so once, then every this many attempts (a minute).
FAILURES_PER_WARNING = 240


def journal_stream_config(name: str, prefix: str, replicas: int) -> StreamConfig:
    """The stream of the journals of every node under ``prefix``: kept until deleted."""
    return StreamConfig(
        name=name,
        subjects=[f"{prefix}.journal.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.NEW,
        num_replicas=replicas,
        duplicate_window=120.0,
    )


class StreamStorage:
    """The checkpoints and journal of node ``node`` in JetStream (see the module's text).

    :meth:`set_up` (on the loop) makes the stream and the object store if they are not there;
    the rest is :class:`~certmq.broker.durable_storage.DurableStorage`."""

    def __init__(self, client: Client, *, prefix: str, node: str, replicas: int) -> None:
        self.client = client
        self.node = node
        self.replicas = replicas
        stem = prefix.replace(".", "_").upper()
        self.stream = f"{stem}_JOURNAL"
        self.bucket = f"{stem}_CHECKPOINTS"
        self.subject = f"{prefix}.journal.{level_token(node)}"
        self._prefix = prefix
        self._loop = asyncio.get_running_loop()
        self._store: ObjectStore | None = None
        # The highest stream sequence of each segment written or read: a checkpoint that covers
        # a segment deletes the messages up to there, never one of a later segment (the writer
        # sends them in order, so theirs are higher), even one still on its way.
        self._segment_ends: dict[int, int] = {}

    async def set_up(self) -> None:
        jetstream = self.client.jetstream()
        config = journal_stream_config(self.stream, self._prefix, self.replicas)
        try:
            await jetstream.add_stream(config)
        except Exception:
            await jetstream.update_stream(config)
        try:
            self._store = await jetstream.object_store(self.bucket)
        except Exception:
            self._store = await jetstream.create_object_store(
                self.bucket,
                ObjectStoreConfig(
                    description="the checkpoints of the nodes of a certmq cluster",
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                ),
            )

    def _call(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``work()`` on the NATS connection's loop and wait for it (from a worker thread)."""
        return asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._retrying(work), CALL_TIMEOUT), self._loop
        ).result()

    async def _retrying(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """``work()``, again while JetStream does not answer: a stream just made, or whose
        NATS server was lost, has no leader until its replicas elect one."""
        while True:
            try:
                return await work()
            except (NatsTimeoutError, NoRespondersError, ServiceUnavailableError) as error:
                log.debug("JetStream did not answer (%s); asking again", failure_text(error))
                await asyncio.sleep(RETRY_PAUSE)

    # -- checkpoints -----------------------------------------------------------------------

    def load_checkpoint(self) -> BrokerState | None:
        data = self._call(self._get_checkpoint)
        if data is None:
            return None
        with tempfile.TemporaryDirectory(prefix="certmq-checkpoint-") as directory:
            path = Path(directory) / STATE_FILE_NAME
            path.write_bytes(data)
            store = SqliteStateStore(path)
            try:
                return store.load()
            finally:
                store.close()

    async def _get_checkpoint(self) -> bytes | None:
        assert self._store is not None, "set_up() first"
        try:
            result = await self._store.get(level_token(self.node))
        except ObjectNotFoundError:
            return None
        return result.data

    def save_checkpoint(self, state: BrokerState) -> None:
        with tempfile.TemporaryDirectory(prefix="certmq-checkpoint-") as directory:
            path = Path(directory) / STATE_FILE_NAME
            store = SqliteStateStore(path)
            try:
                store.save(state)
            finally:
                store.close()
            data = path.read_bytes()
        self._call(functools.partial(self._put_checkpoint, data))

    async def _put_checkpoint(self, data: bytes) -> None:
        assert self._store is not None, "set_up() first"
        await self._store.put(level_token(self.node), data)

    # -- the journal -----------------------------------------------------------------------

    def read_journal(self, covered: int, apply: Callable[[list[Record]], None]) -> LogContents:
        return self._call(functools.partial(self._read_journal, covered, apply))

    async def _read_journal(self, covered: int, apply: Callable[[list[Record]], None]) -> LogContents:
        contents = LogContents()
        jetstream = self.client.jetstream()
        info = await jetstream.stream_info(self.stream, subjects_filter=self.subject)
        held = (info.state.subjects or {}).get(self.subject, 0)
        if not held:
            return contents
        subscription = await jetstream.subscribe(self.subject, ordered_consumer=True, stream=self.stream)
        try:
            decoder: RecordDecoder | None = None
            segment = 0
            seen = 0
            while seen < held:
                try:
                    msg = await subscription.next_msg(timeout=CALL_TIMEOUT)
                except NatsTimeoutError:
                    # Not asked again: what was read is applied already.
                    raise JournalError(
                        f"the stream {self.stream} stopped sending the journal of node {self.node} "
                        f"after {seen} of its {held} messages"
                    ) from None
                seen += 1
                number = int((msg.headers or {}).get(SEGMENT, "0"))
                self.note_written(number, msg.metadata.sequence.stream)
                if number <= covered:
                    continue  # deleted at the next checkpoint
                if number != segment:
                    self._end_segment(segment, decoder, contents)
                    segment, decoder = number, RecordDecoder()
                    contents.last_segment = number
                contents.last_write = max(contents.last_write, msg.metadata.timestamp.timestamp())
                assert decoder is not None
                try:
                    records = decoder.feed(msg.data)
                except JournalFormatError as error:
                    raise JournalError(
                        f"the journal of node {self.node} in the stream {self.stream}: {error}. Run the "
                        "certmq that wrote it."
                    ) from None
                if records:
                    contents.records += len(records)
                    apply(records)
            self._end_segment(segment, decoder, contents)
        finally:
            await subscription.unsubscribe()
        return contents

    def _end_segment(self, segment: int, decoder: RecordDecoder | None, contents: LogContents) -> None:
        if decoder is None:
            return
        contents.size += decoder.offset
        if decoder.damage is not None:
            raise JournalError(
                f"the journal of node {self.node} in the stream {self.stream} is damaged in segment "
                f"{segment} ({decoder.damage}): starting would lose the records after the damage"
            )
        if decoder.pending:
            # The node stopped while writing a batch: none of it was acknowledged.
            log.warning(
                "journal of node %s, segment %d: the last %d bytes are a batch cut short; left out",
                self.node,
                segment,
                decoder.pending,
            )
            contents.discarded += decoder.pending

    def open_journal(self, committed: Callable[[int], None]) -> StreamJournalWriter:
        return StreamJournalWriter(self, committed)

    def delete_journal(self, up_to: int) -> None:
        self._call(functools.partial(self._delete_journal, up_to))

    async def _delete_journal(self, up_to: int) -> None:
        covered = [end for segment, end in self._segment_ends.items() if segment <= up_to]
        if not covered:
            return
        # Purged: the subject's messages below the sequence given.
        await self.client.jetstream().purge_stream(self.stream, subject=self.subject, seq=max(covered) + 1)
        for segment in [segment for segment in self._segment_ends if segment <= up_to]:
            del self._segment_ends[segment]

    async def delete_all(self) -> None:
        """Delete the node's checkpoint and journal (another node has adopted its sessions)."""
        assert self._store is not None, "set_up() first"
        try:
            await self._store.delete(level_token(self.node))
        except ObjectNotFoundError:
            pass
        await self.client.jetstream().purge_stream(self.stream, subject=self.subject)
        self._segment_ends.clear()

    def note_written(self, segment: int, sequence: int) -> None:
        """A message of ``segment`` is in the stream at ``sequence``."""
        if sequence > self._segment_ends.get(segment, 0):
            self._segment_ends[segment] = sequence

    def close(self) -> None:
        pass


class StreamJournalWriter:
    """Sends the journal's batches to the stream, one after another, and reports each written
    once the stream has acknowledged it (see :class:`StreamStorage`)."""

    def __init__(self, storage: StreamStorage, committed: Callable[[int], None]) -> None:
        self.storage = storage
        self._committed = committed
        self._loop = storage._loop
        self._waiting: list[tuple[int, list[bytes], int]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._sent = 0
        self._run = f"{storage.node}-{time.time_ns():x}"
        self._task = self._loop.create_task(self._send_all())
        self._task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Nothing more is written: the replies that wait for the journal wait for good.
            log.error("the journal writer of node %s stopped", self.storage.node, exc_info=task.exception())

    def write(self, segment: int, records: list[bytes], sequence: int) -> None:
        self._waiting.append((segment, records, sequence))
        self._wake.set()

    def close(self) -> None:
        """Send what waits, then stop (from a worker thread, like the broker's other calls)."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()

    async def _close(self) -> None:
        self._closing = True
        self._wake.set()
        await self._task

    async def _send_all(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batches, self._waiting = self._waiting, []
                # Batches of one segment go out as one block; a checkpoint starts a new segment.
                while batches:
                    segment = batches[0][0]
                    count = next(
                        (index for index, batch in enumerate(batches) if batch[0] != segment), len(batches)
                    )
                    same, batches = batches[:count], batches[count:]
                    block = encode_block([record for _, records, _ in same for record in records])
                    await self._send(segment, block)
                    self._committed(same[-1][2])
            if self._closing and not self._waiting:
                return

    async def _send(self, segment: int, block: bytes) -> None:
        jetstream = self.storage.client.jetstream()
        for start in range(0, len(block), CHUNK):
            self._sent += 1
            headers = {SEGMENT: str(segment), "Nats-Msg-Id": f"{self._run}-{self._sent}"}
            failures = 0
            while True:
                try:
                    ack = await jetstream.publish(
                        self.storage.subject,
                        block[start : start + CHUNK],
                        timeout=PUBLISH_TIMEOUT,
                        stream=self.storage.stream,
                        headers=headers,
                    )
                except Exception as error:
                    # Nothing after it may count as written before it: tried again (with the
                    # same message id) until stored; the replies that wait for it wait too.
                    failures += 1
                    if failures == 1 or failures % FAILURES_PER_WARNING == 0:
                        log.warning(
                            "writing the journal of node %s to %s failed %d times, trying again: %s",
                            self.storage.node,
                            self.storage.stream,
                            failures,
                            failure_text(error),
                        )
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                if failures:
                    log.info("the journal of node %s is written again", self.storage.node)
                self.storage.note_written(segment, ack.seq)
                break
