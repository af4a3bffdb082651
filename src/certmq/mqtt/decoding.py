"""Decoding MQTT, sans-io: the bytes of a connection in, packets out (:class:`PacketDecoder`).

Covers MQTT 3.1 (protocol level 3, CONNECT only differs), 3.1.1 (level 4) and 5.0 (level 5).
Everything the specifications call a Malformed Packet or a Protocol Error that can be seen
in a single packet is rejected here, with the exception type and reason code the peer
should be told; rules that need connection state (topic alias mapping, receive maximum,
session expiry on DISCONNECT...) belong to the connection.

The PUBLISH path is the hot one: every message a broker routes is decoded once, so it avoids
per-byte Python loops and works on ``bytes`` slices directly. The fields packets are made of
are read by :mod:`certmq.mqtt.fields`; :mod:`certmq.mqtt.encoding` writes packets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final, TypeAlias

from certmq.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from certmq.mqtt.fields import MAXIMUM_PACKET_SIZE, FieldReader, read_properties
from certmq.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from certmq.mqtt.properties import PUBLISH_FROM_CLIENT, WILL, PropertyId
from certmq.mqtt.reason_codes import (
    VALID_CONNACK_RETURN_CODES_3_1_1,
    VALID_REASON_CODES,
    VALID_SUBACK_RETURN_CODES_3_1_1,
)
from certmq.mqtt.topics import parse_shared_subscription, validate_topic_filter, validate_topic_name

_P = PacketType

# Plain ints for the per-packet code: reading an enum member costs a lookup each time.
_MQTT_3_1: Final = int(ProtocolVersion.MQTT_3_1)
_MQTT_3_1_1: Final = int(ProtocolVersion.MQTT_3_1_1)
_MQTT_5: Final = int(ProtocolVersion.MQTT_5)
_CONNECT: Final = int(_P.CONNECT)
_CONNACK: Final = int(_P.CONNACK)
_PUBLISH: Final = int(_P.PUBLISH)
_PUBREL: Final = int(_P.PUBREL)
_SUBSCRIBE: Final = int(_P.SUBSCRIBE)
_SUBACK: Final = int(_P.SUBACK)
_UNSUBSCRIBE: Final = int(_P.UNSUBSCRIBE)
_UNSUBACK: Final = int(_P.UNSUBACK)
_PINGRESP: Final = int(_P.PINGRESP)
_DISCONNECT: Final = int(_P.DISCONNECT)
_AUTH: Final = int(_P.AUTH)
_TOPIC_ALIAS: Final = int(PropertyId.TOPIC_ALIAS)
_AUTHENTICATION_METHOD: Final = int(PropertyId.AUTHENTICATION_METHOD)


def _check_flags(flags: int, expected: int, packet_name: str) -> None:
    if flags != expected:
        raise MalformedPacket(
            f"{packet_name} has fixed header flags 0b{flags:04b}; they must be 0b{expected:04b} (reserved)"
        )


def _check_reason_code(reason_code: int, packet_type: int) -> int:
    if reason_code not in VALID_REASON_CODES[packet_type]:
        raise MalformedPacket(
            f"0x{reason_code:02X} is not a valid reason code for {PacketType(packet_type).name}"
        )
    return reason_code


Decoder: TypeAlias = Callable[[bytes, int, int, int], Packet]
"""Decodes one packet body ``data[start:end]`` given the four fixed-header flag bits."""


def _make_publish_decoder(
    protocol_version: int, property_context: int
) -> Callable[[bytes, int, int, int], Publish]:
    with_properties = protocol_version >= _MQTT_5

    def decode_publish(data: bytes, start: int, end: int, flags: int) -> Publish:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MalformedPacket("PUBLISH has QoS 3; QoS is 0, 1 or 2")
        if flags & 8 and not qos:
            raise MalformedPacket("PUBLISH has the DUP flag set with QoS 0")
        position = start + 2
        if position > end:
            raise MalformedPacket("PUBLISH ends in the middle of its topic name length")
        topic_end = position + (data[start] << 8 | data[start + 1])
        if topic_end > end:
            raise MalformedPacket("PUBLISH ends in the middle of its topic name")
        try:
            topic = data[position:topic_end].decode()
        except UnicodeDecodeError as error:
            raise MalformedPacket(f"PUBLISH: topic name is not well-formed UTF-8 ({error.reason})") from None
        packet_id = None
        if qos:
            position = topic_end + 2
            if position > end:
                raise MalformedPacket("PUBLISH ends in the middle of its packet identifier")
            packet_id = data[topic_end] << 8 | data[topic_end + 1]
            if not packet_id:
                raise ProtocolError(
                    "PUBLISH with QoS > 0 has packet identifier 0; packet identifiers start at 1"
                )
        else:
            position = topic_end
        properties: Properties
        if with_properties:
            if position >= end:
                raise MalformedPacket("PUBLISH ends before its property length")
            if data[position] == 0:
                properties = {}
                position += 1
            elif data[position] < 0x80:
                stop = position + 1 + data[position]
                if stop > end:
                    raise MalformedPacket("PUBLISH: property length runs past the end of the packet")
                properties = read_properties(data, position + 1, stop, property_context, "PUBLISH")
                position = stop
            else:
                reader = FieldReader(data, position, end, "PUBLISH")
                properties = reader.properties(property_context)
                position = reader.position
            if not topic and _TOPIC_ALIAS in properties:
                # An empty topic name stands for the topic the alias was set to (MQTT 5.0 3.3.2.3.4).
                return Publish(
                    topic, data[position:end], qos, flags & 1 == 1, flags & 8 == 8, packet_id, properties
                )
            if not topic:
                raise ProtocolError("PUBLISH has an empty topic name and no Topic Alias")
        else:
            properties = {}
        if not topic or "+" in topic or "#" in topic or "\x00" in topic:
            validate_topic_name(topic)
        return Publish(topic, data[position:end], qos, flags & 1 == 1, flags & 8 == 8, packet_id, properties)

    return decode_publish


_AcknowledgementType: TypeAlias = type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp]


def _make_acknowledgement_decoder(
    packet_class: _AcknowledgementType, protocol_version: int
) -> Callable[[bytes, int, int, int], PubAck | PubRec | PubRel | PubComp]:
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one layout: packet id, reason code, properties."""
    packet_type = packet_class.packet_type
    packet_name = packet_type.name
    expected_flags = 0b0010 if packet_type == _PUBREL else 0
    with_properties = protocol_version >= _MQTT_5

    def decode_acknowledgement(
        data: bytes, start: int, end: int, flags: int
    ) -> PubAck | PubRec | PubRel | PubComp:
        if flags != expected_flags:
            _check_flags(flags, expected_flags, packet_name)
        if end - start == 2:
            packet_id = data[start] << 8 | data[start + 1]
            if packet_id == 0:
                raise ProtocolError(f"{packet_name} has packet identifier 0; packet identifiers start at 1")
            return packet_class(packet_id)
        reader = FieldReader(data, start, end, packet_name)
        packet_id = reader.packet_id()
        if not with_properties:
            reader.expect_end()
        # MQTT 5.0 3.4.2.1: the reason code may be left out when it is 0 and there are no
        # properties; the property length may be left out when there are no properties.
        reason_code = _check_reason_code(reader.byte("reason code"), packet_type)
        properties = {} if reader.at_end() else reader.properties(packet_type)
        reader.expect_end()
        return packet_class(packet_id, reason_code, properties)

    return decode_acknowledgement


