"""One client connection over asyncio: the transport's side of :class:`ServerConnection`.

Bytes read go to the connection's protocol state machine (certmq.mqtt.server_connection), and
the events it returns to the packet handlers: connect.py, publish.py, subscribe.py,
disconnect.py, delivery.py. A connection handles at most PACKETS_PER_TURN packets in one turn of
the event loop; the rest of what one read brought waits for the next turn, with reading paused.
Everything the protocol queues while packets are handled goes out in a single ``transport.write``
at the end of the turn; deliveries that other connections route here are
gathered the same way and written once per loop iteration. One timer serves the protocol's
deadlines. A client that does not read what it is sent is cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from certmq.auth.identity import ANONYMOUS
from certmq.broker.client_connection import Listener
from certmq.broker.connect import handle_connect
from certmq.broker.delivery import flight_completed, flight_released, send
from certmq.broker.disconnect import handle_disconnect
from certmq.broker.messages import Delivery
from certmq.broker.publish import handle_publish, incoming_released
from certmq.broker.session import Session
from certmq.broker.subscribe import handle_subscribe, handle_unsubscribe
from certmq.mqtt.packets import Connect, Disconnect, PacketType, Publish, Subscribe, Unsubscribe
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_connection import ServerConnection
from certmq.mqtt.server_events import (
    AUTHENTICATING,
    AWAITING_CONNECT,
    CLOSED,
    CONNECTED,
    ConnectionState,
    ConnectRefused,
    ConnectTimeout,
    FlightReleased,
    IncomingReleased,
    ProtocolViolation,
)
from certmq.mqtt.session_flows import OutgoingFlight

if TYPE_CHECKING:
    from datetime import datetime

    from certmq.broker.commit_gate import CommitGate
    from certmq.broker.core import BrokerCore

log = logging.getLogger("certmq.connection")
# What a CONNECT waits for before it is concluded (see decide_later).
T = TypeVar("T")

# How many packets a connection acts on in one turn of the event loop (those the protocol
# answers itself, PINGREQ and acknowledgements, are not counted). A client that sends
# thousands of messages at once (one read of the socket may bring that many) does not keep the
# other connections waiting until all of them are routed, nor what they hand to other tasks (a
# cluster node's sends to NATS, the journal's writes), which then go on alongside.
PACKETS_PER_TURN = 256

# The connection states are the protocol's; named here too for those that ask a connection.
__all__ = ["AUTHENTICATING", "AWAITING_CONNECT", "CLOSED", "CONNECTED", "Listener", "MQTTConnection"]


class MQTTConnection(asyncio.Protocol):
    """The asyncio side of one client connection: reads go to its :class:`ServerConnection`,
    whose events go to the packet handlers; what the protocol queues goes out in one write per
    read (or per loop iteration, for deliveries routed from other connections); one timer
    serves the protocol's deadlines; a client that does not read what it is sent is cut."""

    # One per connection, thousands a second when devices connect briefly: no __dict__, and no
    # reference cycle (handlers are looked up in the class), so it is freed as soon as it closes.
    __slots__ = (
        "__weakref__",  # the certificate expiry heap's references do not keep a connection alive
        "_awaiting_commit",
        "_closed",
        "_flush_scheduled",
        "_held",
        "_in_batch",
        "_loop",
        "_next_turn_scheduled",
        "_paused_for_turns",
        "_ready",
        "_timer",
        "client_id",
        "connected_at",
        "core",
        "identity",
        "listener",
        "on_lost",
        "peer",
        "peer_certificate",
        "protocol",
        "session",
        "settings",
        "transport",
        "username",
        "verified_issuer",
    )

    # The handler of each event the protocol returns; filled in below the class.
    HANDLERS: ClassVar[dict[type, Callable[[MQTTConnection, Any], None]]]

    def __init__(self, core: BrokerCore[MQTTConnection], listener: Listener) -> None:
        self.core = core
        self.listener = listener
        self.settings = core.settings
        self._loop = asyncio.get_running_loop()
        self.protocol: ServerConnection[Delivery] = ServerConnection(core.limits, self._loop.time())
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_certificate: bytes | None = None
        self.verified_issuer: Callable[[], bytes | None] | None = None
        self.client_id = ""
        self.session: Session | None = None
        self.identity = ANONYMOUS
        self.username: str | None = None
        self.connected_at: datetime  # set when the CONNECT is accepted
        # Output held until the journal has written what it acknowledges: [sequence, data] pieces,
        # oldest first; everything the protocol queues after a held reply waits behind it, and
        # what is released waits in _ready (see _hold_replies).
        self._held: deque[list[Any]] | None = None
        self._ready: list[bytes] = []
        self._awaiting_commit = False
        self._flush_scheduled = False
        self._in_batch = False
        self._closed = False
        # Packets wait for the next turn of the loop (see PACKETS_PER_TURN), reading paused.
        self._next_turn_scheduled = False
        self._paused_for_turns = False
        self._timer: asyncio.TimerHandle | None = None
        # Called when the connection is lost (certmq.broker.worker_balance counts connections).
        self.on_lost: Callable[[], None] | None = None

    @property
    def state(self) -> ConnectionState:
        return self.protocol.state

    @property
    def protocol_version(self) -> int:
        return self.protocol.protocol_version

    # -- transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same methods.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        self.core.connections.add(self)
        self.core.stats.connections_total += 1
        self._timer = self._loop.call_later(self.settings.connect_timeout, self._timer_fired)
        # DER of the client's certificate, from the MQTT over TLS listener's TLS layer.
        self.peer_certificate = transport.get_extra_info("peer_certificate")
        if self.peer_certificate is not None:
            self.verified_issuer = transport.get_extra_info("verified_issuer")

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.core.stats.bytes_received += len(data)
        self.protocol.receive_data(data, self._loop.time())
        if not self._next_turn_scheduled:
            self._handle_events()

    def _handle_events(self) -> None:
        """Hand the events the protocol has to their handlers, up to PACKETS_PER_TURN of them
        (the rest in the next turn of the loop); then write what they queued."""
        protocol = self.protocol
        handlers = self.HANDLERS
        gate = self.core.commit_gate
        self._in_batch = True
        try:
            if gate is None:
                for _ in range(PACKETS_PER_TURN):
                    event = protocol.next_event()
                    if event is None:
                        break
                    handlers[event.__class__](self, event)
                else:
                    self._another_turn()
            else:
                for _ in range(PACKETS_PER_TURN):
                    appended = gate.appended
                    written = len(protocol.output)
                    event = protocol.next_event()
                    if event is None:
                        break
                    handlers[event.__class__](self, event)
                    if gate.appended != appended:
                        self._hold_replies(written, gate)
                else:
                    self._another_turn()
        finally:
            self._in_batch = False
            if protocol.output or self._ready:
                self._flush()

    def _another_turn(self) -> None:
        """More events may wait: handle them in the next turn of the loop, reading nothing more
        until then (what the protocol holds stays bounded)."""
        if not self._paused_for_turns and self.transport is not None:
            self._paused_for_turns = True
            self.transport.pause_reading()
        if not self._next_turn_scheduled:
            self._next_turn_scheduled = True
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._next_turn_scheduled = False
        if self._closed:
            return
        self._handle_events()
        if self._paused_for_turns and not self._next_turn_scheduled:
            self._paused_for_turns = False
            if self.transport is not None and self.protocol.state == CONNECTED:
                self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.connections.discard(self)
        if self.on_lost is not None:
            self.on_lost()
        if self._closed:
            return
        self._closed = True
        self.protocol.close()
        self._cancel_timer()
        if self.session is not None:
            self.core.detach(self.session, publish_will=True)

    # -- output ----------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        protocol = self.protocol
        if self._held:
            # Queued after a reply that waits for the journal: it waits behind it.
            self._held[-1][1].extend(protocol.take_output())
        ready = self._ready
        if ready:
            ready.extend(protocol.take_output())
            data = b"".join(ready)
            ready.clear()
        elif protocol.output:
            data = protocol.data_to_send()
        else:
            return
        transport = self.transport
        if transport is None:
            return
        self.core.stats.bytes_sent += len(data)
        if not self._closed or not transport.is_closing():
            transport.write(data)
        if transport.get_write_buffer_size() > 2 * self.settings.max_outgoing_bytes:
            log.warning("disconnecting %s: it does not read what it is sent", self.client_id or self.peer)
            self.close(ReasonCode.QUOTA_EXCEEDED, "slow consumer", publish_will=True)

    def _hold_replies(self, written: int, gate: CommitGate) -> None:
        """What the protocol queued since its output held ``written`` pieces acknowledges work
        just appended: keep it, and all output after it (MQTT 4.6 keeps acknowledgements in
        order), until that work is committed (certmq.broker.commit_gate)."""
        sequence = gate.mark()
        protocol = self.protocol
        held = self._held
        if held:
            # Everything queued since the last held piece joins it, which now also waits for
            # these records.
            held[-1][0] = sequence
            held[-1][1].extend(protocol.take_output())
        elif written == len(protocol.output):
            return  # nothing written: nothing to hold
        else:
            if held is None:
                held = self._held = deque()
            replies = protocol.take_output(written)
            self._ready.extend(protocol.take_output())  # queued before them: free to go
            held.append([sequence, replies])
        if not self._awaiting_commit:
            self._awaiting_commit = True
            gate.when_committed(self._release_replies, held[0][0])

    def _release_replies(self) -> None:
        self._awaiting_commit = False
        held = self._held
        gate = self.core.commit_gate
        if not held or gate is None:
            return
        if self._closed:
            held.clear()
            return
        held[-1][1].extend(self.protocol.take_output())
        while held and gate.passed(held[0][0]):
            self._ready.extend(held.popleft()[1])
        if held:
            self._awaiting_commit = True
            gate.when_committed(self._release_replies, held[0][0])
        if self._ready and not self._in_batch:
            self._flush()

    # Back-pressure is read from the sizes of what waits to be written, not from the transport's
    # pause_writing: QoS 0 is dropped past max_outgoing_bytes, and past twice that the client is cut.
    def _congested(self) -> bool:
        assert self.transport is not None
        return (
            self.protocol.output_size + self.transport.get_write_buffer_size()
            > self.settings.max_outgoing_bytes
        )

    def close(self, reason_code: int | None, reason: str = "", *, publish_will: bool) -> None:
        """Close the connection; on 5.0 send DISCONNECT first when a reason is given. When the
        protocol has closed already (a DISCONNECT, a violation, a refusal, a deadline), what it
        queued last is written, the transport closed and the session let go."""
        if self._closed:
            return
        if self.protocol.state != CLOSED:
            self.protocol.close(reason_code, reason)
        self._closed = True
        self._cancel_timer()
        self._flush()
        if self.transport is not None:
            self.transport.close()
        if self.session is not None:
            self.core.detach(self.session, publish_will)

    def take_over(self, clean_start: bool) -> None:
        """Another connection has claimed this client id (MQTT 5.0 3.1.4-3)."""
        self.close(
            ReasonCode.SESSION_TAKEN_OVER, "another connection used this client identifier", publish_will=True
        )

    def withdraw_acceptance(self, packet_id: int, reason_code: int) -> bool:
        """The PUBLISH ``packet_id`` whose PUBACK or PUBREC is held was not stored after all
        (certmq.cluster.stream_writes): the held reply refuses it with ``reason_code`` instead.
        False when the client cannot be told (3.1.1)."""
        held = self._held
        if not held or self._closed:
            return False
        for _, replies in held:
            qos = self.protocol.withdraw_acceptance(replies, packet_id, reason_code)
            if qos:
                session = self.session
                if qos == 2 and session is not None and session.recorder is not None:
                    # The QoS 2 flow refused ends: its packet id is free again.
                    session.recorder.incoming_qos2_removed(session, packet_id)
                return True
        return False

    def _protocol_violation(self, event: ProtocolViolation) -> None:
        if event.malformed:
            self.core.stats.malformed_packets += 1
            log.info("closing %s: %s", self.client_id or self.peer, event.reason)
        elif event.packet_type == PacketType.PUBLISH:
            self.core.stats.messages_received += 1  # received, then refused
        self.close(None, publish_will=True)

    # -- timers ----------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_fired(self) -> None:
        # One timer per connection, at the protocol's next deadline: the CONNECT deadline, then
        # the keep-alive checks, armed again lazily (reads only record the time).
        self._timer = None
        if self._closed:
            return
        event = self.protocol.check_deadline(self._loop.time())
        if event is None:
            self.deadline_changed()
        elif isinstance(event, ConnectTimeout):
            log.info("closing %s: no CONNECT within %.0f s", self.peer, self.settings.connect_timeout)
            self.close(None, publish_will=False)
        else:
            self.close(None, publish_will=True)

    def deadline_changed(self) -> None:
        """Wake at the protocol's next deadline; a timer due sooner serves as the next check."""
        deadline = self.protocol.next_deadline()
        if deadline is None:
            self._cancel_timer()
        elif self._timer is None or self._timer.when() > deadline:
            self._cancel_timer()
            self._timer = self._loop.call_at(deadline, self._timer_fired)

    # -- what the handlers ask of the transport ---------------------------------------------

    def now(self) -> float:
        return self._loop.time()

    def refuse(self, reason_code: int, reason: str) -> None:
        self.protocol.refuse(reason_code, reason)
        self._refused(reason)

    def _refused(self, reason: str) -> None:
        log.info("refused %s from %s: %s", self.client_id or "(no client id)", self.peer, reason)
        self.close(None, publish_will=False)

    def _connect_refused(self, event: ConnectRefused) -> None:
        self._refused(event.reason)

    def decide_later(self, pending: Awaitable[T], conclude: Callable[[T], None]) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        self._loop.create_task(self._decided(pending, conclude))

    async def _decided(self, pending: Awaitable[T], conclude: Callable[[T], None]) -> None:
        outcome = await pending
        if self.protocol.state != AUTHENTICATING:
            return  # closed meanwhile
        self._in_batch = True
        try:
            gate = self.core.commit_gate
            appended, written = (0 if gate is None else gate.appended), len(self.protocol.output)
            conclude(outcome)
            if gate is not None and gate.appended != appended:
                self._hold_replies(written, gate)
        finally:
            self._in_batch = False
        if self.transport is not None and self.protocol.state == CONNECTED:
            self.transport.resume_reading()
        # The packets that came after the CONNECT, then what the decision queued.
        self._handle_events()

    def deliver(self, delivery: Delivery, cache: dict[Any, bytes] | None = None) -> None:
        """Send a routed message to this client; QoS 1 and 2 within its window (delivery.py)."""
        session = self.session
        protocol = self.protocol
        if protocol.state != CONNECTED or session is None:
            if delivery.qos and session is not None:
                self.core.queue(session, delivery)
            return
        message = delivery.message
        expires_at = message.expires_at
        if expires_at is None:
            now = 0.0  # not read: nothing in the packet depends on the time
        else:
            now = self._loop.time()
            if now >= expires_at:
                return
        if delivery.qos == 0:
            if self._congested() or not protocol.publish_at_most_once(delivery, now, cache):
                self.core.stats.messages_dropped += 1
                return
            self.core.stats.messages_sent += 1
        elif not send(self, session, delivery, now):
            return
        if not self._flush_scheduled and not self._in_batch:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)


MQTTConnection.HANDLERS = {
    Connect: handle_connect,
    ConnectRefused: MQTTConnection._connect_refused,
    Publish: handle_publish,
    IncomingReleased: incoming_released,
    OutgoingFlight: flight_completed,
    FlightReleased: flight_released,
    Subscribe: handle_subscribe,
    Unsubscribe: handle_unsubscribe,
    Disconnect: handle_disconnect,
    ProtocolViolation: MQTTConnection._protocol_violation,
}
