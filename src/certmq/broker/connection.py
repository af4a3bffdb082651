"""One client connection: bytes in, packets through the protocol rules, bytes out.

The connection is an :class:`asyncio.Protocol`. Everything it writes while handling one read
batch goes out in a single ``transport.write`` at the end of the batch; deliveries that other
connections route to it are gathered the same way and flushed once per loop iteration.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from certmq.auth.connect import AuthOutcome, ConnectAttempt
from certmq.auth.identity import ANONYMOUS
from certmq.auth.ownership import SESSION_OWNED_BY_ANOTHER_IDENTITY, session_owner
from certmq.auth.topics import (
    WILL_TOPIC_DENIED,
    ClientPermissions,
    may_publish,
    may_receive,
    may_subscribe,
)
from certmq.broker.messages import FORWARDED_PROPERTIES, Message, content_size, message_size
from certmq.broker.quotas import topic_within_limits
from certmq.broker.session import Delivery, Session, SubscriptionEntry
from certmq.mqtt.errors import MQTTError
from certmq.mqtt.packets import Connect, Disconnect, PacketType, Publish, Subscribe, Unsubscribe
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_connection import (
    AUTHENTICATING,
    AWAITING_CONNECT,
    CLOSED,
    CONNECTED,
    WINDOW_FULL,
    ConnectionState,
    ConnectRefused,
    ConnectTimeout,
    FlightCompleted,
    FlightReleased,
    IncomingReleased,
    ProtocolViolation,
    ServerConnection,
)
from certmq.mqtt.topics import parse_shared_subscription

if TYPE_CHECKING:
    from certmq.broker.core import BrokerCore
    from certmq.broker.recorder import Recorder

log = logging.getLogger("certmq.connection")

# The connection states are the protocol's; named here too for those that ask a connection.
__all__ = ["AUTHENTICATING", "AWAITING_CONNECT", "CLOSED", "CONNECTED", "Listener", "MQTTConnection"]

APSARA_CLIENT_ID_SEPARATOR = "@@@"


class Listener:
    """What a connection needs to know about the listener that accepted it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def valid_apsara_client_id(client_id: str) -> bool:
    """An ApsaraMQ client id: `GroupID@@@DeviceID`, at most 64 characters, GroupID `GID_`/`GID-` +
    [A-Za-z0-9_-], 7-64 long."""
    if len(client_id) > 64:
        return False
    group, separator, device = client_id.partition(APSARA_CLIENT_ID_SEPARATOR)
    if not separator or not device or not 7 <= len(group) <= 64:
        return False
    if not (group.startswith("GID_") or group.startswith("GID-")):
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in group)


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
        "_paused_writing",
        "_ready",
        "_timer",
        "client_id",
        "connected_at",
        "core",
        "identity",
        "listener",
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

    def __init__(self, core: BrokerCore, listener: Listener) -> None:
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
        self._timer: asyncio.TimerHandle | None = None
        self._paused_writing = False

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
        self._handle_events()

    def _handle_events(self) -> None:
        """Hand every event the protocol has to its handler; then write what they queued."""
        protocol = self.protocol
        handlers = self.HANDLERS
        recorder = self.core.recorder
        self._in_batch = True
        try:
            if recorder is None:
                event = protocol.next_event()
                while event is not None:
                    handlers[event.__class__](self, event)
                    event = protocol.next_event()
            else:
                while True:
                    appended = recorder.appended
                    written = len(protocol.output)
                    event = protocol.next_event()
                    if event is None:
                        break
                    handlers[event.__class__](self, event)
                    if recorder.appended != appended:
                        self._hold_replies(written, recorder)
        finally:
            self._in_batch = False
            if protocol.output or self._ready:
                self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.connections.discard(self)
        if self._closed:
            return
        self._closed = True
        self.protocol.close()
        self._cancel_timer()
        if self.session is not None:
            self.core.detach(self.session, publish_will=True)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False

    # -- output ----------------------------------------------------------------------------

    def _queued(self) -> None:
        """The protocol queued output outside a read: write it at the end of this iteration."""
        if not self._flush_scheduled and not self._in_batch:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

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

    def _hold_replies(self, written: int, recorder: Recorder) -> None:
        """What the protocol queued since its output held ``written`` pieces acknowledges records
        just appended: keep it, and all output after it (MQTT 4.6 keeps acknowledgements in
        order), until the journal has written them."""
        sequence = recorder.appended
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
            recorder.when_committed(self._release_replies)

    def _release_replies(self) -> None:
        self._awaiting_commit = False
        held = self._held
        recorder = self.core.recorder
        if not held or recorder is None:
            return
        if self._closed:
            held.clear()
            return
        held[-1][1].extend(self.protocol.take_output())
        committed = recorder.committed
        while held and held[0][0] <= committed:
            self._ready.extend(held.popleft()[1])
        if held:
            self._awaiting_commit = True
            recorder.when_committed(self._release_replies)
        if self._ready and not self._in_batch:
            self._flush()

    def _congested(self) -> bool:
        assert self.transport is not None
        return (
            self.protocol.output_size + self.transport.get_write_buffer_size()
            > self.settings.max_outgoing_bytes
        )

    def close(self, reason_code: int | None, reason: str = "", *, publish_will: bool) -> None:
        """Close the connection; on 5.0 send DISCONNECT first when a reason is given."""
        if self._closed:
            return
        self.protocol.close(reason_code, reason)
        self._shut(publish_will)

    def _shut(self, publish_will: bool) -> None:
        """The protocol is closed: write what it queued last, close the transport, and let the
        session go."""
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

    def _protocol_violation(self, event: ProtocolViolation) -> None:
        if event.malformed:
            self.core.stats.malformed_packets += 1
            log.info("closing %s: %s", self.client_id or self.peer, event.reason)
        elif event.packet_type == PacketType.PUBLISH:
            self.core.stats.messages_received += 1  # received, then refused
        if not self._closed:
            self._shut(publish_will=True)

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
            self._arm_timer()
        elif isinstance(event, ConnectTimeout):
            log.info("closing %s: no CONNECT within %.0f s", self.peer, self.settings.connect_timeout)
            self._shut(publish_will=False)
        else:
            self._shut(publish_will=True)

    def _arm_timer(self) -> None:
        """Wake at the protocol's next deadline; a timer due sooner serves as the next check."""
        deadline = self.protocol.next_deadline()
        if deadline is None:
            self._cancel_timer()
        elif self._timer is None or self._timer.when() > deadline:
            self._cancel_timer()
            self._timer = self._loop.call_at(deadline, self._timer_fired)

    # -- CONNECT ---------------------------------------------------------------------------

    def _handle_connect(self, packet: Connect) -> None:
        client_id = packet.client_id
        assigned = False
        if not client_id:
            client_id = "auto-" + uuid.uuid4().hex
            assigned = True
        elif self.settings.apsara_client_id and not valid_apsara_client_id(client_id):
            self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id must be GroupID@@@DeviceID")
            return
        will = packet.will
        if will is not None:
            if not self._topic_within_limits(will.topic):
                self._refuse(
                    ReasonCode.TOPIC_NAME_INVALID, "the will topic is too long or has too many levels"
                )
                return
            if content_size(will.topic, will.payload, will.properties) > self.settings.max_queued_bytes:
                # The session holds its will as long as itself: no more than it may queue.
                self._refuse(ReasonCode.QUOTA_EXCEEDED, "the will is larger than a session may hold")
                return
        self.client_id = client_id
        self.username = packet.username
        attempt = ConnectAttempt(
            listener=self.listener.name,
            peer=self.peer,
            client_id=client_id,
            username=packet.username,
            password=packet.password,
            protocol_version=self.protocol.protocol_version,
            peer_certificate=self.peer_certificate,
            verified_issuer=self.verified_issuer,
        )
        try:
            outcome = self.core.authenticator.authenticate(attempt)
        except Exception:
            outcome = _authentication_failed(attempt)
        if isinstance(outcome, AuthOutcome):
            # Decided at once, as most CONNECTs are: answered within this read.
            self._conclude_connect(packet, outcome, assigned)
            return
        # The authenticator has to wait: the client's next packets wait in the protocol until
        # it has decided.
        assert self.transport is not None
        self.transport.pause_reading()
        self._loop.create_task(self._await_authentication(packet, attempt, outcome, assigned))

    async def _await_authentication(
        self, packet: Connect, attempt: ConnectAttempt, pending: Awaitable[AuthOutcome], assigned: bool
    ) -> None:
        try:
            outcome = await pending
        except Exception:
            outcome = _authentication_failed(attempt)
        if self.protocol.state != AUTHENTICATING:
            return
        self._in_batch = True
        try:
            recorder = self.core.recorder
            appended, written = (0 if recorder is None else recorder.appended), len(self.protocol.output)
            self._conclude_connect(packet, outcome, assigned)
            if recorder is not None and recorder.appended != appended:
                self._hold_replies(written, recorder)
        finally:
            self._in_batch = False
        if self.transport is not None and self.protocol.state == CONNECTED:
            self.transport.resume_reading()
        # The packets that came after the CONNECT, then what the decision queued.
        self._handle_events()

    def _conclude_connect(self, packet: Connect, outcome: AuthOutcome, assigned: bool) -> None:
        if not outcome.allowed:
            self._refuse(outcome.reason_code, outcome.reason)
            return
        self.identity = outcome.identity
        permissions = self.core.permissions_for(self.client_id, packet.username, outcome.identity)
        will = packet.will
        if will is not None and not may_publish(permissions, will.topic):
            self._refuse_recorded(
                ReasonCode.NOT_AUTHORIZED,
                WILL_TOPIC_DENIED,
                f"the topic rules do not allow this client to publish its will to {will.topic!r}",
            )
            return
        owner = session_owner(outcome.identity)
        if not self.core.may_resume(self.client_id, owner):
            # The session, and the connection that may be carrying it, are left untouched.
            self._refuse_recorded(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                SESSION_OWNED_BY_ANOTHER_IDENTITY,
                "the session of this client id belongs to another identity",
            )
            return
        refusal = self.core.session_refusal(self.client_id, owner, packet.clean_start)
        if refusal is not None:
            self.core.stats.sessions_over_limit += 1
            self._refuse_recorded(ReasonCode.QUOTA_EXCEEDED, refusal.reason, refusal.detail)
            return
        self._accept(packet, assigned, owner, permissions)
        if outcome.valid_until is not None and self.protocol.state == CONNECTED:
            self.core.certificate_expiry.watch(self, outcome.valid_until)

    def _refuse_recorded(self, reason_code: int, reason: str, detail: str) -> None:
        """Refuse an authenticated client for what the broker itself checks, and say why in the
        audit log as the authentication step does."""
        audit = self.core.audit
        if audit is not None:
            identity = self.identity
            try:
                audit(
                    listener=self.listener.name,
                    peer=self.peer,
                    client_id=self.client_id,
                    ca_sn=identity.ca_sn,
                    device_sn=identity.device_sn,
                    cn=identity.cn,
                    step=0,
                    result="deny",
                    reason=reason,
                    detail=detail,
                    # An anonymous client proves no identity: its refusals are folded per source.
                    identity_known=not identity.is_anonymous,
                )
            except Exception:
                log.exception("could not record the refusal of %s", self.client_id)
        self._refuse(reason_code, detail)

    def _refuse(self, reason_code: int, reason: str) -> None:
        self.protocol.refuse(reason_code, reason)
        self._refused(reason)

    def _refused(self, reason: str) -> None:
        log.info("refused %s from %s: %s", self.client_id or "(no client id)", self.peer, reason)
        self._shut(publish_will=False)

    def _connect_refused(self, event: ConnectRefused) -> None:
        self._refused(event.reason)

    def _accept(
        self, packet: Connect, assigned: bool, owner: str, permissions: ClientPermissions | None
    ) -> None:
        protocol = self.protocol
        session, present = self.core.attach(
            self,
            self.client_id,
            packet.clean_start,
            protocol.session_expiry_interval,
            owner=owner,
            username=packet.username,
            identity=self.identity,
            permissions=permissions,
        )
        self.session = session
        self.core.set_will(session, packet.will)
        self.connected_at = datetime.now(UTC)
        now = self._loop.time()
        protocol.accept(
            session,
            session_present=present,
            assigned_client_id=self.client_id if assigned else None,
            now=now,
        )
        self._arm_timer()
        log.debug("connected %s from %s on %s", self.client_id, self.peer, self.listener.name)
        if present:
            self.core.stats.messages_dropped += protocol.resend_in_flight(now)
            if session.pending:
                self._send_pending()

    # -- PUBLISH from the client -----------------------------------------------------------

    def _handle_publish(self, packet: Publish) -> None:
        session = self.session
        assert session is not None
        core = self.core
        core.stats.messages_received += 1
        topic = packet.topic  # its alias resolved by the protocol
        properties = packet.properties
        expires_at = None
        forwarded: dict[int, Any] = {}
        if properties:
            expiry = properties.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
            if expiry is not None:
                expires_at = self._loop.time() + expiry
            for key in FORWARDED_PROPERTIES:
                value = properties.get(key)
                if value is not None:
                    forwarded[key] = value
        if len(topic) > core.longest_unchecked_topic and not self._topic_within_limits(topic):
            log.debug("%s published to a topic over the topic limits", self.client_id)
            self._answer_refused_publish(packet, ReasonCode.TOPIC_NAME_INVALID)
            return
        qos = packet.qos
        permissions = session.permissions
        # The test before the call spares it on the common path: no rules, an ordinary topic.
        if (permissions is not None or topic[0] == "$") and not may_publish(permissions, topic):
            self._refuse_publish(packet, topic)
            return
        message = Message(topic, packet.payload, qos, packet.retain, forwarded, expires_at, self.client_id)
        protocol = self.protocol
        if packet.retain and qos and protocol.protocol_version == 5 and not core.retained_fits(message):
            # A publisher that can be told is refused outright, so that it knows to try again;
            # otherwise the message is delivered and not kept (BrokerCore.publish).
            core.refuse_retained(message)
            self._answer_refused_publish(packet, ReasonCode.QUOTA_EXCEEDED)
            return
        if qos == 0:
            core.publish(message)
        elif qos == 1:
            core.publish(message)
            protocol.send_puback(packet.packet_id)  # type: ignore[arg-type]
        else:
            packet_id = packet.packet_id
            assert packet_id is not None
            try:
                new = protocol.start_incoming_qos2(packet_id)
            except MQTTError as error:
                self.close(error.reason_code, str(error), publish_will=True)
                return
            if new:
                core.publish(message)
                if session.recorder is not None:
                    # After the message: a log cut between the two must not keep the id alone,
                    # which would drop the client's retry as a duplicate.
                    session.recorder.incoming_qos2_added(session, packet_id)
            protocol.send_pubrec(packet_id)

    def _refuse_publish(self, packet: Publish, topic: str) -> None:
        """A denied publish is dropped; 5.0 clients are told so in PUBACK / PUBREC (0x87)."""
        log.info("%s may not publish to %s", self.client_id, topic)
        self.core.stats.publishes_denied += 1
        self._answer_refused_publish(packet, ReasonCode.NOT_AUTHORIZED)

    def _answer_refused_publish(self, packet: Publish, reason_code: int) -> None:
        """Drop a refused publish: 5.0 clients are told ``reason_code`` in PUBACK / PUBREC."""
        if self.protocol.refuse_publish(packet, reason_code):
            session = self.session
            assert session is not None and packet.packet_id is not None
            if session.recorder is not None:
                session.recorder.incoming_qos2_added(session, packet.packet_id)

    def _incoming_released(self, event: IncomingReleased) -> None:
        session = self.session
        assert session is not None
        if session.recorder is not None:
            session.recorder.incoming_qos2_removed(session, event.packet_id)

    # -- deliveries to the client ----------------------------------------------------------

    def deliver(self, delivery: Delivery, cache: dict[Any, bytes] | None = None) -> None:
        """Send a routed message to this client, within its window; queue what doesn't fit."""
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
        else:
            if session.pending and delivery is not session.pending[0]:
                self.core.queue(session, delivery)  # behind those queued before it
                return
            # Session.hold written out: this runs for every QoS 1 and 2 delivery.
            size = message.size
            if size < 0:
                size = message_size(message)
            held = session.held_bytes + size
            if held > self.settings.max_queued_bytes:
                session.dropped_messages += 1
                self.core.count_queue_full()
                return
            session.held_bytes = held
            if not self._send_in_flight(session, delivery, now):
                return
        if not self._flush_scheduled and not self._in_batch:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _send_in_flight(self, session: Session, delivery: Delivery, now: float) -> bool:
        """Send a delivery the session holds (Session.hold) with a packet id; False when it is
        not sent: queued, if the client's window is full, or else dropped."""
        packet_id = self.protocol.publish_in_flight(delivery, now)
        if packet_id <= 0:
            session.release(delivery)
            if packet_id == WINDOW_FULL:
                self.core.queue(session, delivery)
            else:
                self.core.stats.messages_dropped += 1
            return False
        if session.recorder is not None:
            session.recorder.flight_started(session, packet_id, delivery)
        self.core.stats.messages_sent += 1
        return True

    def _send_pending(self) -> None:
        session = self.session
        assert session is not None
        protocol = self.protocol
        pending = session.pending
        now = self._loop.time()
        while pending and protocol.state == CONNECTED and not protocol.window_full():
            delivery = pending.popleft()
            if delivery.message.expired(now):
                session.release(delivery)
                continue
            if delivery.qos == 0:
                session.release(delivery)
                self.deliver(delivery)
            else:
                self._send_in_flight(session, delivery, now)
        self._queued()

    def _flight_completed(self, event: FlightCompleted[Delivery]) -> None:
        session = self.session
        assert session is not None
        # Session.release written out: the message's size was kept when it was held.
        session.held_bytes -= event.delivery.message.size
        if session.recorder is not None:
            session.recorder.flight_completed(session, event.packet_id)
        if session.pending:
            self._send_pending()

    def _flight_released(self, event: FlightReleased) -> None:
        session = self.session
        assert session is not None
        if session.recorder is not None:
            session.recorder.flight_released(session, event.packet_id)

    # -- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------

    def _handle_subscribe(self, packet: Subscribe) -> None:
        session = self.session
        assert session is not None
        subscription_ids = packet.properties.get(PropertyId.SUBSCRIPTION_IDENTIFIER)
        subscription_id = subscription_ids[0] if subscription_ids else None
        codes: list[int] = []
        retained: list[Delivery] = []
        for subscription in packet.subscriptions:
            group, topic_filter = parse_shared_subscription(subscription.topic_filter)
            refused = self._subscription_over_limits(session, subscription.topic_filter)
            if refused is not None:
                codes.append(refused)
                continue
            if not may_subscribe(session.permissions, subscription.topic_filter):
                log.info("%s may not subscribe to %s", self.client_id, subscription.topic_filter)
                codes.append(self.core.subscribe_denied_code)
                continue
            entry = SubscriptionEntry(
                client_id=self.client_id,
                topic_filter=subscription.topic_filter,
                qos=subscription.qos,
                no_local=subscription.no_local,
                retain_as_published=subscription.retain_as_published,
                retain_handling=subscription.retain_handling,
                subscription_id=subscription_id,
            )
            existed = self.core.subscribe(session, entry)
            codes.append(subscription.qos)
            send_retained = subscription.retain_handling == 0 or (
                subscription.retain_handling == 1 and not existed
            )
            if group is None and send_retained:
                ids = () if subscription_id is None else (subscription_id,)
                now = self._loop.time()
                permissions = session.permissions
                for message in self.core.retained.matching(topic_filter):
                    if not message.expired(now) and may_receive(permissions, message.topic):
                        qos = min(message.qos, subscription.qos)
                        retained.append(Delivery(message, qos, True, ids))
        self.protocol.send_suback(packet.packet_id, codes)
        for delivery in retained:
            self.deliver(delivery)

    def _handle_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes: list[int] = [
            ReasonCode.SUCCESS
            if self.core.unsubscribe(session, topic_filter)
            else ReasonCode.NO_SUBSCRIPTION_EXISTED
            for topic_filter in packet.topic_filters
        ]
        self.protocol.send_unsuback(packet.packet_id, codes)

    def _subscription_over_limits(self, session: Session, topic_filter: str) -> int | None:
        """The SUBACK code refusing a filter over the topic limits (0x8F) or a new subscription
        beyond the client's (0x97); None when it is within them."""
        if not self._topic_within_limits(topic_filter):
            log.debug("%s subscribed to a filter over the topic limits", self.client_id)
            return ReasonCode.TOPIC_FILTER_INVALID
        if (
            len(session.subscriptions) >= self.settings.max_subscriptions_per_client
            and topic_filter not in session.subscriptions
        ):
            log.debug(
                "%s has %d subscriptions, the most a client may have",
                self.client_id,
                len(session.subscriptions),
            )
            self.core.stats.subscriptions_over_limit += 1
            return ReasonCode.QUOTA_EXCEEDED
        return None

    def _topic_within_limits(self, topic: str) -> bool:
        if len(topic) <= self.core.longest_unchecked_topic or topic_within_limits(topic, self.settings):
            return True
        self.core.stats.topics_over_limit += 1
        return False

    # -- DISCONNECT ------------------------------------------------------------------------

    def _handle_disconnect(self, packet: Disconnect) -> None:
        session = self.session
        assert session is not None
        session.expiry_interval = self.protocol.session_expiry_interval
        self._shut(publish_will=packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE)


MQTTConnection.HANDLERS = {
    Connect: MQTTConnection._handle_connect,
    ConnectRefused: MQTTConnection._connect_refused,
    Publish: MQTTConnection._handle_publish,
    IncomingReleased: MQTTConnection._incoming_released,
    FlightCompleted: MQTTConnection._flight_completed,
    FlightReleased: MQTTConnection._flight_released,
    Subscribe: MQTTConnection._handle_subscribe,
    Unsubscribe: MQTTConnection._handle_unsubscribe,
    Disconnect: MQTTConnection._handle_disconnect,
    ProtocolViolation: MQTTConnection._protocol_violation,
}


def _authentication_failed(attempt: ConnectAttempt) -> AuthOutcome:
    log.exception("authentication of %s failed with an error", attempt.client_id)
    return AuthOutcome(False, ReasonCode.UNSPECIFIED_ERROR, "authentication failed")
