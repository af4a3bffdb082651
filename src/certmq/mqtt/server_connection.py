"""The server side of one MQTT connection (3.1.1 and 5.0), without I/O.

:class:`ServerConnection` is a state machine in the manner of h11 and of mqttproto's broker
state machine: it is given the bytes a client sent and the time (:meth:`~ServerConnection.
receive_data`), hands back what they mean as events (:meth:`~ServerConnection.next_event`),
keeps the bytes to send in :attr:`~ServerConnection.output`, and says when it next needs the
time (:meth:`~ServerConnection.next_deadline`). It never touches a socket, a clock or a loop,
so it is tested with byte strings and numbers.

It keeps the rules of the protocol that need a connection's state: what CONNECT and CONNACK
negotiate (limits both ways, keep alive, session expiry), topic aliases both ways, the QoS 1
and 2 exchanges and the Receive Maximum windows, the client's Maximum Packet Size, the CONNECT
deadline and keep alive. What the broker decides (who may connect, which topics, quotas,
routing) it leaves to the application, which answers through the ``accept``, ``refuse``,
``send_*`` and ``publish_*`` methods.

The QoS 1 and 2 exchanges belong to the session, which outlives a connection: the application
keeps them (certmq.mqtt.session_flows) and hands them to the connection that carries the
session. Its states and events are in certmq.mqtt.server_events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic

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
from certmq.mqtt.reason_codes import ReasonCode, connack_code_for
from certmq.mqtt.server_events import (
    AUTHENTICATING,
    AWAITING_CONNECT,
    CLOSED,
    CONNECTED,
    ConnectRefused,
    ConnectTimeout,
    Event,
    FlightReleased,
    IncomingReleased,
    KeepAliveTimeout,
    ProtocolViolation,
)
from certmq.mqtt.session_flows import (
    MAX_PACKET_ID,
    NEVER_EXPIRES,
    NO_SESSION,
    D,
    OutgoingFlight,
    SessionFlows,
)
from certmq.mqtt.topics import parse_shared_subscription

# What a client allows when it says nothing (MQTT 5.0 3.1.2.11.3).
DEFAULT_RECEIVE_MAXIMUM = 65535
# Keep alive: the connection is closed after one and a half periods without a packet (3.1.2.10).
KEEP_ALIVE_GRACE = 1.5
# What publish_in_flight returns when the client's Receive Maximum is reached.
WINDOW_FULL = -1


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the server allows, and announces in CONNACK; one value serves every connection."""

    max_packet_size: int = 1048576
    # QoS 2 PUBLISHes a client may have sent and not completed (PUBREL) at once.
    receive_maximum: int = 65535
    # QoS 1 and 2 PUBLISHes in flight to a client at once, whatever Receive Maximum it sets.
    max_inflight: int = 65535
    # Topic aliases a client may set; the server sets no more than this many either.
    topic_alias_maximum: int = 10
    retain_available: bool = True
    server_keep_alive: int = 0  # 0: the client's own
    max_session_expiry: int = NEVER_EXPIRES
    connect_timeout: float = 10.0


