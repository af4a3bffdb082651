"""Rebuilding the broker's state at start (docs/configuration.md, "What survives a restart"): the
last checkpoint, then every journal record written after it, in order.

:class:`Recovery` builds the sessions, messages and retained messages without touching the
event loop, so a worker thread can read the journal into it; :meth:`Recovery.restore` then
hands them to the core on the loop, with their timers. A client that was connected when the
broker stopped without closing its connection (a crash) is gone as of the crash: its session
expiry counts from then and its will goes out after its delay.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from certmq.auth.identity import Identity
from certmq.broker.checkpoint_store import BrokerState, StoredDelivery, StoredMessage
from certmq.broker.journal import (
    Clock,
    DeliveryQueued,
    DeliverySent,
    FlightCompleted,
    FlightReleased,
    IncomingQos2Added,
    IncomingQos2Removed,
    MessageStored,
    Record,
    RetainedCleared,
    RetainedSet,
    SessionConnected,
    SessionEnded,
    SessionOffline,
    Subscribed,
    Unsubscribed,
    WillCleared,
)
from certmq.broker.messages import Delivery, Message
from certmq.broker.session import Session
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.session_flows import NEVER_EXPIRES, OutgoingFlight

if TYPE_CHECKING:
    from certmq.broker.core import BrokerCore
    from certmq.broker.recorder import Recorder

log = logging.getLogger("certmq.broker")


class RecoveredSession:
    """A session being rebuilt, and what the core's :class:`Session` does not say about it."""

    __slots__ = ("connected", "disconnected_at", "pending", "session")

    def __init__(self, session: Session, connected: bool, disconnected_at: float) -> None:
        self.session = session
        # Its client was connected at the last record: gone as of the crash.
        self.connected = connected
        self.disconnected_at = disconnected_at
        # Queued deliveries by journal id, in the order they were queued.
        self.pending: dict[int, Delivery] = {}


@dataclass
class RecoveryCounts:
    retained: int
    sessions: int
    queued: int
    inflight: int