def _decode_connack_3_1_1(data: bytes, start: int, end: int, flags: int) -> ConnAck:
    _check_flags(flags, 0, "CONNACK")
    reader = FieldReader(data, start, end, "CONNACK")
    acknowledge_flags = reader.byte("acknowledge flags")
    if acknowledge_flags & 0xFE:
        raise MalformedPacket("CONNACK has reserved acknowledge flag bits set")
    return_code = reader.byte("return code")
    reader.expect_end()
    if return_code not in VALID_CONNACK_RETURN_CODES_3_1_1:
        raise MalformedPacket(f"0x{return_code:02X} is not a valid CONNACK return code")
    if return_code and acknowledge_flags:
        raise ProtocolError("CONNACK refuses the connection but says a session is present")
    return ConnAck(return_code, acknowledge_flags == 1)


def _decode_connack_5(data: bytes, start: int, end: int, flags: int) -> ConnAck:
    _check_flags(flags, 0, "CONNACK")
    reader = FieldReader(data, start, end, "CONNACK")
    acknowledge_flags = reader.byte("acknowledge flags")
    if acknowledge_flags & 0xFE:
        raise MalformedPacket("CONNACK has reserved acknowledge flag bits set")
    reason_code = _check_reason_code(reader.byte("reason code"), _CONNACK)
    properties = reader.properties(_CONNACK)
    reader.expect_end()
    if reason_code and acknowledge_flags:
        raise ProtocolError("CONNACK refuses the connection but says a session is present")
    return ConnAck(reason_code, acknowledge_flags == 1, properties)


