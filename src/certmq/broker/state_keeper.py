"""What survives a restart (docs/configuration.md): the journal of every durable change, and
its checkpoints, snapshots of the broker's state saved to a :class:`StateStore`.

At start the last checkpoint is loaded and the journal's later records are applied to it
(:mod:`certmq.broker.recovery`). While the broker runs, the :class:`Recorder` appends records
for every change to a persistent session or a retained message. Whenever the journal has grown
by ``mqtt.checkpoint_bytes``, and at shutdown, a checkpoint is taken: the recorder moves to a
new segment, :func:`take_snapshot` copies references out of the core on the loop (the messages,
deliveries and subscriptions they point to are never changed in place), then a worker thread
turns them into records (:func:`snapshot_to_state`), the store writes those saying which
segments they cover, and those segments are deleted. The broker's deadlines are event-loop
times, which mean nothing to another process: they are stored as wall-clock times.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from certmq.auth.identity import Identity
from certmq.broker.checkpoint_store import (
    BrokerState,
    StoredDelivery,
    StoredFlight,
    StoredMessage,
    StoredSession,
    StoredSubscription,
    StoredWill,
)
from certmq.broker.durable_storage import DurableStorage, JournalWriter
from certmq.broker.journal_log import LogContents
from certmq.broker.messages import Delivery, Message
from certmq.broker.recorder import Recorder
from certmq.broker.recovery import Recovery
from certmq.broker.routing import NOT_KEPT_PREFIX
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId

if TYPE_CHECKING:
    from certmq.broker.core import BrokerCore

log = logging.getLogger("certmq.broker")

# While clients are connected, the time is recorded this often, so that after a crash their
# sessions count as gone from at most this long before it.
CLOCK_INTERVAL = 10.0


class SessionSnapshot(NamedTuple):
    client_id: str
    protocol_version: int
    expiry_interval: int
    owner: str
    connected: bool
    disconnected_at: float  # wall clock
    subscriptions: tuple[SubscriptionEntry, ...]
    inflight: list[tuple[int, Delivery, bool]]
    pending: tuple[Delivery, ...]
    incoming_qos2: tuple[int, ...]
    will: Will | None
    will_at: float | None  # wall clock
    # Who the client connected as last: its topic permissions are compiled again from these.
    username: str | None
    identity: Identity


class Snapshot(NamedTuple):
    """The broker's state at one instant, as references.

    Messages, deliveries, subscription entries and wills are never changed once made (the core
    replaces them instead; their journal ids are set before they reach a snapshot), so a worker
    thread can turn a snapshot into records while the loop goes on changing the sessions they
    were taken from.
    """

    wall_now: float
    loop_now: float
    retained: list[Message]
    sessions: list[SessionSnapshot]
    journal_segment: int = 0  # the last journal segment whose records it includes
    next_message_id: int = 1
    next_delivery_id: int = 1


def take_snapshot(
    core: BrokerCore[Any],
    wall_now: float,
    loop_now: float,
    journal_segment: int = 0,
    recorder: Recorder | None = None,
) -> Snapshot:
    """Copy what is worth keeping out of ``core``, on the event loop: only references and the few
    values that change in place (the released flags, the timers).

    Sessions with an expiry interval of 0 end with their connection and are left out.
    """
    to_wall = wall_now - loop_now
    sessions = []
    for session in core.sessions.values():
        expiry_interval = session.expiry_interval
        if expiry_interval == 0:
            continue
        will = session.will
        will_at = None
        connected = session.connection is not None
        if connected:
            # Should the broker stop without closing this connection, the client is gone as of
            # then: its will goes out after its delay, as if the connection had dropped.
            disconnected_at = wall_now
            if will is not None:
                will_at = wall_now + will.properties.get(PropertyId.WILL_DELAY_INTERVAL, 0)
        else:
            if session.expiry_handle is None:  # never expires: the time does not matter
                disconnected_at = wall_now
            else:
                # The expiry timer was armed for expiry_interval seconds when the client went away.
                disconnected_at = session.expiry_handle.when() - expiry_interval + to_wall
            if will is not None and session.will_handle is not None:
                will_at = session.will_handle.when() + to_wall
        sessions.append(
            SessionSnapshot(
                session.client_id,
                session.protocol_version,
                expiry_interval,
                session.owner,
                connected,
                disconnected_at,
                tuple(session.subscriptions.values()),
                [
                    (packet_id, flight.delivery, flight.released)
                    for packet_id, flight in session.inflight.items()
                ],
                tuple(session.pending),
                tuple(session.incoming_qos2),
                will if will_at is not None else None,
                will_at,
                session.username,
                session.identity,
            )
        )
    retained = list(core.retained)
    if recorder is None:
        return Snapshot(wall_now, loop_now, retained, sessions, journal_segment)
    return Snapshot(
        wall_now,
        loop_now,
        retained,
        sessions,
        journal_segment,
        next(recorder.message_ids),
        next(recorder.delivery_ids),
    )


def snapshot_to_state(snapshot: Snapshot, recorder: Recorder | None = None) -> BrokerState:
    """The records a store saves, with wall-clock times; expired messages are left out.

    Runs in a worker thread. A message or a delivery the journal has no id for (none should
    reach a snapshot) gets one from ``recorder``.
    """
    loop_now = snapshot.loop_now
    to_wall = snapshot.wall_now - loop_now
    records: dict[int, StoredMessage] = {}

    def message_id(message: Message) -> int:
        if message.journal_id or recorder is None:
            return message.journal_id
        return next(recorder.message_ids)

    def delivery_id(delivery: Delivery) -> int:
        if delivery.journal_id or recorder is None:
            return delivery.journal_id
        return next(recorder.delivery_ids)

    def stored(message: Message) -> StoredMessage:
        # One record per message, however many sessions it is queued for.
        record = records.get(id(message))
        if record is None:
            expires_at = message.expires_at
            record = records[id(message)] = StoredMessage(
                message.topic,
                message.payload,
                message.qos,
                message.retain,
                message.properties,
                None if expires_at is None else expires_at + to_wall,
                message.sender,
                message_id(message),
            )
        return record

    def stored_delivery(delivery: Delivery) -> StoredDelivery:
        return StoredDelivery(
            stored(delivery.message),
            delivery.qos,
            delivery.retain,
            delivery.subscription_ids,
            delivery_id(delivery),
        )

    retained = [
        stored(message)._replace(retain=True)
        for message in snapshot.retained
        if not message.topic.startswith(NOT_KEPT_PREFIX)
        and (message.expires_at is None or message.expires_at > loop_now)
    ]
    sessions = []
    for session in snapshot.sessions:
        will = session.will
        sessions.append(
            StoredSession(
                session.client_id,
                session.protocol_version,
                session.expiry_interval,
                session.disconnected_at,
                [StoredSubscription(*entry.options()) for entry in session.subscriptions],
                [
                    StoredFlight(packet_id, stored_delivery(delivery), released)
                    for packet_id, delivery, released in session.inflight
                ],
                [
                    stored_delivery(delivery)
                    for delivery in session.pending
                    if delivery.message.expires_at is None or delivery.message.expires_at > loop_now
                ],
                list(session.incoming_qos2),
                None
                if will is None or session.will_at is None
                else StoredWill(
                    will.topic, will.payload, will.qos, will.retain, will.properties, session.will_at
                ),
                session.owner,
                session.username,
                session.identity.fields(),
                session.connected,
            )
        )
    return BrokerState(
        snapshot.wall_now,
        retained,
        sessions,
        snapshot.journal_segment,
        snapshot.next_message_id,
        snapshot.next_delivery_id,
    )


# What a journal record costs besides its strings and payload, about (journal.py).
_RECORD_OVERHEAD = 30


def rebuilt_size(state: BrokerState) -> int:
    """About how many journal bytes it takes to rebuild ``state``: a checkpoint costs about as
    much work as reading this much journal."""
    size = 0
    counted: set[int] = set()
    for message in state.retained:
        size += _RECORD_OVERHEAD + len(message.topic) + len(message.payload)
    for session in state.sessions:
        deliveries = [*session.pending, *(flight.delivery for flight in session.inflight)]
        size += (_RECORD_OVERHEAD + len(session.client_id)) * (
            len(deliveries) + len(session.subscriptions) + 1
        )
        for delivery in deliveries:
            if id(delivery.message) not in counted:
                counted.add(id(delivery.message))
                size += _RECORD_OVERHEAD + len(delivery.message.topic) + len(delivery.message.payload)
    return size


def read_state(storage: DurableStorage, recovery: Recovery) -> tuple[BrokerState | None, LogContents]:
    """Load the checkpoint in ``storage`` and the journal after it into ``recovery`` (blocks)."""
    state = storage.load_checkpoint()
    if state is not None:
        recovery.load_checkpoint(state)
    covered = 0 if state is None else state.journal_segment
    return state, storage.read_journal(covered, recovery.apply)


class StateKeeper:
    """Restores the broker's state at start, records every durable change in the journal while
    it runs, and checkpoints the journal when it has grown by ``checkpoint_bytes`` (0: only at
    shutdown), or by as much as the state itself when that is larger, and at shutdown.

    The second rule keeps the work of checkpoints in proportion to the traffic: a checkpoint
    writes the whole state, so with a large backlog of queued messages (a million, say) fixed
    64 MiB steps would have the broker checkpointing all the time.

    The checkpoints and the journal are kept in ``storage`` (certmq.broker.durable_storage).
    """

    def __init__(self, core: BrokerCore[Any], storage: DurableStorage, *, checkpoint_bytes: int = 0) -> None:
        self.core = core
        self.storage = storage
        self.checkpoint_bytes = checkpoint_bytes
        self.recorder: Recorder | None = None
        self._writer: JournalWriter | None = None
        self._lock = asyncio.Lock()
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._checkpoint_wanted = False
        self._clock: asyncio.TimerHandle | None = None

    async def restore(self) -> None:
        """Load the checkpoint and the journal into the core, and start recording; raises
        StateStoreError or JournalError when they cannot be read."""
        if self.recorder is not None:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        recovery = Recovery(time.time(), loop.time())
        state, contents = await asyncio.to_thread(self._read, recovery)
        writer = self.storage.open_journal(lambda sequence: recorder.written(sequence))
        recorder = Recorder(
            writer,
            # After the checkpoint's segments, even when they are gone (a clean stop deletes them).
            segment=max(contents.last_segment, 0 if state is None else state.journal_segment) + 1,
            next_message_id=recovery.next_message_id,
            next_delivery_id=recovery.next_delivery_id,
            log_size=contents.size,
            checkpoint_bytes=self._checkpoint_step(state),
            on_log_full=self._checkpoint_soon,
        )
        self._writer, self.recorder = writer, recorder
        # A client still connected at the last record went away with the broker, at the latest
        # time the journal shows the broker running.
        crashed_at = max(recovery.latest_time, contents.last_write)
        counts = recovery.restore(self.core, recorder, crashed_at, time.time())
        self.core.record_to(recorder)
        if state is None and not contents.records:
            return
        log.info(
            "restored %d retained messages and %d sessions (%d messages queued, %d in flight) from %s "
            "and %d journal records (%.0f ms)",
            counts.retained,
            counts.sessions,
            counts.queued,
            counts.inflight,
            "no checkpoint"
            if state is None
            else "the checkpoint of " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.saved_at)),
            contents.records,
            (time.perf_counter() - started) * 1000,
        )

    def _checkpoint_step(self, state: BrokerState | None) -> int:
        """How much the journal grows before the next checkpoint, after ``state`` was saved."""
        if not self.checkpoint_bytes or state is None:
            return self.checkpoint_bytes
        return max(self.checkpoint_bytes, rebuilt_size(state))

    def _read(self, recovery: Recovery) -> tuple[BrokerState | None, LogContents]:
        # Millions of objects, none in a cycle: the cyclic collector would only walk them again
        # and again as they pile up. Nothing else runs before the listeners open.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return read_state(self.storage, recovery)
        finally:
            if collecting:
                gc.enable()

    def start(self) -> None:
        """Record the time now and then while clients are connected."""
        if self.recorder is not None and self._clock is None:
            self._clock = asyncio.get_running_loop().call_later(CLOCK_INTERVAL, self._tick)

    def _tick(self) -> None:
        if self.recorder is not None and self.core.stats.clients_connected:
            self.recorder.clock()
        self._clock = asyncio.get_running_loop().call_later(CLOCK_INTERVAL, self._tick)

    def _checkpoint_soon(self) -> None:
        # The journal may grow by a whole step while a checkpoint is being written: then another
        # follows it.
        self._checkpoint_wanted = True
        if self._checkpoint_task is None or self._checkpoint_task.done():
            self._checkpoint_task = asyncio.get_running_loop().create_task(self._checkpoints())

    async def _checkpoints(self) -> None:
        while self._checkpoint_wanted:
            self._checkpoint_wanted = False
            try:
                await self.checkpoint()
            except Exception:
                log.exception("writing a checkpoint failed; the journal is kept until the next one")
                return

    async def flush(self) -> None:
        """Return once every journal record appended so far is written."""
        if self.recorder is not None:
            await self.recorder.all_committed()

    async def checkpoint(self, level: int = logging.DEBUG) -> None:
        """Save the current state as a checkpoint and delete the journal segments it covers."""
        recorder = self.recorder
        if recorder is None:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            covered = recorder.rotate()
            snapshot = take_snapshot(self.core, time.time(), loop.time(), covered, recorder)
            snapshot_ms = (time.perf_counter() - started) * 1000
            state = await asyncio.to_thread(self._write, snapshot, recorder)
            recorder.checkpoint_bytes = await asyncio.to_thread(self._checkpoint_step, state)
            log.log(
                level,
                "checkpoint: saved %d retained messages and %d sessions, journal segments up to %d "
                "deleted (%.0f ms, of which %.1f ms on the event loop)",
                len(state.retained),
                len(state.sessions),
                covered,
                (time.perf_counter() - started) * 1000,
                snapshot_ms,
            )

    def _write(self, snapshot: Snapshot, recorder: Recorder) -> BrokerState:
        state = snapshot_to_state(snapshot, recorder)
        self.storage.save_checkpoint(state)
        self.storage.delete_journal(snapshot.journal_segment)
        return state

    async def close(self) -> None:
        """Take a last checkpoint, stop the journal's writer, and close the store."""
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        if self._checkpoint_task is not None:
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
        try:
            if self.recorder is not None:
                try:
                    await self.checkpoint(logging.INFO)
                except Exception:
                    log.exception("the checkpoint at shutdown failed; the journal is kept for the next start")
        finally:
            if self._writer is not None:
                await asyncio.to_thread(self._writer.close)
                self._writer = None
            await asyncio.to_thread(self.storage.close)
