"""What happens to a QoS 1 or 2 message on its way to a connected client: held against its
session's byte quota, sent within the client's Receive Maximum or queued behind it, and let go
when the client has acknowledged it (PUBACK, PUBREC then PUBCOMP), which makes room for the
next queued ones. The connection's ``deliver`` brings messages here; QoS 0 goes straight out.
"""

from __future__ import annotations

from certmq.broker.client_connection import ClientConnection
from certmq.broker.messages import Delivery, message_size
from certmq.broker.session import Session
from certmq.mqtt.server_connection import WINDOW_FULL
from certmq.mqtt.server_events import CONNECTED, FlightReleased
from certmq.mqtt.session_flows import OutgoingFlight


def send(
    connection: ClientConnection,
    session: Session,
    delivery: Delivery,
    now: float,
    *,
    from_queue: bool = False,
) -> bool:
    """Send a QoS 1 or 2 delivery to the connected client within its window; True when sent.
    One that is not is queued (the window is full, or others wait before it) or dropped (over
    the session's byte quota, or larger than the client takes). ``from_queue``: taken from the
    session's queue, which held it already."""
    core = connection.core
    if not from_queue:
        if session.pending and delivery is not session.pending[0]:
            core.queue(session, delivery)  # behind those queued before it
            return False
        # Session.hold written out: this runs for every QoS 1 and 2 delivery.
        message = delivery.message
        size = message.size
        if size < 0:
            size = message_size(message)
        held = session.held_bytes + size
        if held > connection.settings.max_queued_bytes:
            session.dropped_messages += 1
            core.count_queue_full()
            return False
        session.held_bytes = held
    packet_id = connection.protocol.publish_in_flight(delivery, now)
    if packet_id <= 0:
        session.release(delivery)
        if packet_id == WINDOW_FULL:
            core.queue(session, delivery)
        else:
            core.stats.messages_dropped += 1
        return False
    if session.recorder is not None:
        session.recorder.flight_started(session, packet_id, delivery)
    core.stats.messages_sent += 1
    return True


def send_pending(connection: ClientConnection) -> None:
    """Send what the session queued, as far as the client's window allows."""
    session = connection.session
    assert session is not None
    protocol = connection.protocol
    pending = session.pending
    now = connection.now()
    while pending and protocol.state == CONNECTED and not protocol.window_full():
        delivery = pending.popleft()
        if delivery.message.expired(now):
            session.release(delivery)
            continue
        if delivery.qos == 0:
            session.release(delivery)
            connection.deliver(delivery)
        else:
            send(connection, session, delivery, now, from_queue=True)


def flight_completed(connection: ClientConnection, flight: OutgoingFlight[Delivery]) -> None:
    """A delivery has landed: acknowledged to the end, or refused by the client."""
    session = connection.session
    assert session is not None
    # Session.release written out: the message's size was kept when it was held.
    session.held_bytes -= flight.delivery.message.size
    if session.recorder is not None:
        session.recorder.flight_completed(session, flight.packet_id)
    if session.pending:
        send_pending(connection)


def flight_released(connection: ClientConnection, event: FlightReleased) -> None:
    session = connection.session
    assert session is not None
    if session.recorder is not None:
        session.recorder.flight_released(session, event.packet_id)