def _make_subscribe_decoder(protocol_version: int) -> Callable[[bytes, int, int, int], Subscribe]:
    with_properties = protocol_version >= _MQTT_5

    def decode_subscribe(data: bytes, start: int, end: int, flags: int) -> Subscribe:
        _check_flags(flags, 0b0010, "SUBSCRIBE")
        reader = FieldReader(data, start, end, "SUBSCRIBE")
        packet_id = reader.packet_id()
        properties = reader.properties(_SUBSCRIBE) if with_properties else {}
        subscriptions: list[Subscription] = []
        while not reader.at_end():
            topic_filter = reader.string("topic filter")
            group, _ = parse_shared_subscription(topic_filter)
            options = reader.byte("subscription options")
            qos = options & 3
            if not with_properties:
                if options & 0xFC:
                    raise MalformedPacket(
                        f"SUBSCRIBE to {topic_filter!r}: reserved bits of the requested QoS are set"
                    )
                if qos == 3:
                    raise MalformedPacket(f"SUBSCRIBE to {topic_filter!r} requests QoS 3")
                subscriptions.append(Subscription(topic_filter, qos))
                continue
            if options & 0xC0:
                raise MalformedPacket(
                    f"SUBSCRIBE to {topic_filter!r}: reserved subscription option bits are set"
                )
            if qos == 3:
                raise ProtocolError(f"SUBSCRIBE to {topic_filter!r} requests QoS 3")
            retain_handling = (options >> 4) & 3
            if retain_handling == 3:
                raise ProtocolError(f"SUBSCRIBE to {topic_filter!r} has Retain Handling 3")
            no_local = options & 4 == 4
            if no_local and group is not None:
                raise ProtocolError(f"SUBSCRIBE to shared subscription {topic_filter!r} sets No Local")
            subscriptions.append(Subscription(topic_filter, qos, no_local, options & 8 == 8, retain_handling))
        if not subscriptions:
            raise ProtocolError("SUBSCRIBE has no topic filter")
        return Subscribe(packet_id, subscriptions, properties)

    return decode_subscribe


def _make_suback_decoder(protocol_version: int) -> Callable[[bytes, int, int, int], SubAck]:
    with_properties = protocol_version >= _MQTT_5
    valid_codes = VALID_REASON_CODES[_SUBACK] if with_properties else VALID_SUBACK_RETURN_CODES_3_1_1

    def decode_suback(data: bytes, start: int, end: int, flags: int) -> SubAck:
        _check_flags(flags, 0, "SUBACK")
        reader = FieldReader(data, start, end, "SUBACK")
        packet_id = reader.packet_id()
        properties = reader.properties(_SUBACK) if with_properties else {}
        reason_codes = list(data[reader.position : end])
        for reason_code in reason_codes:
            if reason_code not in valid_codes:
                raise MalformedPacket(f"0x{reason_code:02X} is not a valid SUBACK reason code")
        return SubAck(packet_id, reason_codes, properties)

    return decode_suback


def _make_unsubscribe_decoder(protocol_version: int) -> Callable[[bytes, int, int, int], Unsubscribe]:
    with_properties = protocol_version >= _MQTT_5

    def decode_unsubscribe(data: bytes, start: int, end: int, flags: int) -> Unsubscribe:
        _check_flags(flags, 0b0010, "UNSUBSCRIBE")
        reader = FieldReader(data, start, end, "UNSUBSCRIBE")
        packet_id = reader.packet_id()
        properties = reader.properties(_UNSUBSCRIBE) if with_properties else {}
        topic_filters: list[str] = []
        while not reader.at_end():
            topic_filter = reader.string("topic filter")
            validate_topic_filter(topic_filter)
            topic_filters.append(topic_filter)
        if not topic_filters:
            raise ProtocolError("UNSUBSCRIBE has no topic filter")
        return Unsubscribe(packet_id, topic_filters, properties)

    return decode_unsubscribe


