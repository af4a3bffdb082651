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

from certmq.auth.apsara_client_id import valid_apsara_client_id
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
from certmq.broker.session import NEVER_EXPIRES, Delivery, OutgoingFlight, Session, SubscriptionEntry
from certmq.mqtt.decoding import PacketDecoder
from certmq.mqtt.encoding import encode
from certmq.mqtt.errors import MQTTError, ProtocolError, UnsupportedProtocolVersion
from certmq.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import SUBACK_FAILURE_3_1_1, ReasonCode, connack_code_for
from certmq.mqtt.topics import parse_shared_subscription

if TYPE_CHECKING:
    from certmq.broker.core import BrokerCore
    from certmq.broker.recorder import Recorder

log = logging.getLogger("certmq.connection")

# Connection states.
AWAITING_CONNECT = 0
AUTHENTICATING = 1
CONNECTED = 2
CLOSED = 3


class Listener:
    """What a connection needs to know about the listener that accepted it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class MQTTConnection(asyncio.Protocol):
    # One per connection, thousands a second when devices connect briefly: no __dict__, and no
    # reference cycle (handlers are looked up in the class), so it is freed as soon as it closes.
    __slots__ = (
        "__weakref__",  # the certificate expiry heap's references do not keep a connection alive
        "_awaiting_commit",
        "_backlog",
        "_flush_scheduled",
        "_held",
        "_in_batch",
        "_loop",
        "_out",
        "_out_size",
        "_paused_writing",
        "_pending_error",
        "_timer",
        "client_id",
        "client_maximum_packet_size",
        "client_receive_maximum",
        "client_topic_alias_maximum",
        "connected_at",
        "core",
        "decoder",
        "identity",
        "inbound_aliases",
        "keep_alive",
        "last_activity",
        "listener",
        "outbound_aliases",
        "peer",
        "peer_certificate",
        "protocol_version",
        "request_problem_information",
        "session",
        "settings",
        "state",
        "transport",
        "username",
        "verified_issuer",
    )

    # The handler of each packet type a client may send; filled in below the class.
    HANDLERS: ClassVar[dict[int, Callable[[MQTTConnection, Any], None]]]

    def __init__(self, core: BrokerCore, listener: Listener) -> None:
        self.core = core
        self.listener = listener
        self.settings = core.settings
        self.state = AWAITING_CONNECT
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_certificate: bytes | None = None
        self.verified_issuer: Callable[[], bytes | None] | None = None
        self.decoder = PacketDecoder(max_packet_size=self.settings.max_packet_size)
        self.protocol_version = 4
        self.client_id = ""
        self.session: Session | None = None
        self.identity = ANONYMOUS
        self.username: str | None = None
        self.connected_at: datetime  # set when the CONNECT is accepted
        self.keep_alive = 0
        self.last_activity = 0.0
        # Limits the client set in CONNECT (MQTT 5.0).
        self.client_receive_maximum = 65535
        self.client_maximum_packet_size = 0  # 0: no limit beyond the protocol's
        self.client_topic_alias_maximum = 0
        self.request_problem_information = True
        # Topic aliases: the client's (inbound) and ours (outbound).
        self.inbound_aliases: dict[int, str] = {}
        self.outbound_aliases: dict[str, int] = {}
        self._out: list[bytes] = []
        self._out_size = 0
        # Output held until the journal has written what it acknowledges: [sequence, data] pieces,
        # oldest first; everything written after a held reply waits behind it (see _hold_replies).
        self._held: deque[list[Any]] | None = None
        self._awaiting_commit = False
        self._flush_scheduled = False
        self._in_batch = False
        self._backlog: deque[Packet] = deque()
        self._pending_error: MQTTError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused_writing = False
        self._loop = asyncio.get_running_loop()

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
        if self.state == CLOSED:
            return
        self.core.stats.bytes_received += len(data)
        try:
            packets = self.decoder.feed(data)
        except MQTTError as error:
            packets = getattr(error, "packets", [])
            self._pending_error = error
        if packets:
            # Only a complete packet counts for keep alive (MQTT 3.1.2.10): a client that
            # trickles a packet it never finishes is not kept alive by it.
            self.last_activity = self._loop.time()
        self._in_batch = True
        try:
            if self._backlog:
                self._backlog.extend(packets)
                self._process_backlog()
            else:
                handlers = self.HANDLERS
                recorder = self.core.recorder
                out = self._out
                for index, packet in enumerate(packets):
                    if recorder is None:
                        handlers[packet.packet_type](self, packet)
                    else:
                        # _handle_recorded, inline: this loop runs for every packet.
                        appended = recorder.appended
                        written = len(out)
                        handlers[packet.packet_type](self, packet)
                        if recorder.appended != appended:
                            self._hold_replies(written, recorder)
                    if self.state != CONNECTED:
                        if self.state == AUTHENTICATING:
                            self._backlog.extend(packets[index + 1 :])
                        break
            if self._pending_error is not None and not self._backlog and self.state != AUTHENTICATING:
                self._protocol_violation(self._pending_error)
        finally:
            self._in_batch = False
            if self._out:
                self._flush()

    def _process_backlog(self) -> None:
        handlers = self.HANDLERS
        recorder = self.core.recorder
        while self._backlog and self.state == CONNECTED:
            packet = self._backlog.popleft()
            if recorder is None:
                handlers[packet.packet_type](self, packet)
            else:
                self._handle_recorded(packet, recorder)

    def _handle_recorded(self, packet: Packet, recorder: Recorder) -> None:
        """Handle ``packet``; if that recorded anything, its replies wait for the journal."""
        appended = recorder.appended
        written = len(self._out)
        self.HANDLERS[packet.packet_type](self, packet)
        if recorder.appended != appended:
            self._hold_replies(written, recorder)

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.connections.discard(self)
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._cancel_timer()
        if self.session is not None:
            self.core.detach(self.session, publish_will=True)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False

    # -- output ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._held:
            self._held[-1][1].append(data)
            return
        self._out.append(data)
        self._out_size += len(data)
        if not self._flush_scheduled and not self._in_batch:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.transport is None:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_size = 0
        self.core.stats.bytes_sent += len(data)
        if self.state != CLOSED or not self.transport.is_closing():
            self.transport.write(data)
        if self.transport.get_write_buffer_size() > 2 * self.settings.max_outgoing_bytes:
            log.warning("disconnecting %s: it does not read what it is sent", self.client_id or self.peer)
            self.close(ReasonCode.QUOTA_EXCEEDED, "slow consumer", publish_will=True)

    def _hold_replies(self, written: int, recorder: Recorder) -> None:
        """What was written since ``self._out`` held ``written`` pieces acknowledges records just
        appended: keep it, and all output after it (MQTT 4.6 keeps acknowledgements in order),
        until the journal has written them."""
        sequence = recorder.appended
        held = self._held
        if not held and written == len(self._out):
            return  # nothing written: nothing to hold
        if held is None:
            held = self._held = deque()
        if held:
            # Written into the last held piece already: it now waits for these records too.
            held[-1][0] = sequence
        else:
            replies = self._out[written:]
            del self._out[written:]
            self._out_size -= sum(map(len, replies))
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
        if self.state == CLOSED:
            held.clear()
            return
        committed = recorder.committed
        while held and held[0][0] <= committed:
            for data in held.popleft()[1]:
                self._out.append(data)
                self._out_size += len(data)
        if held:
            self._awaiting_commit = True
            recorder.when_committed(self._release_replies)
        if self._out and not self._in_batch:
            self._flush()

    def _congested(self) -> bool:
        assert self.transport is not None
        return self._out_size + self.transport.get_write_buffer_size() > self.settings.max_outgoing_bytes

    def send(self, packet: Packet) -> None:
        data = encode(packet, self.protocol_version)
        limit = self.client_maximum_packet_size
        if limit and len(data) > limit and getattr(packet, "properties", None):
            # MQTT 5.0 3.1.2.25: drop the reason string and user properties rather than the packet.
            packet.properties.pop(PropertyId.REASON_STRING, None)  # type: ignore[union-attr]
            packet.properties.pop(PropertyId.USER_PROPERTY, None)  # type: ignore[union-attr]
            data = encode(packet, self.protocol_version)
        self._write(data)

    def close(self, reason_code: int | None, reason: str = "", *, publish_will: bool) -> None:
        """Close the connection; on 5.0 send DISCONNECT first when a reason is given."""
        if self.state == CLOSED:
            return
        was_connected = self.state == CONNECTED
        if reason_code is not None and self.protocol_version == 5 and was_connected:
            properties: dict[int, Any] = {PropertyId.REASON_STRING: reason} if reason else {}
            self.send(Disconnect(reason_code, properties))
        self.state = CLOSED
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

    def _protocol_violation(self, error: MQTTError) -> None:
        self.core.stats.malformed_packets += 1
        log.info("closing %s: %s", self.client_id or self.peer, error)
        if isinstance(error, UnsupportedProtocolVersion) and self.state == AWAITING_CONNECT:
            version = getattr(error, "protocol_version", 4)
            self.protocol_version = 5 if version == 5 else 4
            code = connack_code_for(self.protocol_version, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION)
            self.send(ConnAck(code))
            self.close(None, publish_will=False)
            return
        self.close(error.reason_code, str(error), publish_will=True)

    # -- timers ----------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_fired(self) -> None:
        # One timer per connection: the CONNECT deadline, then the keep-alive checks, re-armed
        # lazily (reads only record the time).
        self._timer = None
        if self.state in (AWAITING_CONNECT, AUTHENTICATING):
            log.info("closing %s: no CONNECT within %.0f s", self.peer, self.settings.connect_timeout)
            self.close(None, publish_will=False)
        elif self.state == CONNECTED and self.keep_alive:
            self._check_keep_alive(self._loop.time())

    def _check_keep_alive(self, now: float) -> None:
        limit = self.keep_alive * 1.5
        idle = now - self.last_activity
        if idle >= limit:
            self.close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout", publish_will=True)
        elif self._timer is None or self._timer.when() > now + limit - idle:
            # A timer due sooner (the CONNECT deadline, when just accepted) serves as the next check.
            self._cancel_timer()
            self._timer = self._loop.call_later(limit - idle, self._timer_fired)

    # -- CONNECT ---------------------------------------------------------------------------

    def _handle_connect(self, packet: Connect) -> None:
        if self.state != AWAITING_CONNECT:
            self._protocol_violation(ProtocolError("a second CONNECT on one connection"))
            return
        self.protocol_version = 5 if packet.protocol_version == 5 else 4
        properties = packet.properties
        if PropertyId.AUTHENTICATION_METHOD in properties:
            self._refuse(ReasonCode.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported")
            return
        client_id = packet.client_id
        assigned = False
        if not client_id:
            if self.protocol_version == 4 and not packet.clean_start:
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "an empty client id needs clean session")
                return
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
        self.client_receive_maximum = min(
            properties.get(PropertyId.RECEIVE_MAXIMUM, 65535), self.settings.max_inflight
        )
        self.client_maximum_packet_size = properties.get(PropertyId.MAXIMUM_PACKET_SIZE, 0)
        # The broker keeps a topic per alias it sends: no more than it lets a client keep.
        self.client_topic_alias_maximum = min(
            properties.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0), self.settings.topic_alias_maximum
        )
        self.request_problem_information = properties.get(PropertyId.REQUEST_PROBLEM_INFORMATION, 1) == 1
        self.state = AUTHENTICATING
        attempt = ConnectAttempt(
            listener=self.listener.name,
            peer=self.peer,
            client_id=client_id,
            username=packet.username,
            password=packet.password,
            protocol_version=self.protocol_version,
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
        # The authenticator has to wait: the client's next packets wait until it has decided.
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
        if self.state != AUTHENTICATING:
            return
        self._in_batch = True
        try:
            recorder = self.core.recorder
            appended, written = (0 if recorder is None else recorder.appended), len(self._out)
            self._conclude_connect(packet, outcome, assigned)
            if recorder is not None and recorder.appended != appended:
                self._hold_replies(written, recorder)
            if self.transport is not None and self.state == CONNECTED:
                self.transport.resume_reading()
                self._process_backlog()
                if self._pending_error is not None and not self._backlog:
                    self._protocol_violation(self._pending_error)
        finally:
            self._in_batch = False
            if self._out:
                self._flush()

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
        if outcome.valid_until is not None and self.state == CONNECTED:
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
        code = connack_code_for(self.protocol_version, reason_code)
        properties: dict[int, Any] = {}
        if reason and self.protocol_version == 5:
            properties[PropertyId.REASON_STRING] = reason
        log.info("refused %s from %s: %s", self.client_id or "(no client id)", self.peer, reason)
        self.send(ConnAck(code, False, properties))
        self.close(None, publish_will=False)

    def _accept(
        self, packet: Connect, assigned: bool, owner: str, permissions: ClientPermissions | None
    ) -> None:
        settings = self.settings
        properties = packet.properties
        if self.protocol_version == 5:
            expiry = properties.get(PropertyId.SESSION_EXPIRY_INTERVAL, 0)
        else:
            expiry = 0 if packet.clean_start else NEVER_EXPIRES
        granted_expiry = min(expiry, settings.max_session_expiry)
        session, present = self.core.attach(
            self,
            self.client_id,
            packet.clean_start,
            granted_expiry,
            owner=owner,
            username=packet.username,
            identity=self.identity,
            permissions=permissions,
        )
        self.session = session
        self.core.set_will(session, packet.will)
        self.state = CONNECTED
        self.connected_at = datetime.now(UTC)
        self.keep_alive = settings.server_keep_alive or packet.keep_alive
        if self.keep_alive:
            self.last_activity = now = self._loop.time()
            self._check_keep_alive(now)
        else:
            self._cancel_timer()
        connack_properties: dict[int, Any] = {}
        if self.protocol_version == 5:
            if settings.receive_maximum < 65535:
                connack_properties[PropertyId.RECEIVE_MAXIMUM] = settings.receive_maximum
            connack_properties[PropertyId.MAXIMUM_PACKET_SIZE] = settings.max_packet_size
            if settings.topic_alias_maximum:
                connack_properties[PropertyId.TOPIC_ALIAS_MAXIMUM] = settings.topic_alias_maximum
            if not settings.retain_available:
                connack_properties[PropertyId.RETAIN_AVAILABLE] = 0
            if granted_expiry != expiry:
                connack_properties[PropertyId.SESSION_EXPIRY_INTERVAL] = granted_expiry
            if assigned:
                connack_properties[PropertyId.ASSIGNED_CLIENT_IDENTIFIER] = self.client_id
            if settings.server_keep_alive:
                connack_properties[PropertyId.SERVER_KEEP_ALIVE] = settings.server_keep_alive
        self.send(ConnAck(ReasonCode.SUCCESS, present, connack_properties))
        log.debug("connected %s from %s on %s", self.client_id, self.peer, self.listener.name)
        if present:
            self._resend_inflight(session)
        self._send_pending()

    # -- PUBLISH from the client -----------------------------------------------------------

    def _handle_publish(self, packet: Publish) -> None:
        session = self.session
        assert session is not None
        self.core.stats.messages_received += 1
        topic = packet.topic
        properties = packet.properties
        expires_at = None
        forwarded: dict[int, Any] = {}
        if properties:
            alias = properties.get(PropertyId.TOPIC_ALIAS)
            if alias is not None:
                if alias > self.settings.topic_alias_maximum:
                    self.close(
                        ReasonCode.TOPIC_ALIAS_INVALID,
                        f"topic alias {alias} is out of range",
                        publish_will=True,
                    )
                    return
                if topic:
                    self.inbound_aliases[alias] = topic
                else:
                    known = self.inbound_aliases.get(alias)
                    if known is None:
                        self.close(
                            ReasonCode.PROTOCOL_ERROR, f"topic alias {alias} was never set", publish_will=True
                        )
                        return
                    topic = known
            expiry = properties.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
            if expiry is not None:
                expires_at = self._loop.time() + expiry
            for key in FORWARDED_PROPERTIES:
                value = properties.get(key)
                if value is not None:
                    forwarded[key] = value
        if not topic:
            self.close(ReasonCode.PROTOCOL_ERROR, "empty topic without a topic alias", publish_will=True)
            return
        if len(topic) > self.core.longest_unchecked_topic and not self._topic_within_limits(topic):
            log.debug("%s published to a topic over the topic limits", self.client_id)
            self._answer_refused_publish(packet, ReasonCode.TOPIC_NAME_INVALID)
            return
        if packet.retain and not self.settings.retain_available:
            self.close(
                ReasonCode.RETAIN_NOT_SUPPORTED, "retained messages are not available", publish_will=True
            )
            return
        qos = packet.qos
        permissions = session.permissions
        # The test before the call spares it on the common path: no rules, an ordinary topic.
        if (permissions is not None or topic[0] == "$") and not may_publish(permissions, topic):
            self._refuse_publish(packet, topic)
            return
        message = Message(topic, packet.payload, qos, packet.retain, forwarded, expires_at, self.client_id)
        if packet.retain and qos and self.protocol_version == 5 and not self.core.retained_fits(message):
            # A publisher that can be told is refused outright, so that it knows to try again;
            # otherwise the message is delivered and not kept (BrokerCore.publish).
            self.core.refuse_retained(message)
            self._answer_refused_publish(packet, ReasonCode.QUOTA_EXCEEDED)
            return
        if qos == 0:
            self.core.publish(message)
        elif qos == 1:
            self.core.publish(message)
            self.send(PubAck(packet.packet_id))  # type: ignore[arg-type]
        else:
            packet_id = packet.packet_id
            assert packet_id is not None
            if packet_id not in session.incoming_qos2:
                if len(session.incoming_qos2) >= self.settings.receive_maximum:
                    self.close(
                        ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                        "too many QoS 2 messages in flight",
                        publish_will=True,
                    )
                    return
                session.incoming_qos2.add(packet_id)
                self.core.publish(message)
                if session.recorder is not None:
                    # After the message: a log cut between the two must not keep the id alone,
                    # which would drop the client's retry as a duplicate.
                    session.recorder.incoming_qos2_added(session, packet_id)
            self.send(PubRec(packet_id))

    def _refuse_publish(self, packet: Publish, topic: str) -> None:
        """A denied publish is dropped; 5.0 clients are told so in PUBACK / PUBREC (0x87)."""
        log.info("%s may not publish to %s", self.client_id, topic)
        self.core.stats.publishes_denied += 1
        self._answer_refused_publish(packet, ReasonCode.NOT_AUTHORIZED)

    def _answer_refused_publish(self, packet: Publish, reason_code: int) -> None:
        """Drop a refused publish: 5.0 clients are told ``reason_code`` in PUBACK / PUBREC."""
        packet_id = packet.packet_id
        if packet_id is None:
            return
        code = reason_code if self.protocol_version == 5 else ReasonCode.SUCCESS
        if packet.qos == 1:
            self.send(PubAck(packet_id, code))
        elif self.protocol_version == 5:
            self.send(PubRec(packet_id, code))
        else:
            # 3.1.1 has no way to say no: complete the QoS 2 flow without delivering.
            session = self.session
            assert session is not None
            session.incoming_qos2.add(packet_id)
            if session.recorder is not None:
                session.recorder.incoming_qos2_added(session, packet_id)
            self.send(PubRec(packet_id))

    def _handle_pubrel(self, packet: PubRel) -> None:
        session = self.session
        assert session is not None
        if packet.packet_id in session.incoming_qos2:
            session.incoming_qos2.discard(packet.packet_id)
            if session.recorder is not None:
                session.recorder.incoming_qos2_removed(session, packet.packet_id)
            self.send(PubComp(packet.packet_id))
        else:
            self.send(PubComp(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))

    # -- deliveries to the client ----------------------------------------------------------

    def deliver(self, delivery: Delivery, cache: dict[Any, bytes] | None = None) -> None:
        """Send a routed message to this client, within its window; queue what doesn't fit."""
        session = self.session
        if self.state != CONNECTED or session is None:
            if delivery.qos and session is not None:
                self.core.queue(session, delivery)
            return
        message = delivery.message
        if message.expires_at is not None and message.expired(self._loop.time()):
            return
        if delivery.qos == 0:
            if self._congested():
                self.core.stats.messages_dropped += 1
                return
            if cache is not None and not self.client_topic_alias_maximum and message.expires_at is None:
                key = (self.protocol_version, delivery.retain, delivery.subscription_ids)
                data = cache.get(key)
                if data is None:
                    data = self._encode_publish(delivery, None, False)
                    if data is None:
                        return
                    cache[key] = data
                elif self.client_maximum_packet_size and len(data) > self.client_maximum_packet_size:
                    return
            else:
                data = self._encode_publish(delivery, None, False)
                if data is None:
                    return
            self.core.stats.messages_sent += 1
            self._write(data)
            return
        if len(session.inflight) >= self.client_receive_maximum or (
            session.pending and delivery is not session.pending[0]
        ):
            self.core.queue(session, delivery)
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
        self._send_in_flight(session, delivery)

    def _send_in_flight(self, session: Session, delivery: Delivery) -> None:
        """Send a delivery the session holds (Session.hold) with a packet id."""
        packet_id = session.allocate_packet_id()
        data = self._encode_publish(delivery, packet_id, False)
        if data is None:
            session.release(delivery)
            return
        session.inflight[packet_id] = OutgoingFlight(delivery)
        if session.recorder is not None:
            session.recorder.flight_started(session, packet_id, delivery)
        self.core.stats.messages_sent += 1
        self._write(data)

    def _encode_publish(self, delivery: Delivery, packet_id: int | None, dup: bool) -> bytes | None:
        """Encode for this client; None when the packet exceeds the client's Maximum Packet Size."""
        message = delivery.message
        topic = message.topic
        properties = message.properties
        new_alias = None
        if self.protocol_version == 5 and (
            message.expires_at is not None or delivery.subscription_ids or self.client_topic_alias_maximum
        ):
            properties = dict(properties)
            if message.expires_at is not None:
                properties[PropertyId.MESSAGE_EXPIRY_INTERVAL] = message.remaining_expiry(self._loop.time())
            if delivery.subscription_ids:
                properties[PropertyId.SUBSCRIPTION_IDENTIFIER] = list(delivery.subscription_ids)
            if self.client_topic_alias_maximum:
                alias = self.outbound_aliases.get(topic)
                if alias is not None:
                    properties[PropertyId.TOPIC_ALIAS] = alias
                    topic = ""
                elif len(self.outbound_aliases) < self.client_topic_alias_maximum:
                    new_alias = len(self.outbound_aliases) + 1
                    properties[PropertyId.TOPIC_ALIAS] = new_alias
        data = encode(
            Publish(topic, message.payload, delivery.qos, delivery.retain, dup, packet_id, properties),
            self.protocol_version,
        )
        if self.client_maximum_packet_size and len(data) > self.client_maximum_packet_size:
            # MQTT 5.0 3.1.2.25: a packet the client cannot take is discarded as if sent.
            self.core.stats.messages_dropped += 1
            return None
        if new_alias is not None:
            self.outbound_aliases[topic] = new_alias
        return data

    def _send_pending(self) -> None:
        session = self.session
        assert session is not None
        pending = session.pending
        now = self._loop.time()
        while pending and len(session.inflight) < self.client_receive_maximum and self.state == CONNECTED:
            delivery = pending.popleft()
            if delivery.message.expired(now):
                session.release(delivery)
                continue
            if delivery.qos == 0:
                session.release(delivery)
                self.deliver(delivery)
            else:
                self._send_in_flight(session, delivery)

    def _resend_inflight(self, session: Session) -> None:
        """After reconnecting to a session: resend unacknowledged messages (MQTT 4.4)."""
        for packet_id, flight in session.inflight.items():
            if flight.released:
                self.send(PubRel(packet_id))
            else:
                data = self._encode_publish(flight.delivery, packet_id, True)
                if data is not None:
                    self._write(data)

    def _handle_puback(self, packet: PubAck) -> None:
        session = self.session
        assert session is not None
        flight = session.inflight.get(packet.packet_id)
        if flight is not None and flight.delivery.qos == 1:
            del session.inflight[packet.packet_id]
            # Session.release written out: the message's size was kept when it was held.
            session.held_bytes -= flight.delivery.message.size
            if session.recorder is not None:
                session.recorder.flight_completed(session, packet.packet_id)
            if session.pending:
                self._send_pending()

    def _handle_pubrec(self, packet: PubRec) -> None:
        session = self.session
        assert session is not None
        flight = session.inflight.get(packet.packet_id)
        if flight is None or flight.delivery.qos != 2:
            self.send(PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return
        if packet.reason_code >= 0x80:
            del session.inflight[packet.packet_id]
            session.release(flight.delivery)
            if session.recorder is not None:
                session.recorder.flight_completed(session, packet.packet_id)
            if session.pending:
                self._send_pending()
            return
        flight.released = True
        if session.recorder is not None:
            session.recorder.flight_released(session, packet.packet_id)
        self.send(PubRel(packet.packet_id))

    def _handle_pubcomp(self, packet: PubComp) -> None:
        session = self.session
        assert session is not None
        flight = session.inflight.get(packet.packet_id)
        if flight is not None and flight.released:
            del session.inflight[packet.packet_id]
            session.release(flight.delivery)
            if session.recorder is not None:
                session.recorder.flight_completed(session, packet.packet_id)
            if session.pending:
                self._send_pending()

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
            if group is not None and subscription.no_local:
                self.close(ReasonCode.PROTOCOL_ERROR, "no-local on a shared subscription", publish_will=True)
                return
            refused = self._subscription_over_limits(session, subscription.topic_filter)
            if refused is not None:
                codes.append(refused)
                continue
            if not may_subscribe(session.permissions, subscription.topic_filter):
                log.info("%s may not subscribe to %s", self.client_id, subscription.topic_filter)
                codes.append(self.subscription_refused_code())
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
        self.send(SubAck(packet.packet_id, codes))
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
        self.send(UnsubAck(packet.packet_id, codes))

    def subscription_refused_code(self) -> int:
        return self.core.subscribe_denied_code if self.protocol_version == 5 else SUBACK_FAILURE_3_1_1

    def _subscription_over_limits(self, session: Session, topic_filter: str) -> int | None:
        """The SUBACK code refusing a filter over the topic limits (0x8F) or a new subscription
        beyond the client's (0x97); None when it is within them. 3.1.1 has only 0x80."""
        if not self._topic_within_limits(topic_filter):
            log.debug("%s subscribed to a filter over the topic limits", self.client_id)
            code = ReasonCode.TOPIC_FILTER_INVALID
        elif (
            len(session.subscriptions) >= self.settings.max_subscriptions_per_client
            and topic_filter not in session.subscriptions
        ):
            log.debug(
                "%s has %d subscriptions, the most a client may have",
                self.client_id,
                len(session.subscriptions),
            )
            self.core.stats.subscriptions_over_limit += 1
            code = ReasonCode.QUOTA_EXCEEDED
        else:
            return None
        return code if self.protocol_version == 5 else SUBACK_FAILURE_3_1_1

    def _topic_within_limits(self, topic: str) -> bool:
        if len(topic) <= self.core.longest_unchecked_topic or topic_within_limits(topic, self.settings):
            return True
        self.core.stats.topics_over_limit += 1
        return False

    # -- PINGREQ, DISCONNECT, AUTH ---------------------------------------------------------

    def _handle_pingreq(self, packet: PingReq) -> None:
        self.send(PingResp())

    def _handle_disconnect(self, packet: Disconnect) -> None:
        session = self.session
        assert session is not None
        expiry = packet.properties.get(PropertyId.SESSION_EXPIRY_INTERVAL)
        if expiry is not None:
            if session.expiry_interval == 0 and expiry != 0:
                self.close(
                    ReasonCode.PROTOCOL_ERROR,
                    "session expiry cannot be set on DISCONNECT after 0",
                    publish_will=True,
                )
                return
            session.expiry_interval = min(expiry, self.settings.max_session_expiry)
        publish_will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self.close(None, publish_will=publish_will)

    def _handle_auth(self, packet: Auth) -> None:
        self.close(ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method", publish_will=True)


MQTTConnection.HANDLERS = {
    PacketType.CONNECT: MQTTConnection._handle_connect,
    PacketType.PUBLISH: MQTTConnection._handle_publish,
    PacketType.PUBACK: MQTTConnection._handle_puback,
    PacketType.PUBREC: MQTTConnection._handle_pubrec,
    PacketType.PUBREL: MQTTConnection._handle_pubrel,
    PacketType.PUBCOMP: MQTTConnection._handle_pubcomp,
    PacketType.SUBSCRIBE: MQTTConnection._handle_subscribe,
    PacketType.UNSUBSCRIBE: MQTTConnection._handle_unsubscribe,
    PacketType.PINGREQ: MQTTConnection._handle_pingreq,
    PacketType.DISCONNECT: MQTTConnection._handle_disconnect,
    PacketType.AUTH: MQTTConnection._handle_auth,
}


def _authentication_failed(attempt: ConnectAttempt) -> AuthOutcome:
    log.exception("authentication of %s failed with an error", attempt.client_id)
    return AuthOutcome(False, ReasonCode.UNSPECIFIED_ERROR, "authentication failed")
