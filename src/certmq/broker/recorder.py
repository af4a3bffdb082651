"""What the broker writes to its journal, on the event loop (docs/configuration.md, "What survives
a restart").

The core, the sessions and the connections tell the :class:`Recorder` of every change to the
state of a session with an expiry interval above 0 (``session.recorder`` is set on those only)
and to the retained messages. Each call encodes one record and appends it to a buffer; once
per turn of the event loop the buffer goes to the journal's writer (certmq.broker.durable_storage). A connection
whose packet made records holds its replies until :attr:`Recorder.committed` passes them (see
``MQTTConnection``): that is how a PUBACK, a PUBREC, a SUBACK or the acceptance of a retained
message waits for the disk, while everything else goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from certmq.broker.commit_gate import Commits
from certmq.broker.durable_storage import JournalWriter
from certmq.broker.journal import (
    encode_clock,
    encode_delivery_queued,
    encode_delivery_sent,
    encode_flight_completed,
    encode_flight_released,
    encode_incoming_qos2_added,
    encode_incoming_qos2_removed,
    encode_message_stored,
    encode_retained_cleared,
    encode_retained_set,
    encode_session_connected,
    encode_session_ended,
    encode_session_offline,
    encode_subscribed,
    encode_unsubscribed,
    encode_will_cleared,
)

if TYPE_CHECKING:
    from certmq.auth.identity import Identity
    from certmq.broker.messages import Delivery, Message
    from certmq.broker.subscriptions import SubscriptionEntry
    from certmq.mqtt.packets import Will
    from certmq.mqtt.session_flows import OutgoingFlight


class Session(Protocol):
    """What the journal keeps of a session (certmq.broker.session.Session)."""

    client_id: str
    protocol_version: int
    expiry_interval: int
    owner: str
    will: Will | None
    username: str | None
    identity: Identity


class WholeSession(Session, Protocol):
    """What the journal keeps of a whole session, to record it at once."""

    @property
    def subscriptions(self) -> Mapping[str, SubscriptionEntry]: ...

    @property
    def inflight(self) -> Mapping[int, OutgoingFlight[Delivery]]: ...

    @property
    def pending(self) -> Iterable[Delivery]: ...

    @property
    def incoming_qos2(self) -> Iterable[int]: ...


def message_record(message_id: int, message: Message, to_wall: float) -> bytes:
    """The record of the body of ``message`` as ``message_id``; ``to_wall`` turns its
    event-loop expiry into a wall-clock time."""
    expires_at = message.expires_at
    return encode_message_stored(
        message_id,
        message.topic,
        message.payload,
        message.qos,
        message.retain,
        message.properties,
        None if expires_at is None else expires_at + to_wall,
        message.sender,
    )


def session_records(
    session: WholeSession,
    connected_at: float,
    disconnected_at: float,
    message_id: Callable[[Message], int],
    delivery_id: Callable[[Delivery], int],
) -> Iterator[bytes]:
    """The records that rebuild offline ``session`` whole, one at a time: it connected at
    ``connected_at`` and went away at ``disconnected_at`` (wall-clock times). ``message_id``
    gives the id of a message, and may first write the record of its body: it is called before
    the first record that refers to the message is made."""
    client_id = session.client_id
    yield encode_session_connected(
        client_id,
        session.protocol_version,
        session.expiry_interval,
        session.owner,
        connected_at,
        session.will,
        session.username,
        session.identity.fields(),
    )
    for entry in session.subscriptions.values():
        yield encode_subscribed(client_id, *entry.options())
    flights = [
        (packet_id, flight.delivery, flight.released) for packet_id, flight in session.inflight.items()
    ]
    for packet_id, delivery, released in [*flights, *((0, delivery, False) for delivery in session.pending)]:
        yield encode_delivery_queued(
            client_id,
            delivery_id(delivery),
            message_id(delivery.message),
            delivery.qos,
            delivery.retain,
            delivery.subscription_ids,
            packet_id,
        )
        if released:
            yield encode_flight_released(client_id, packet_id)
    for packet_id in session.incoming_qos2:
        yield encode_incoming_qos2_added(client_id, packet_id)
    yield encode_session_offline(
        client_id, session.expiry_interval, disconnected_at, session.will is not None
    )


class Recorder(Commits):
    """Encodes the broker's durable changes as journal records and tracks which are written.

    ``appended`` counts the records appended so far; ``committed`` is the count the writer has
    written (and synced, for ``durability = "power-loss"``), in order.
    """

    def __init__(
        self,
        writer: JournalWriter,
        *,
        segment: int,
        next_message_id: int,
        next_delivery_id: int,
        log_size: int = 0,
        checkpoint_bytes: int = 0,
        on_log_full: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._writer = writer
        self.segment = segment
        self._records: list[bytes] = []
        # next() on itertools.count is atomic, so a checkpoint's worker thread may draw ids too.
        self.message_ids = itertools.count(next_message_id)
        self.delivery_ids = itertools.count(next_delivery_id)
        self.log_size = log_size
        self.checkpoint_bytes = checkpoint_bytes
        self._on_log_full = on_log_full
        self._log_full_reported = False

    # -- appending and committing ----------------------------------------------------------

    def _append(self, record: bytes) -> None:
        records = self._records
        if not records:
            self._loop.call_soon(self._submit)
        records.append(record)
        self.appended += 1

    def _submit(self) -> None:
        records = self._records
        if not records:
            return
        self._records = []
        self.log_size += sum(map(len, records))
        self._writer.write(self.segment, records, self.appended)
        if (
            self.checkpoint_bytes
            and self.log_size >= self.checkpoint_bytes
            and self._on_log_full is not None
            and not self._log_full_reported
        ):
            self._log_full_reported = True
            self._on_log_full()

    def written(self, sequence: int) -> None:
        """Called from the writer's thread: the records up to ``sequence`` are written."""
        self._loop.call_soon_threadsafe(self._committed_to, sequence)

    async def all_committed(self) -> None:
        """Return once every record appended so far is written."""
        target = self.appended
        while self.committed < target:
            done: asyncio.Future[None] = self._loop.create_future()

            def wake(done: asyncio.Future[None] = done) -> None:
                if not done.done():
                    done.set_result(None)

            self.when_committed(wake, target)
            self._submit()
            await done

    def rotate(self) -> int:
        """Start a new segment for the records appended from now on (a checkpoint is being
        taken of the state as it is); returns the number of the last segment it replaces."""
        self._submit()
        previous = self.segment
        self.segment += 1
        self.log_size = 0
        self._log_full_reported = False
        return previous

    # -- what the broker records -----------------------------------------------------------

    def _wall_offset(self) -> float:
        """What to add to an event-loop time to get a wall-clock time."""
        return time.time() - self._loop.time()

    def message_id(self, message: Message) -> int:
        """The journal id of ``message``, writing its body first if it has none yet."""
        message_id = message.journal_id
        if not message_id:
            message_id = message.journal_id = next(self.message_ids)
            self._append(message_record(message_id, message, self._wall_offset()))
        return message_id

    def retained_set(self, message: Message) -> None:
        self._append(encode_retained_set(self.message_id(message)))

    def retained_cleared(self, topic: str) -> None:
        self._append(encode_retained_cleared(topic))

    def session_connected(self, session: Session) -> None:
        self._append(
            encode_session_connected(
                session.client_id,
                session.protocol_version,
                session.expiry_interval,
                session.owner,
                time.time(),
                session.will,
                session.username,
                session.identity.fields(),
            )
        )

    def session_offline(self, session: Session, at: float | None = None) -> None:
        """The session's client went away, now or at wall-clock time ``at``."""
        self._append(
            encode_session_offline(
                session.client_id,
                session.expiry_interval,
                time.time() if at is None else at,
                session.will is not None,
            )
        )

    def session_adopted(self, session: WholeSession, disconnected_at: float) -> None:
        """Record the whole of offline ``session``, taken from another broker: after these
        records, a start rebuilds it as it is now. Its messages and deliveries must have no
        journal ids (those of the other broker's journal mean nothing in this one)."""

        def delivery_id(delivery: Delivery) -> int:
            delivery.journal_id = next(self.delivery_ids)
            return delivery.journal_id

        for record in session_records(session, time.time(), disconnected_at, self.message_id, delivery_id):
            self._append(record)

    def session_ended(self, session: Session) -> None:
        self._append(encode_session_ended(session.client_id))

    def will_cleared(self, session: Session) -> None:
        self._append(encode_will_cleared(session.client_id))

    def subscribed(self, session: Session, entry: SubscriptionEntry) -> None:
        self._append(encode_subscribed(session.client_id, *entry.options()))

    def unsubscribed(self, session: Session, topic_filter: str) -> None:
        self._append(encode_unsubscribed(session.client_id, topic_filter))

    def delivery_queued(self, session: Session, delivery: Delivery, packet_id: int = 0) -> None:
        """``delivery`` joined the session's queue, or (``packet_id``) went out at once."""
        message_id = self.message_id(delivery.message)
        delivery_id = delivery.journal_id = next(self.delivery_ids)
        self._append(
            encode_delivery_queued(
                session.client_id,
                delivery_id,
                message_id,
                delivery.qos,
                delivery.retain,
                delivery.subscription_ids,
                packet_id,
            )
        )

    def flight_started(self, session: Session, packet_id: int, delivery: Delivery) -> None:
        """``delivery`` went out as ``packet_id``: from the queue, or at once."""
        if delivery.journal_id:
            self._append(encode_delivery_sent(session.client_id, delivery.journal_id, packet_id))
        else:
            self.delivery_queued(session, delivery, packet_id)

    def flight_released(self, session: Session, packet_id: int) -> None:
        self._append(encode_flight_released(session.client_id, packet_id))

    def flight_completed(self, session: Session, packet_id: int) -> None:
        self._append(encode_flight_completed(session.client_id, packet_id))

    def incoming_qos2_added(self, session: Session, packet_id: int) -> None:
        self._append(encode_incoming_qos2_added(session.client_id, packet_id))

    def incoming_qos2_removed(self, session: Session, packet_id: int) -> None:
        self._append(encode_incoming_qos2_removed(session.client_id, packet_id))

    def clock(self) -> None:
        self._append(encode_clock(time.time()))
