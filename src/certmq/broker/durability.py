"""What survives a restart (docs/configuration.md): the broker's state saved to a
:class:`StateStore` and read back at start.

Saving is split in two so that the event loop is held only briefly: :func:`take_snapshot`
copies references out of the core on the loop (the messages, deliveries and subscriptions they
point to are never changed in place), then a worker thread turns them into records
(:func:`snapshot_to_state`) and the store writes those, while the loop goes on. The broker's
deadlines are event-loop times, which mean nothing to another process: they are stored as
wall-clock times and converted back when the state is restored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from certmq.broker.messages import Message
from certmq.broker.persistence import (
    BrokerState,
    StateStore,
    StoredDelivery,
    StoredFlight,
    StoredMessage,
    StoredSession,
    StoredSubscription,
    StoredWill,
)
from certmq.broker.session import NEVER_EXPIRES, Delivery, OutgoingFlight, Session, SubscriptionEntry
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId

if TYPE_CHECKING:
    from certmq.broker.core import BrokerCore

log = logging.getLogger("certmq.broker")

# Retained `$SYS` topics are statistics of the running broker, published again after a start.
_NOT_SAVED_PREFIX = "$SYS/"


class SessionSnapshot(NamedTuple):
    client_id: str
    protocol_version: int
    expiry_interval: int
    disconnected_at: float  # wall clock
    subscriptions: tuple[SubscriptionEntry, ...]
    inflight: list[tuple[int, Delivery, bool]]
    pending: tuple[Delivery, ...]
    incoming_qos2: tuple[int, ...]
    will: Will | None
    will_at: float | None  # wall clock
    owner: str
    username: str | None
    identity: dict[str, str]


class Snapshot(NamedTuple):
    """The broker's state at one instant, as references.

    Messages, deliveries, subscription entries and wills are never changed once made (the core
    replaces them instead), so a worker thread can turn a snapshot into records while the loop
    goes on changing the sessions they were taken from.
    """

    wall_now: float
    loop_now: float
    retained: list[Message]
    sessions: list[SessionSnapshot]


def take_snapshot(core: BrokerCore, wall_now: float, loop_now: float) -> Snapshot:
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
        if session.connection is not None:
            # Should the broker stop without closing this connection, the client is gone as of
            # the snapshot: its will goes out after its delay, as if the connection had dropped.
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
                session.owner,
                session.username,
                session.identity,
            )
        )
    return Snapshot(wall_now, loop_now, list(core.retained), sessions)


def snapshot_to_state(snapshot: Snapshot) -> BrokerState:
    """The records a store saves, with wall-clock times; expired messages are left out.

    Runs in a worker thread.
    """
    loop_now = snapshot.loop_now
    to_wall = snapshot.wall_now - loop_now
    records: dict[int, StoredMessage] = {}

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
            )
        return record

    def stored_delivery(delivery: Delivery) -> StoredDelivery:
        return StoredDelivery(
            stored(delivery.message), delivery.qos, delivery.retain, delivery.subscription_ids
        )

    retained = [
        StoredMessage(
            message.topic,
            message.payload,
            message.qos,
            True,
            message.properties,
            None if message.expires_at is None else message.expires_at + to_wall,
            message.sender,
        )
        for message in snapshot.retained
        if not message.topic.startswith(_NOT_SAVED_PREFIX)
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
                [
                    StoredSubscription(
                        entry.topic_filter,
                        entry.qos,
                        entry.no_local,
                        entry.retain_as_published,
                        entry.retain_handling,
                        entry.subscription_id,
                    )
                    for entry in session.subscriptions
                ],
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
                session.identity,
            )
        )
    return BrokerState(snapshot.wall_now, retained, sessions)


def restore_snapshot(core: BrokerCore, state: BrokerState, wall_now: float, loop_now: float) -> None:
    """Put a saved state back into an empty ``core``, before any client connects.

    Every session comes back offline, its expiry counting from when it went offline; sessions
    that expired while the broker was down end (and send their delayed wills) at once.
    """
    to_loop = loop_now - wall_now
    messages: dict[int, Message] = {}

    def message_of(record: StoredMessage) -> Message:
        message = messages.get(id(record))
        if message is None:
            message = messages[id(record)] = Message(
                record.topic,
                record.payload,
                record.qos,
                record.retain,
                dict(record.properties),
                None if record.expires_at is None else record.expires_at + to_loop,
                record.sender,
            )
        return message

    def delivery_of(record: StoredDelivery) -> Delivery:
        return Delivery(message_of(record.message), record.qos, record.retain, tuple(record.subscription_ids))

    for record in state.retained:
        if record.expires_at is None or record.expires_at > wall_now:
            core.retained.set(message_of(record))
    for saved in state.sessions:
        client_id = saved.client_id
        session = Session(
            client_id,
            saved.protocol_version,
            saved.expiry_interval,
            owner=saved.owner,
            username=saved.username,
            identity=dict(saved.identity),
        )
        session.subscriptions = {
            subscription.topic_filter: SubscriptionEntry(client_id, *subscription)
            for subscription in saved.subscriptions
        }
        session.inflight = {
            flight.packet_id: OutgoingFlight(delivery_of(flight.delivery), flight.released)
            for flight in saved.inflight
        }
        session.pending = deque(delivery_of(delivery) for delivery in saved.pending)
        session.incoming_qos2 = set(saved.incoming_qos2)
        will_in = None
        if saved.will is not None:
            will = saved.will
            session.will = Will(will.topic, will.payload, will.qos, will.retain, dict(will.properties))
            will_in = will.publish_at - wall_now
        expires_in = None
        if saved.expiry_interval != NEVER_EXPIRES:
            offline_for = max(0.0, wall_now - saved.disconnected_at)
            expires_in = saved.expiry_interval - offline_for
        core.restore_session(session, expires_in, will_in)


class StateKeeper:
    """Restores the broker's state at start, saves it every ``autosave_interval`` seconds (0:
    never) and once more at shutdown, one save at a time."""

    def __init__(self, core: BrokerCore, store: StateStore, autosave_interval: float) -> None:
        self.core = core
        self.store = store
        self.autosave_interval = autosave_interval
        self._lock = asyncio.Lock()
        self._autosave_task: asyncio.Task[None] | None = None
        # Never write a state over one that could not be read.
        self._restored = False

    async def restore(self) -> None:
        """Load the saved state into the core; raises StateStoreError when it cannot be read."""
        if self._restored:
            return
        state = await asyncio.to_thread(self.store.load)
        self._restored = True
        if state is None:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        restore_snapshot(self.core, state, time.time(), loop.time())
        log.info(
            "restored %d retained messages and %d sessions saved %s (%.0f ms)",
            len(state.retained),
            len(state.sessions),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.saved_at)),
            (time.perf_counter() - started) * 1000,
        )

    def start_autosave(self) -> None:
        if self.autosave_interval > 0 and self._autosave_task is None:
            self._autosave_task = asyncio.get_running_loop().create_task(self._autosave())

    async def _autosave(self) -> None:
        while True:
            await asyncio.sleep(self.autosave_interval)
            # Shielded: stopping the broker waits for a save under way (on the lock) rather than
            # abandoning its thread, which would then write an older state after the final one.
            await asyncio.shield(self._save_logging_errors(logging.DEBUG))

    async def _save_logging_errors(self, level: int) -> None:
        try:
            await self.save(level)
        except Exception:
            log.exception("saving the broker state failed; the previous saved state is kept")

    async def save(self, level: int = logging.DEBUG) -> None:
        """Write the current state to the store."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            snapshot = take_snapshot(self.core, time.time(), loop.time())
            snapshot_ms = (time.perf_counter() - started) * 1000
            state = await asyncio.to_thread(self._write, snapshot)
            log.log(
                level,
                "saved %d retained messages and %d sessions (%.0f ms, of which %.1f ms on the event loop)",
                len(state.retained),
                len(state.sessions),
                (time.perf_counter() - started) * 1000,
                snapshot_ms,
            )

    def _write(self, snapshot: Snapshot) -> BrokerState:
        state = snapshot_to_state(snapshot)
        self.store.save(state)
        return state

    async def close(self) -> None:
        """Stop saving periodically, save once more, and close the store."""
        if self._autosave_task is not None:
            self._autosave_task.cancel()
            self._autosave_task = None
        try:
            if self._restored:
                await self._save_logging_errors(logging.INFO)
        finally:
            await asyncio.to_thread(self.store.close)