def _decode_unsuback_3_1_1(data: bytes, start: int, end: int, flags: int) -> UnsubAck:
    _check_flags(flags, 0, "UNSUBACK")
    reader = FieldReader(data, start, end, "UNSUBACK")
    packet_id = reader.packet_id()
    reader.expect_end()
    return UnsubAck(packet_id)


def _decode_unsuback_5(data: bytes, start: int, end: int, flags: int) -> UnsubAck:
    _check_flags(flags, 0, "UNSUBACK")
    reader = FieldReader(data, start, end, "UNSUBACK")
    packet_id = reader.packet_id()
    properties = reader.properties(_UNSUBACK)
    reason_codes = [_check_reason_code(code, _UNSUBACK) for code in data[reader.position : end]]
    return UnsubAck(packet_id, reason_codes, properties)


def _decode_pingreq(data: bytes, start: int, end: int, flags: int) -> PingReq:
    _check_flags(flags, 0, "PINGREQ")
    if end != start:
        raise MalformedPacket("PINGREQ has a body; its remaining length must be 0")
    return PingReq()


def _decode_pingresp(data: bytes, start: int, end: int, flags: int) -> PingResp:
    _check_flags(flags, 0, "PINGRESP")
    if end != start:
        raise MalformedPacket("PINGRESP has a body; its remaining length must be 0")
    return PingResp()


def _decode_disconnect_3_1_1(data: bytes, start: int, end: int, flags: int) -> Disconnect:
    _check_flags(flags, 0, "DISCONNECT")
    if end != start:
        raise MalformedPacket("DISCONNECT has a body; on MQTT 3.1.1 its remaining length must be 0")
    return Disconnect()


def _decode_disconnect_5(data: bytes, start: int, end: int, flags: int) -> Disconnect:
    _check_flags(flags, 0, "DISCONNECT")
    if end == start:
        return Disconnect()
    reader = FieldReader(data, start, end, "DISCONNECT")
    reason_code = _check_reason_code(reader.byte("reason code"), _DISCONNECT)
    properties = {} if reader.at_end() else reader.properties(_DISCONNECT)
    reader.expect_end()
    return Disconnect(reason_code, properties)


def _decode_auth(data: bytes, start: int, end: int, flags: int) -> Auth:
    _check_flags(flags, 0, "AUTH")
    if end == start:
        return Auth()
    reader = FieldReader(data, start, end, "AUTH")
    reason_code = _check_reason_code(reader.byte("reason code"), _AUTH)
    properties = {} if reader.at_end() else reader.properties(_AUTH)
    reader.expect_end()
    if _AUTHENTICATION_METHOD not in properties:
        raise ProtocolError("AUTH has no Authentication Method")
    return Auth(reason_code, properties)


def _make_refusal(packet_type: int, error: type[MQTTError], reason: str) -> Decoder:
    message = f"{PacketType(packet_type).name if packet_type else 'packet type 0'}: {reason}"

    def refuse(data: bytes, start: int, end: int, flags: int) -> Packet:
        raise error(message)

    return refuse


@functools.cache
def _decoder_table(protocol_version: int, *, from_client: bool) -> tuple[Decoder, ...]:
    """Decoders indexed by packet type, for one protocol version and direction; built once
    and shared by every decoder of that kind.

    CONNECT is not in the table: :class:`PacketDecoder` decodes it itself because it
    decides the protocol version.
    """
    table: list[Decoder] = [
        _make_refusal(0, MalformedPacket, "packet type 0 is reserved"),
        _make_refusal(_CONNECT, ProtocolError, "unexpected CONNECT"),
        _decode_connack_5 if protocol_version >= 5 else _decode_connack_3_1_1,
        _make_publish_decoder(protocol_version, PUBLISH_FROM_CLIENT if from_client else _PUBLISH),
        _make_acknowledgement_decoder(PubAck, protocol_version),
        _make_acknowledgement_decoder(PubRec, protocol_version),
        _make_acknowledgement_decoder(PubRel, protocol_version),
        _make_acknowledgement_decoder(PubComp, protocol_version),
        _make_subscribe_decoder(protocol_version),
        _make_suback_decoder(protocol_version),
        _make_unsubscribe_decoder(protocol_version),
        _decode_unsuback_5 if protocol_version >= 5 else _decode_unsuback_3_1_1,
        _decode_pingreq,
        _decode_pingresp,
        _decode_disconnect_5 if protocol_version >= 5 else _decode_disconnect_3_1_1,
        _decode_auth
        if protocol_version >= 5
        else _make_refusal(_AUTH, MalformedPacket, "packet type 15 is reserved in MQTT 3.1.1"),
    ]
    if from_client:
        for server_only in (_CONNACK, _SUBACK, _UNSUBACK, _PINGRESP):
            table[server_only] = _make_refusal(
                server_only, ProtocolError, "only a server may send this packet"
            )
    return tuple(table)