class Recovery:
    """The broker's state as the checkpoint and the journal records applied so far describe it.

    ``wall_now`` and ``loop_now`` are the same instant on the two clocks: a message's expiry is
    recorded as a wall-clock time and becomes an event-loop deadline again here.
    """

    def __init__(self, wall_now: float, loop_now: float) -> None:
        self.wall_now = wall_now
        self._to_loop = loop_now - wall_now
        self.sessions: dict[str, RecoveredSession] = {}
        self.retained: dict[str, Message] = {}
        self.messages: dict[int, Message] = {}
        self.next_message_id = 1
        self.next_delivery_id = 1
        # The newest wall-clock time the records and the checkpoint show: the broker was
        # running then.
        self.latest_time = 0.0
        # Records that refer to a session or a message the journal no longer holds (an
        # expired message left out of a checkpoint, say); they change nothing.
        self.unresolved = 0
        self._handlers: dict[type, Callable[[Any], object]] = {
            MessageStored: self._message_stored,
            RetainedSet: self._retained_set,
            RetainedCleared: self._retained_cleared,
            SessionConnected: self._session_connected,
            SessionOffline: self._session_offline,
            SessionEnded: self._session_ended,
            Subscribed: self._subscribed,
            Unsubscribed: self._unsubscribed,
            DeliveryQueued: self._delivery_queued,
            DeliverySent: self._delivery_sent,
            FlightReleased: self._flight_released,
            FlightCompleted: self._flight_completed,
            IncomingQos2Added: self._incoming_qos2_added,
            IncomingQos2Removed: self._incoming_qos2_removed,
            WillCleared: self._will_cleared,
            Clock: self._clock,
        }

    # -- the checkpoint --------------------------------------------------------------------

    def load_checkpoint(self, state: BrokerState) -> None:
        """Start from a saved snapshot (before any record is applied)."""
        self.latest_time = max(self.latest_time, state.saved_at)
        self.next_message_id = max(self.next_message_id, state.next_message_id)
        self.next_delivery_id = max(self.next_delivery_id, state.next_delivery_id)
        by_record: dict[int, Message] = {}

        def message_of(record: StoredMessage) -> Message:
            message = by_record.get(id(record))
            if message is None:
                message_id = record.message_id or self._new_message_id()
                message = by_record[id(record)] = self._message_stored(MessageStored(message_id, *record[:7]))
            return message

        def delivery_of(record: StoredDelivery) -> Delivery:
            delivery_id = record.delivery_id or self._new_delivery_id()
            return Delivery(
                message_of(record.message),
                record.qos,
                record.retain,
                tuple(record.subscription_ids),
                delivery_id,
            )

        for record in state.retained:
            self.retained[record.topic] = message_of(record)
        for saved in state.sessions:
            client_id = saved.client_id
            session = Session(
                client_id,
                saved.protocol_version,
                saved.expiry_interval,
                saved.owner,
                username=saved.username,
                identity=Identity.from_fields(saved.identity),
            )
            session.subscriptions = {
                subscription.topic_filter: SubscriptionEntry(client_id, *subscription)
                for subscription in saved.subscriptions
            }
            session.inflight = {
                flight.packet_id: OutgoingFlight(
                    delivery_of(flight.delivery), flight.packet_id, flight.released
                )
                for flight in saved.inflight
            }
            session.incoming_qos2 = set(saved.incoming_qos2)
            recovered = RecoveredSession(session, saved.connected, saved.disconnected_at)
            for stored in saved.pending:
                delivery = delivery_of(stored)
                recovered.pending[delivery.journal_id] = delivery
            if saved.will is not None:
                will = saved.will
                session.will = Will(will.topic, will.payload, will.qos, will.retain, dict(will.properties))
            self.sessions[client_id] = recovered

    def _new_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def _new_delivery_id(self) -> int:
        delivery_id = self.next_delivery_id
        self.next_delivery_id += 1
        return delivery_id

    def _message_stored(self, record: MessageStored) -> Message:
        message_id, topic, payload, qos, retain, properties, expires_at, sender = record
        message = Message(
            topic,
            payload,
            qos,
            retain,
            dict(properties) if properties else {},
            None if expires_at is None else expires_at + self._to_loop,
            sender,
            message_id,
        )
        self.messages[message_id] = message
        if message_id >= self.next_message_id:
            self.next_message_id = message_id + 1
        return message

    # -- the journal -----------------------------------------------------------------------

    def apply(self, records: list[Record]) -> None:
        """Apply journal records, oldest first."""
        handlers = self._handlers
        for record in records:
            handlers[type(record)](record)

    def _session(self, client_id: str) -> RecoveredSession | None:
        recovered = self.sessions.get(client_id)
        if recovered is None:
            self.unresolved += 1
        return recovered

    def _retained_set(self, record: RetainedSet) -> None:
        message = self.messages.get(record.message_id)
        if message is None:
            self.unresolved += 1
            return
        self.retained[message.topic] = message

    def _retained_cleared(self, record: RetainedCleared) -> None:
        self.retained.pop(record.topic, None)

    def _session_connected(self, record: SessionConnected) -> None:
        self.latest_time = max(self.latest_time, record.connected_at)
        recovered = self.sessions.get(record.client_id)
        if recovered is None:
            session = Session(record.client_id, record.protocol_version, record.expiry_interval, record.owner)
            recovered = self.sessions[record.client_id] = RecoveredSession(session, True, record.connected_at)
        session = recovered.session
        session.protocol_version = record.protocol_version
        session.expiry_interval = record.expiry_interval
        session.owner = record.owner
        session.username = record.username
        session.identity = Identity.from_fields(record.identity)
        session.will = record.will
        recovered.connected = True

    def _session_offline(self, record: SessionOffline) -> None:
        self.latest_time = max(self.latest_time, record.disconnected_at)
        recovered = self._session(record.client_id)
        if recovered is None:
            return
        recovered.connected = False
        recovered.disconnected_at = record.disconnected_at
        recovered.session.expiry_interval = record.expiry_interval
        if not record.will_kept:
            recovered.session.will = None

    def _session_ended(self, record: SessionEnded) -> None:
        self.sessions.pop(record.client_id, None)

    def _subscribed(self, record: Subscribed) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            recovered.session.subscriptions[record.topic_filter] = SubscriptionEntry(*record)

    def _unsubscribed(self, record: Unsubscribed) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            recovered.session.subscriptions.pop(record.topic_filter, None)

    def _delivery_queued(self, record: DeliveryQueued) -> None:
        # Unpacked at once: this and _message_stored run for every message a start reads.
        client_id, delivery_id, message_id, qos, retain, subscription_ids, packet_id = record
        if delivery_id >= self.next_delivery_id:
            self.next_delivery_id = delivery_id + 1
        recovered = self.sessions.get(client_id)
        message = self.messages.get(message_id)
        if recovered is None or message is None:
            self.unresolved += 1
            return
        delivery = Delivery(message, qos, retain, subscription_ids, delivery_id)
        if packet_id:
            recovered.session.inflight[packet_id] = OutgoingFlight(delivery, packet_id)
        else:
            recovered.pending[delivery_id] = delivery

    def _delivery_sent(self, record: DeliverySent) -> None:
        recovered = self._session(record.client_id)
        if recovered is None:
            return
        delivery = recovered.pending.pop(record.delivery_id, None)
        if delivery is None:
            self.unresolved += 1
            return
        recovered.session.inflight[record.packet_id] = OutgoingFlight(delivery, record.packet_id)

    def _flight_released(self, record: FlightReleased) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            flight = recovered.session.inflight.get(record.packet_id)
            if flight is not None:
                flight.released = True

    def _flight_completed(self, record: FlightCompleted) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            recovered.session.inflight.pop(record.packet_id, None)

    def _incoming_qos2_added(self, record: IncomingQos2Added) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            recovered.session.incoming_qos2.add(record.packet_id)

    def _incoming_qos2_removed(self, record: IncomingQos2Removed) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            recovered.session.incoming_qos2.discard(record.packet_id)

    def _will_cleared(self, record: WillCleared) -> None:
        recovered = self._session(record.client_id)
        if recovered is not None:
            recovered.session.will = None

    def _clock(self, record: Clock) -> None:
        self.latest_time = max(self.latest_time, record.wall_time)

    # -- into the core ---------------------------------------------------------------------

    def restore(
        self,
        core: BrokerCore[Any],
        recorder: Recorder | None,
        crashed_at: float,
        wall_now: float | None = None,
    ) -> RecoveryCounts:
        """Put the rebuilt state into an empty ``core``, on the event loop, before any client
        connects; sessions are recorded in ``recorder`` from now on.

        ``crashed_at``: when a client still connected at the end of the records went away;
        ``wall_now``: the time now (default: the one given at construction; reading a large
        journal takes seconds). Deadlines that passed while the broker was down fire as soon as
        the loop runs again, after every session is back, so that a will reaches them all.
        """
        wall_now = self.wall_now if wall_now is None else wall_now
        now_loop = wall_now + self._to_loop
        for message in self.retained.values():
            if message.expires_at is None or message.expires_at > now_loop:
                core.retained.set(message)
        queued = inflight = 0
        for recovered in self.sessions.values():
            session = recovered.session
            session.recorder = recorder
            if recovered.connected and recorder is not None:
                recorder.session_offline(session, crashed_at)
            self._restore_session(core, recovered, crashed_at, wall_now)
            queued += len(session.pending)
            inflight += len(session.inflight)
        if self.unresolved:
            log.info("%d journal records referred to messages or sessions no longer kept", self.unresolved)
        return RecoveryCounts(len(core.retained), len(self.sessions), queued, inflight)

    def _restore_session(
        self, core: BrokerCore[Any], recovered: RecoveredSession, crashed_at: float, wall_now: float
    ) -> None:
        """Put one rebuilt session into ``core``, its timers counted from when its client went
        away (``crashed_at`` for a client still connected at the end of the records)."""
        session = recovered.session
        now_loop = wall_now + self._to_loop
        session.pending = deque(
            delivery
            for delivery in recovered.pending.values()
            if delivery.message.expires_at is None or delivery.message.expires_at > now_loop
        )
        disconnected_at = crashed_at if recovered.connected else recovered.disconnected_at
        will = session.will
        will_in = None
        if will is not None:
            will_in = disconnected_at + will.properties.get(PropertyId.WILL_DELAY_INTERVAL, 0) - wall_now
        expires_in = None
        if session.expiry_interval != NEVER_EXPIRES:
            expires_in = session.expiry_interval - max(0.0, wall_now - disconnected_at)
        core.restore_session(session, expires_in, will_in)

    def adopt(
        self, core: BrokerCore[Any], recorder: Recorder | None, crashed_at: float, wall_now: float
    ) -> list[Session]:
        """Put the rebuilt sessions into a running ``core`` that holds sessions of its own: those
        of another broker, gone since ``crashed_at`` (certmq.cluster.adoption). Retained messages
        are left out (every node has the cluster's); so is a session whose client id ``core``
        holds already. Each session taken is recorded whole in ``recorder``, under ids of its
        own: the ids of the records read mean nothing in this broker's journal. Returns the
        sessions taken."""
        taken = []
        for recovered in self.sessions.values():
            session = recovered.session
            if session.client_id in core.sessions:
                continue
            flights = [flight.delivery for flight in session.inflight.values()]
            for delivery in (*recovered.pending.values(), *flights):
                delivery.journal_id = delivery.message.journal_id = 0
            session.recorder = None  # recorded once restored, as it is then
            self._restore_session(core, recovered, crashed_at, wall_now)
            if recorder is not None:
                gone_at = crashed_at if recovered.connected else recovered.disconnected_at
                recorder.session_adopted(session, gone_at)
                session.recorder = recorder
            taken.append(session)
        return taken


def restore_snapshot(core: BrokerCore[Any], state: BrokerState, wall_now: float, loop_now: float) -> None:
    """Load a checkpoint into ``core`` as a start without journal records does."""
    recovery = Recovery(wall_now, loop_now)
    recovery.load_checkpoint(state)
    recovery.restore(core, None, state.saved_at)