class ServerConnection(Generic[D]):
    """One client connection, from the first byte to the close. See the module's docstring."""

    # One per connection, thousands a second when devices connect briefly: no __dict__.
    __slots__ = (
        "_decoder",
        "_error",
        "_error_reported",
        "_received",
        "client_maximum_packet_size",
        "client_receive_maximum",
        "client_topic_alias_maximum",
        "connect_deadline",
        "flows",
        "inbound_aliases",
        "keep_alive",
        "last_activity",
        "limits",
        "outbound_aliases",
        "output",
        "output_size",
        "protocol_version",
        "request_problem_information",
        "requested_session_expiry",
        "session_expiry_interval",
        "state",
    )

    def __init__(self, limits: ServerLimits, now: float) -> None:
        self.limits = limits
        self.state = AWAITING_CONNECT
        self.protocol_version = 4
        self._decoder = PacketDecoder(max_packet_size=limits.max_packet_size)
        # Packets decoded and not yet handled by next_event.
        self._received: deque[Packet] = deque()
        # What made the decoder give up, reported once the packets before it are handled.
        self._error: MQTTError | None = None
        self._error_reported = False
        # Encoded packets to send, oldest first, and their total size.
        self.output: list[bytes] = []
        self.output_size = 0
        self.connect_deadline = now + limits.connect_timeout
        self.keep_alive = 0
        self.last_activity = now
        # Limits the client set in CONNECT (MQTT 5.0), within the server's.
        self.client_receive_maximum = DEFAULT_RECEIVE_MAXIMUM
        self.client_maximum_packet_size = 0  # 0: no limit beyond the protocol's
        self.client_topic_alias_maximum = 0
        self.request_problem_information = True
        # What the client asked for in CONNECT, and what it is granted (within
        # limits.max_session_expiry; DISCONNECT may change it).
        self.requested_session_expiry = 0
        self.session_expiry_interval = 0
        # Topic aliases: the client's (inbound) and ours (outbound).
        self.inbound_aliases: dict[int, str] = {}
        self.outbound_aliases: dict[str, int] = {}
        # The session's, from accept on.
        self.flows: SessionFlows[D] = NO_SESSION

    # -- bytes in, events out ----------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Take the bytes the client sent at time ``now``; their events come from next_event."""
        if self.state == CLOSED:
            return
        try:
            packets = self._decoder.feed(data)
        except MQTTError as error:
            packets = error.packets
            self._error = error
        if packets:
            # Only a complete packet counts for keep alive (MQTT 3.1.2.10): a client that
            # trickles a packet it never finishes is not kept alive by it.
            self.last_activity = now
            self._received.extend(packets)

    def next_event(self) -> Event | None:
        """The next thing the application must act on, or None when there is none for now
        (all bytes used up; or a CONNECT waiting for accept or refuse). Packets the protocol
        answers itself (PINGREQ, acknowledgements) only queue output, or return the flights
        they land."""
        state = self.state
        if state != CONNECTED:
            if state == AUTHENTICATING:
                return None
            if state == CLOSED:
                # A decoding error after the packets that closed the connection is still
                # reported, once, so that the application counts it.
                return self._decoding_error() if self._error is not None else None
        received = self._received
        while received:
            packet = received.popleft()
            if type(packet) is Publish:
                # Most PUBLISHes have no properties (so no alias), a topic, and no retain flag.
                if packet.properties or packet.retain or not packet.topic:
                    return self._received_publish(packet)
                return packet
            if type(packet) is PubAck:  # _received_puback, written out: one per QoS 1 delivery
                inflight = self.flows.inflight
                flight = inflight.get(packet.packet_id)
                if flight is not None and flight.delivery.qos == 1:
                    del inflight[packet.packet_id]
                    return flight
                continue
            event = _RECEIVED[type(packet)](self, packet)
            if event is not None:
                return event
        if self._error is not None:
            return self._decoding_error()
        return None

    def _decoding_error(self) -> ProtocolViolation | None:
        error = self._error
        assert error is not None
        if self._error_reported:
            return None
        self._error_reported = True
        if isinstance(error, UnsupportedProtocolVersion) and self.state == AWAITING_CONNECT:
            # Answered in the version the client asked for, when the broker speaks it.
            self.protocol_version = 5 if error.protocol_version == 5 else 4
            code = connack_code_for(self.protocol_version, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION)
            self._send(ConnAck(code))
            self.state = CLOSED
        else:
            self.close(error.reason_code, str(error))
        return ProtocolViolation(error.reason_code, str(error), malformed=True)

    def _violation(self, reason_code: int, reason: str, packet_type: int) -> ProtocolViolation:
        self.close(reason_code, reason)
        return ProtocolViolation(reason_code, reason, malformed=False, packet_type=packet_type)

    # -- CONNECT ------------------------------------------------------------------------------

    def _received_connect(self, packet: Connect) -> Connect | ConnectRefused | ProtocolViolation:
        if self.state != AWAITING_CONNECT:
            self.close(ReasonCode.PROTOCOL_ERROR, "a second CONNECT on one connection")
            return ProtocolViolation(ReasonCode.PROTOCOL_ERROR, "a second CONNECT on one connection", True)
        version = self.protocol_version = 5 if packet.protocol_version == 5 else 4
        properties = packet.properties
        if PropertyId.AUTHENTICATION_METHOD in properties:
            return self._refused(
                ReasonCode.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported"
            )
        if not packet.client_id and version == 4 and not packet.clean_start:
            return self._refused(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "an empty client id needs clean session"
            )
        limits = self.limits
        if properties:
            self.client_receive_maximum = min(
                properties.get(PropertyId.RECEIVE_MAXIMUM, DEFAULT_RECEIVE_MAXIMUM), limits.max_inflight
            )
            self.client_maximum_packet_size = properties.get(PropertyId.MAXIMUM_PACKET_SIZE, 0)
            # The server keeps a topic per alias it sends: no more than it lets a client keep.
            self.client_topic_alias_maximum = min(
                properties.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0), limits.topic_alias_maximum
            )
            self.request_problem_information = properties.get(PropertyId.REQUEST_PROBLEM_INFORMATION, 1) == 1
        else:
            # A CONNECT without properties (every 3.1.1 one): the other limits stay as __init__
            # set them, the defaults of MQTT 5.0.
            self.client_receive_maximum = min(DEFAULT_RECEIVE_MAXIMUM, limits.max_inflight)
        if version == 5:
            requested = properties.get(PropertyId.SESSION_EXPIRY_INTERVAL, 0)
        else:  # a 3.1.1 clean session ends with its connection, any other never
            requested = 0 if packet.clean_start else NEVER_EXPIRES
        self.requested_session_expiry = requested
        self.session_expiry_interval = min(requested, limits.max_session_expiry)
        self.keep_alive = limits.server_keep_alive or packet.keep_alive
        self.state = AUTHENTICATING
        return packet

    def _refused(self, reason_code: int, reason: str) -> ConnectRefused:
        self.refuse(reason_code, reason)
        return ConnectRefused(reason_code, reason)

    def accept(
        self,
        flows: SessionFlows[D],
        *,
        session_present: bool,
        assigned_client_id: str | None,
        now: float,
    ) -> None:
        """Accept the CONNECT (CONNACK queued) for a session whose QoS exchanges are ``flows``;
        ``assigned_client_id`` when the client sent none. Resend what was in flight next."""
        self.flows = flows
        self.state = CONNECTED
        self.last_activity = now
        limits = self.limits
        properties: dict[int, Any] = {}
        if self.protocol_version == 5:
            if limits.receive_maximum < DEFAULT_RECEIVE_MAXIMUM:
                properties[PropertyId.RECEIVE_MAXIMUM] = limits.receive_maximum
            properties[PropertyId.MAXIMUM_PACKET_SIZE] = limits.max_packet_size
            if limits.topic_alias_maximum:
                properties[PropertyId.TOPIC_ALIAS_MAXIMUM] = limits.topic_alias_maximum
            if not limits.retain_available:
                properties[PropertyId.RETAIN_AVAILABLE] = 0
            if self.session_expiry_interval != self.requested_session_expiry:
                properties[PropertyId.SESSION_EXPIRY_INTERVAL] = self.session_expiry_interval
            if assigned_client_id is not None:
                properties[PropertyId.ASSIGNED_CLIENT_IDENTIFIER] = assigned_client_id
            if limits.server_keep_alive:
                properties[PropertyId.SERVER_KEEP_ALIVE] = limits.server_keep_alive
        self._send(ConnAck(ReasonCode.SUCCESS, session_present, properties))

    def refuse(self, reason_code: int, reason: str) -> None:
        """Refuse the CONNECT with ``reason_code`` (a 5.0 code, told a 3.1.1 client as its
        nearest return code) and close."""
        properties: dict[int, Any] = {}
        if reason and self.protocol_version == 5:
            properties[PropertyId.REASON_STRING] = reason
        self._send(ConnAck(connack_code_for(self.protocol_version, reason_code), False, properties))
        self.state = CLOSED

    def close(self, reason_code: int | None = None, reason: str = "") -> None:
        """Close; a connected 5.0 client is told ``reason_code`` (and ``reason``) in DISCONNECT."""
        if self.state == CLOSED:
            return
        if reason_code is not None and self.protocol_version == 5 and self.state == CONNECTED:
            properties: dict[int, Any] = {PropertyId.REASON_STRING: reason} if reason else {}
            self._send(Disconnect(reason_code, properties))
        self.state = CLOSED

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When check_deadline must next be called (on the clock of ``now``); None: never."""
        state = self.state
        if state == CONNECTED:
            return self.last_activity + self.keep_alive * KEEP_ALIVE_GRACE if self.keep_alive else None
        if state == CLOSED:
            return None
        return self.connect_deadline

    def check_deadline(self, now: float) -> ConnectTimeout | KeepAliveTimeout | None:
        """Close the connection if its deadline has passed at ``now``, and say which one."""
        state = self.state
        if state == CONNECTED:
            if self.keep_alive and now - self.last_activity >= self.keep_alive * KEEP_ALIVE_GRACE:
                self.close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
                return KeepAliveTimeout()
        elif state != CLOSED and now >= self.connect_deadline:
            self.close()
            return ConnectTimeout()
        return None

    # -- PUBLISH from the client --------------------------------------------------------------

    def _received_publish(self, packet: Publish) -> Publish | ProtocolViolation:
        properties = packet.properties
        if properties:
            alias = properties.get(PropertyId.TOPIC_ALIAS)
            if alias is not None:
                if alias > self.limits.topic_alias_maximum:
                    return self._violation(
                        ReasonCode.TOPIC_ALIAS_INVALID,
                        f"topic alias {alias} is out of range",
                        PacketType.PUBLISH,
                    )
                if packet.topic:
                    self.inbound_aliases[alias] = packet.topic
                else:
                    known = self.inbound_aliases.get(alias)
                    if known is None:
                        return self._violation(
                            ReasonCode.PROTOCOL_ERROR,
                            f"topic alias {alias} was never set",
                            PacketType.PUBLISH,
                        )
                    packet.topic = known
        if not packet.topic:
            return self._violation(
                ReasonCode.PROTOCOL_ERROR, "empty topic without a topic alias", PacketType.PUBLISH
            )
        if packet.retain and not self.limits.retain_available:
            return self._violation(
                ReasonCode.RETAIN_NOT_SUPPORTED, "retained messages are not available", PacketType.PUBLISH
            )
        return packet

    def send_puback(self, packet_id: int) -> None:
        """Acknowledge a QoS 1 PUBLISH the application accepted."""
        # The codec's PUBACK of success without properties, the same in 3.1.1 and 5.0, written
        # out: one for nearly every QoS 1 message.
        data = _PUBACK_PREFIX + packet_id.to_bytes(2, "big")
        self.output.append(data)
        self.output_size += 4

    def start_incoming_qos2(self, packet_id: int) -> bool:
        """A QoS 2 PUBLISH the application accepted: True when it is new (to be delivered), False
        when it repeats one not yet released. Raise ProtocolError when the client has more QoS 2
        PUBLISHes unreleased than the server's Receive Maximum. Send PUBREC next."""
        incoming = self.flows.incoming_qos2
        if packet_id in incoming:
            return False
        if len(incoming) >= self.limits.receive_maximum:
            raise ProtocolError("too many QoS 2 messages in flight", ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
        incoming.add(packet_id)
        return True

    def send_pubrec(self, packet_id: int) -> None:
        self._send(PubRec(packet_id))

    def refuse_publish(self, packet: Publish, reason_code: int) -> bool:
        """Answer a PUBLISH the application refuses: a 5.0 client is told ``reason_code`` in PUBACK
        or PUBREC. 3.1.1 has no way to say no: its QoS 2 flow completes without delivering;
        True when that started a QoS 2 flow (as start_incoming_qos2 does)."""
        packet_id = packet.packet_id
        if packet_id is None:
            return False
        if self.protocol_version == 5:
            self._send(PubAck(packet_id, reason_code) if packet.qos == 1 else PubRec(packet_id, reason_code))
            return False
        if packet.qos == 1:
            self._send(PubAck(packet_id))
            return False
        self.flows.incoming_qos2.add(packet_id)
        self._send(PubRec(packet_id))
        return True

    def withdraw_acceptance(self, packets: list[bytes], packet_id: int, reason_code: int) -> int:
        """Turn the PUBACK or PUBREC of success for ``packet_id`` among ``packets`` (queued, not
        yet sent: held until the message was stored) into one that refuses the PUBLISH with
        ``reason_code``, which then was not accepted after all; a QoS 2 flow refused so ends.
        The QoS of the PUBLISH refused; 0 when there is none, or on 3.1.1, which has no way to
        say no."""
        if self.protocol_version != 5:
            return 0
        identifier = packet_id.to_bytes(2, "big")
        for index, data in enumerate(packets):
            if data[1:4] == b"\x03" + identifier and data[0] in (0x40, 0x50):
                return 1 if data[0] == 0x40 else 2  # refused already (its other write failed too)
            if data == _PUBACK_PREFIX + identifier:
                packets[index] = encode(PubAck(packet_id, reason_code), 5)
                return 1
            if data == _PUBREC_PREFIX + identifier:
                packets[index] = encode(PubRec(packet_id, reason_code), 5)
                self.flows.incoming_qos2.discard(packet_id)
                return 2
        return 0

    def _received_pubrel(self, packet: PubRel) -> IncomingReleased | None:
        incoming = self.flows.incoming_qos2
        if packet.packet_id in incoming:
            incoming.discard(packet.packet_id)
            self._send(PubComp(packet.packet_id))
            return IncomingReleased(packet.packet_id)
        self._send(PubComp(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        return None

    # -- PUBLISH to the client ----------------------------------------------------------------

    def publish_at_most_once(self, delivery: D, now: float, cache: dict[Any, bytes] | None) -> bool:
        """Queue a QoS 0 PUBLISH of ``delivery``; False when it is larger than the client's
        Maximum Packet Size, and dropped (MQTT 5.0 3.1.2.25). ``cache`` holds the packets
        encoded for other connections that may share them (keyed by what makes them differ);
        ``now`` matters only for a message that expires."""
        message = delivery.message
        if cache is not None and not self.client_topic_alias_maximum and message.expires_at is None:
            key = (self.protocol_version, delivery.retain, delivery.subscription_ids)
            data = cache.get(key)
            if data is None:
                data = self._encode_publish(delivery, None, False, now)
                if data is None:
                    return False
                cache[key] = data
            elif self.client_maximum_packet_size and len(data) > self.client_maximum_packet_size:
                return False
        else:
            data = self._encode_publish(delivery, None, False, now)
            if data is None:
                return False
        self.output.append(data)
        self.output_size += len(data)
        return True

    def window_full(self) -> bool:
        """Whether the client's Receive Maximum is reached: a QoS 1 or 2 PUBLISH must wait."""
        return len(self.flows.inflight) >= self.client_receive_maximum

    def publish_in_flight(self, delivery: D, now: float) -> int:
        """Queue a QoS 1 or 2 PUBLISH of ``delivery`` and keep it in flight until the client
        acknowledges it. Its packet id; or WINDOW_FULL, when the client's Receive Maximum is
        reached (nothing queued: it must wait); or 0, when it is larger than the client's Maximum
        Packet Size (dropped)."""
        flows = self.flows
        inflight = flows.inflight
        if len(inflight) >= self.client_receive_maximum:
            return WINDOW_FULL
        if len(inflight) >= MAX_PACKET_ID:
            raise RuntimeError("no free packet identifier: 65535 messages in flight")
        packet_id = flows.next_packet_id
        while packet_id in inflight:
            packet_id = packet_id % MAX_PACKET_ID + 1
        flows.next_packet_id = packet_id % MAX_PACKET_ID + 1
        data = self._encode_publish(delivery, packet_id, False, now)
        if data is None:
            return 0
        inflight[packet_id] = OutgoingFlight(delivery, packet_id)
        self.output.append(data)
        self.output_size += len(data)
        return packet_id

    def resend_in_flight(self, now: float) -> int:
        """After the session is resumed: send again what it has in flight (MQTT 4.4); the number
        of deliveries left out for being larger than the client's Maximum Packet Size."""
        dropped = 0
        for packet_id, flight in self.flows.inflight.items():
            if flight.released:
                self._send(PubRel(packet_id))
                continue
            data = self._encode_publish(flight.delivery, packet_id, True, now)
            if data is None:
                dropped += 1
            else:
                self.output.append(data)
                self.output_size += len(data)
        return dropped

    def _encode_publish(self, delivery: D, packet_id: int | None, dup: bool, now: float) -> bytes | None:
        """The PUBLISH for this client; None when it exceeds the client's Maximum Packet Size."""
        message = delivery.message
        topic = message.topic
        properties = message.properties
        new_alias = None
        if self.protocol_version == 5 and (
            message.expires_at is not None or delivery.subscription_ids or self.client_topic_alias_maximum
        ):
            properties = dict(properties)
            if message.expires_at is not None:
                properties[PropertyId.MESSAGE_EXPIRY_INTERVAL] = message.remaining_expiry(now)
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
            return None
        if new_alias is not None:
            self.outbound_aliases[topic] = new_alias
        return data

    def _received_pubrec(self, packet: PubRec) -> OutgoingFlight[D] | FlightReleased | None:
        inflight = self.flows.inflight
        flight = inflight.get(packet.packet_id)
        if flight is None or flight.delivery.qos != 2:
            self._send(PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return None
        if packet.reason_code >= 0x80:
            del inflight[packet.packet_id]
            return flight
        flight.released = True
        self._send(PubRel(packet.packet_id))
        return FlightReleased(packet.packet_id)

    def _received_pubcomp(self, packet: PubComp) -> OutgoingFlight[D] | None:
        inflight = self.flows.inflight
        flight = inflight.get(packet.packet_id)
        if flight is None or not flight.released:
            return None
        del inflight[packet.packet_id]
        return flight

    # -- SUBSCRIBE, UNSUBSCRIBE ---------------------------------------------------------------

    def _received_subscribe(self, packet: Subscribe) -> Subscribe | ProtocolViolation:
        for subscription in packet.subscriptions:
            if subscription.no_local and parse_shared_subscription(subscription.topic_filter)[0] is not None:
                return self._violation(
                    ReasonCode.PROTOCOL_ERROR, "no-local on a shared subscription", PacketType.SUBSCRIBE
                )
        return packet

    def send_suback(self, packet_id: int, reason_codes: list[int]) -> None:
        """Answer SUBACK with one 5.0 reason code per filter (a 3.1.1 client is told 0x80 for
        every refusal)."""
        self._send(SubAck(packet_id, reason_codes))

    def send_unsuback(self, packet_id: int, reason_codes: list[int]) -> None:
        self._send(UnsubAck(packet_id, reason_codes))

    # -- PINGREQ, DISCONNECT, AUTH ------------------------------------------------------------

    def _received_pingreq(self, packet: Packet) -> None:
        self.output.append(_PINGRESP)
        self.output_size += 2

    def _received_disconnect(self, packet: Disconnect) -> Disconnect | ProtocolViolation:
        expiry = packet.properties.get(PropertyId.SESSION_EXPIRY_INTERVAL)
        if expiry is not None:
            if self.session_expiry_interval == 0 and expiry != 0:
                return self._violation(
                    ReasonCode.PROTOCOL_ERROR,
                    "session expiry cannot be set on DISCONNECT after 0",
                    PacketType.DISCONNECT,
                )
            self.session_expiry_interval = min(expiry, self.limits.max_session_expiry)
        self.state = CLOSED
        return packet

    def _received_unsubscribe(self, packet: Unsubscribe) -> Unsubscribe:
        return packet

    def _received_auth(self, packet: Packet) -> ProtocolViolation:
        return self._violation(
            ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method", PacketType.AUTH
        )

    # -- output -------------------------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        data = encode(packet, self.protocol_version)
        limit = self.client_maximum_packet_size
        if limit and len(data) > limit and (properties := getattr(packet, "properties", None)):
            # MQTT 5.0 3.1.2.25: drop the reason string and user properties rather than the packet.
            properties.pop(PropertyId.REASON_STRING, None)
            properties.pop(PropertyId.USER_PROPERTY, None)
            data = encode(packet, self.protocol_version)
        self.output.append(data)
        self.output_size += len(data)

    def data_to_send(self) -> bytes:
        """Everything queued, at once; the output is empty after."""
        output = self.output
        data = b"".join(output) if len(output) > 1 else output[0] if output else b""
        output.clear()
        self.output_size = 0
        return data

    def take_output(self, start: int = 0) -> list[bytes]:
        """The packets queued from index ``start`` of :attr:`output` on, taken out of it."""
        taken = self.output[start:]
        del self.output[start:]
        self.output_size -= sum(map(len, taken))
        return taken


_PUBACK_PREFIX = b"\x40\x02"
_PUBREC_PREFIX = b"\x50\x02"
_PINGRESP = encode(PingResp(), 4)

# What the connection does with each packet type a client may send but PUBLISH and PUBACK (see
# next_event).
_RECEIVED: dict[type, Callable[[ServerConnection[Any], Any], Event | None]] = {
    Connect: ServerConnection._received_connect,
    PubRec: ServerConnection._received_pubrec,
    PubRel: ServerConnection._received_pubrel,
    PubComp: ServerConnection._received_pubcomp,
    Subscribe: ServerConnection._received_subscribe,
    Unsubscribe: ServerConnection._received_unsubscribe,
    PingReq: ServerConnection._received_pingreq,
    Disconnect: ServerConnection._received_disconnect,
    Auth: ServerConnection._received_auth,
}