_PACKET_NAMES: Final = ["packet type 0", *(packet_type.name for packet_type in PacketType)]

_SUPPORTED_LEVELS: Final = {
    "MQTT": (_MQTT_3_1_1, _MQTT_5),
    "MQIsdp": (_MQTT_3_1,),
}

# The smallest remaining length that needs 2, 3 and 4 bytes: below it, that many bytes is
# a non-minimal encoding.
_SMALLEST_VALUE_FOR_SIZE: Final = (0, 0, 0x80, 0x4000, 0x200000)


class PacketDecoder:
    """Turns the bytes of one connection into packets.

    Server side (``protocol_version=None``): the first packet must be CONNECT, which sets
    :attr:`protocol_version`; packets only a server may send, and a second CONNECT, are
    Protocol Errors. With a ``protocol_version`` the decoder reads packets of that version
    in either direction, as a client (or a test) does.

    :meth:`feed` returns the complete packets and keeps any partial packet for the next
    call. On a bad packet it raises the :class:`MQTTError` subclass to answer with; the
    error's ``packets`` holds the good packets decoded before it in that call. The
    decoder is then dead: every later :meth:`feed` raises the same error again.
    """

    def __init__(
        self, *, max_packet_size: int = MAXIMUM_PACKET_SIZE, protocol_version: int | None = None
    ) -> None:
        self.max_packet_size = max_packet_size
        self.protocol_version: int | None = protocol_version
        """The connection's protocol level; on the server side it is set as soon as CONNECT's
        protocol name and level are read and valid (even if the rest of CONNECT is not), so
        that the broker can answer a bad CONNECT in the client's version."""
        self._is_server = protocol_version is None
        self._awaiting_connect = protocol_version is None
        self._decoders: tuple[Decoder, ...] = (
            _decoder_table(protocol_version, from_client=False) if protocol_version is not None else ()
        )
        self._buffer = bytearray()
        # How many buffered bytes the next packet needs; feed does not parse before then, so a
        # large packet arriving in many chunks costs one copy per chunk, not one per feed.
        self._needed = 0
        self._error: MQTTError | None = None
        # The CONNECT that fixes the protocol version arrives before the version is known.
        self._connect_length_not_minimal = False

    def feed(self, received: bytes | bytearray | memoryview) -> list[Packet]:
        """Decode the packets ``received`` completes; raise :class:`MQTTError` on a bad one."""
        if self._error is not None:
            self._error.packets = []
            raise self._error
        buffer = self._buffer
        data: bytes
        if buffer:
            buffer += received
            if len(buffer) < self._needed:
                return []
            data = bytes(buffer)
            buffer.clear()
        elif not received:
            return []
        elif type(received) is bytes:
            data = received
        else:
            data = bytes(received)

        packets: list[Packet] = []
        offset = 0
        end = len(data)
        decoders = self._decoders
        max_packet_size = self.max_packet_size
        awaiting_connect = self._awaiting_connect
        self._needed = 0
        try:
            while end - offset >= 2:
                first_byte = data[offset]
                remaining_length = data[offset + 1]
                if remaining_length < 0x80:
                    header_size = 2
                else:
                    remaining_length, header_size = self._remaining_length(data, offset, end)
                    if not header_size:
                        break
                total = header_size + remaining_length
                if total > max_packet_size:
                    raise PacketTooLarge(
                        f"packet of {total} bytes exceeds the maximum packet size of {max_packet_size} bytes"
                    )
                packet_type = first_byte >> 4
                if awaiting_connect and packet_type != _CONNECT:
                    raise ProtocolError(f"the first packet must be CONNECT, not {_PACKET_NAMES[packet_type]}")
                if end - offset < total:
                    self._needed = total
                    break
                if packet_type == _CONNECT and (awaiting_connect or not self._is_server):
                    packet: Packet = self._decode_connect(
                        data, offset + header_size, offset + total, first_byte & 0x0F
                    )
                    decoders = self._decoders
                    awaiting_connect = False
                else:
                    packet = decoders[packet_type](
                        data, offset + header_size, offset + total, first_byte & 0x0F
                    )
                packets.append(packet)
                offset += total
        except MQTTError as error:
            error.packets = packets
            self._error = error
            self._buffer = bytearray()
            raise
        if offset < end:
            buffer += memoryview(data)[offset:]
            if self._needed <= len(buffer):
                self._needed = len(buffer) + 1
        return packets

    def _remaining_length(self, data: bytes, offset: int, end: int) -> tuple[int, int]:
        """(remaining length, fixed header size), or (0, 0) if the header is still incomplete."""
        value = 0
        shift = 0
        for size in range(1, 5):
            position = offset + size
            if position >= end:
                return 0, 0
            byte = data[position]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value < _SMALLEST_VALUE_FOR_SIZE[size]:
                    if self.protocol_version == _MQTT_5:
                        raise MalformedPacket("remaining length is not encoded in the fewest bytes")
                    if self.protocol_version is None:
                        self._connect_length_not_minimal = True
                return value, size + 1
            shift += 7
        raise MalformedPacket("remaining length is longer than 4 bytes")

    def _decode_connect(self, data: bytes, start: int, end: int, flags: int) -> Connect:
        _check_flags(flags, 0, "CONNECT")
        reader = FieldReader(data, start, end, "CONNECT")
        protocol_name = reader.string("protocol name")
        level = reader.byte("protocol level")
        supported = _SUPPORTED_LEVELS.get(protocol_name)
        if supported is None:
            raise ProtocolError(
                f"CONNECT names protocol {protocol_name!r}; expected 'MQTT' (or 'MQIsdp' for 3.1)"
            )
        if level not in supported:
            raise UnsupportedProtocolVersion(
                f"CONNECT asks for protocol {protocol_name!r} level {level}; supported: MQTT 3.1, 3.1.1 and 5.0",
                protocol_version=level,
            )
        if self._awaiting_connect:
            self.protocol_version = level
            self._decoders = _decoder_table(level, from_client=True)
            self._awaiting_connect = False
            if self._connect_length_not_minimal and level == _MQTT_5:
                raise MalformedPacket("remaining length is not encoded in the fewest bytes")
        with_properties = level >= _MQTT_5

        connect_flags = reader.byte("connect flags")
        if connect_flags & 0x01:
            raise MalformedPacket("CONNECT has the reserved connect flag set")
        has_will = connect_flags & 0x04
        will_qos = (connect_flags >> 3) & 3
        will_retain = connect_flags & 0x20 == 0x20
        has_password = connect_flags & 0x40
        has_username = connect_flags & 0x80
        if has_will:
            if will_qos == 3:
                raise MalformedPacket("CONNECT asks for will QoS 3")
        elif will_qos or will_retain:
            raise MalformedPacket("CONNECT sets will QoS or will retain without the will flag")
        if has_password and not has_username and not with_properties:
            raise ProtocolError(
                "CONNECT sets the password flag without the user name flag (not allowed in 3.1.1)"
            )
        keep_alive = reader.two_byte_integer("keep alive")
        properties = reader.properties(_CONNECT) if with_properties else {}

        client_id = reader.string("client identifier")
        will = None
        if has_will:
            will_properties = reader.properties(WILL) if with_properties else {}
            will_topic = reader.string("will topic")
            validate_topic_name(will_topic)
            will_payload = reader.binary("will payload")
            will = Will(will_topic, will_payload, will_qos, will_retain, will_properties)
        username = reader.string("user name") if has_username else None
        password = reader.binary("password") if has_password else None
        reader.expect_end()
        return Connect(
            client_id=client_id,
            protocol_version=level,
            protocol_name=protocol_name,
            clean_start=connect_flags & 0x02 == 0x02,
            keep_alive=keep_alive,
            username=username,
            password=password,
            will=will,
            properties=properties,
        )
