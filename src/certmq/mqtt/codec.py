"""The MQTT wire format, sans-io: bytes in, packets out (:class:`PacketDecoder`), and back (:func:`encode`).

Covers MQTT 3.1 (protocol level 3, CONNECT only differs), 3.1.1 (level 4) and 5.0 (level 5).
Everything the specifications call a Malformed Packet or a Protocol Error that can be seen
in a single packet is rejected here, with the exception type and reason code the peer
should be told; rules that need connection state (topic alias mapping, receive maximum,
session expiry on DISCONNECT...) belong to the connection.

The PUBLISH paths are the hot ones: every message a broker routes is decoded once and
encoded once per subscriber, so they avoid per-byte Python loops and work on ``bytes``
slices directly.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

from certmq.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
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
from certmq.mqtt.properties import ALLOWED_IN, PROPERTY_TYPES, REPEATABLE, WILL, PropertyId, PropertyType
from certmq.mqtt.reason_codes import SUBACK_FAILURE_3_1_1, ReasonCode
from certmq.mqtt.topics import parse_shared_subscription, validate_topic_filter, validate_topic_name

MAXIMUM_REMAINING_LENGTH: Final = 268_435_455
"""The largest value a Variable Byte Integer can hold (four bytes of seven bits)."""

MAXIMUM_PACKET_SIZE: Final = MAXIMUM_REMAINING_LENGTH + 5
"""The largest packet the wire format allows: the largest body plus a five-byte fixed header."""

_MAXIMUM_STRING_LENGTH: Final = 0xFFFF

_P = PacketType
_R = ReasonCode

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

# --------------------------------------------------------------------------------------
# Reason codes each packet type may carry (MQTT 5.0 2.4 and each packet's section). A code
# outside its table is a Malformed Packet.

_REASON_CODES_5: Final[dict[int, frozenset[int]]] = {
    _P.CONNACK: frozenset(
        {
            _R.SUCCESS,
            _R.UNSPECIFIED_ERROR,
            _R.MALFORMED_PACKET,
            _R.PROTOCOL_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR,
            _R.UNSUPPORTED_PROTOCOL_VERSION,
            _R.CLIENT_IDENTIFIER_NOT_VALID,
            _R.BAD_USER_NAME_OR_PASSWORD,
            _R.NOT_AUTHORIZED,
            _R.SERVER_UNAVAILABLE,
            _R.SERVER_BUSY,
            _R.BANNED,
            _R.BAD_AUTHENTICATION_METHOD,
            _R.TOPIC_NAME_INVALID,
            _R.PACKET_TOO_LARGE,
            _R.QUOTA_EXCEEDED,
            _R.PAYLOAD_FORMAT_INVALID,
            _R.RETAIN_NOT_SUPPORTED,
            _R.QOS_NOT_SUPPORTED,
            _R.USE_ANOTHER_SERVER,
            _R.SERVER_MOVED,
            _R.CONNECTION_RATE_EXCEEDED,
        }
    ),
    _P.PUBACK: frozenset(
        {
            _R.SUCCESS,
            _R.NO_MATCHING_SUBSCRIBERS,
            _R.UNSPECIFIED_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR,
            _R.NOT_AUTHORIZED,
            _R.TOPIC_NAME_INVALID,
            _R.PACKET_IDENTIFIER_IN_USE,
            _R.QUOTA_EXCEEDED,
            _R.PAYLOAD_FORMAT_INVALID,
        }
    ),
    _P.PUBREL: frozenset({_R.SUCCESS, _R.PACKET_IDENTIFIER_NOT_FOUND}),
    _P.SUBACK: frozenset(
        {
            _R.GRANTED_QOS_0,
            _R.GRANTED_QOS_1,
            _R.GRANTED_QOS_2,
            _R.UNSPECIFIED_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR,
            _R.NOT_AUTHORIZED,
            _R.TOPIC_FILTER_INVALID,
            _R.PACKET_IDENTIFIER_IN_USE,
            _R.QUOTA_EXCEEDED,
            _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        }
    ),
    _P.UNSUBACK: frozenset(
        {
            _R.SUCCESS,
            _R.NO_SUBSCRIPTION_EXISTED,
            _R.UNSPECIFIED_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR,
            _R.NOT_AUTHORIZED,
            _R.TOPIC_FILTER_INVALID,
            _R.PACKET_IDENTIFIER_IN_USE,
        }
    ),
    _P.DISCONNECT: frozenset(
        {
            _R.NORMAL_DISCONNECTION,
            _R.DISCONNECT_WITH_WILL_MESSAGE,
            _R.UNSPECIFIED_ERROR,
            _R.MALFORMED_PACKET,
            _R.PROTOCOL_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR,
            _R.NOT_AUTHORIZED,
            _R.SERVER_BUSY,
            _R.SERVER_SHUTTING_DOWN,
            _R.KEEP_ALIVE_TIMEOUT,
            _R.SESSION_TAKEN_OVER,
            _R.TOPIC_FILTER_INVALID,
            _R.TOPIC_NAME_INVALID,
            _R.RECEIVE_MAXIMUM_EXCEEDED,
            _R.TOPIC_ALIAS_INVALID,
            _R.PACKET_TOO_LARGE,
            _R.MESSAGE_RATE_TOO_HIGH,
            _R.QUOTA_EXCEEDED,
            _R.ADMINISTRATIVE_ACTION,
            _R.PAYLOAD_FORMAT_INVALID,
            _R.RETAIN_NOT_SUPPORTED,
            _R.QOS_NOT_SUPPORTED,
            _R.USE_ANOTHER_SERVER,
            _R.SERVER_MOVED,
            _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            _R.CONNECTION_RATE_EXCEEDED,
            _R.MAXIMUM_CONNECT_TIME,
            _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        }
    ),
    _P.AUTH: frozenset({_R.SUCCESS, _R.CONTINUE_AUTHENTICATION, _R.RE_AUTHENTICATE}),
}
_REASON_CODES_5[_P.PUBREC] = _REASON_CODES_5[_P.PUBACK]
_REASON_CODES_5[_P.PUBCOMP] = _REASON_CODES_5[_P.PUBREL]

_CONNACK_RETURN_CODES_3_1_1: Final = frozenset(range(6))
_SUBACK_RETURN_CODES_3_1_1: Final = frozenset({0, 1, 2, SUBACK_FAILURE_3_1_1})

# --------------------------------------------------------------------------------------
# Properties

_PUBLISH_FROM_CLIENT: Final = 16
"""Property context of a PUBLISH a client sends: like PUBLISH, without Subscription Identifier."""

_CONTEXT_NAMES: Final[dict[int, str]] = {
    WILL: "will properties",
    _PUBLISH_FROM_CLIENT: "PUBLISH from a client",
}
_CONTEXT_NAMES.update({packet_type: packet_type.name for packet_type in PacketType})

_ALLOWED_PROPERTIES: Final[dict[int, frozenset[int]]] = {
    context: frozenset(identifier for identifier, where in ALLOWED_IN.items() if context in where)
    for context in [WILL, *PacketType]
}
_ALLOWED_PROPERTIES[_PUBLISH_FROM_CLIENT] = _ALLOWED_PROPERTIES[_P.PUBLISH] - {
    PropertyId.SUBSCRIPTION_IDENTIFIER
}

# Properties with a limited range; a value outside it is a Protocol Error.
_MUST_BE_0_OR_1: Final = 1
_MUST_NOT_BE_0: Final = 2
_VALUE_RULES: Final[dict[int, int]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: _MUST_BE_0_OR_1,
    PropertyId.REQUEST_PROBLEM_INFORMATION: _MUST_BE_0_OR_1,
    PropertyId.REQUEST_RESPONSE_INFORMATION: _MUST_BE_0_OR_1,
    PropertyId.MAXIMUM_QOS: _MUST_BE_0_OR_1,
    PropertyId.RETAIN_AVAILABLE: _MUST_BE_0_OR_1,
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: _MUST_BE_0_OR_1,
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: _MUST_BE_0_OR_1,
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: _MUST_BE_0_OR_1,
    PropertyId.RECEIVE_MAXIMUM: _MUST_NOT_BE_0,
    PropertyId.TOPIC_ALIAS: _MUST_NOT_BE_0,
    PropertyId.MAXIMUM_PACKET_SIZE: _MUST_NOT_BE_0,
    PropertyId.SUBSCRIPTION_IDENTIFIER: _MUST_NOT_BE_0,
}
# Plain ints so that the hot loops compare ints, not enum members.
_PROPERTY_TYPE_BY_ID: Final[dict[int, int]] = {int(key): int(value) for key, value in PROPERTY_TYPES.items()}
_BYTE = int(PropertyType.BYTE)
_TWO_BYTE_INTEGER = int(PropertyType.TWO_BYTE_INTEGER)
_FOUR_BYTE_INTEGER = int(PropertyType.FOUR_BYTE_INTEGER)
_VARIABLE_BYTE_INTEGER = int(PropertyType.VARIABLE_BYTE_INTEGER)
_UTF8_STRING = int(PropertyType.UTF8_STRING)
_BINARY = int(PropertyType.BINARY)
_UTF8_STRING_PAIR = int(PropertyType.UTF8_STRING_PAIR)
_USER_PROPERTY = int(PropertyId.USER_PROPERTY)
_SUBSCRIPTION_IDENTIFIER = int(PropertyId.SUBSCRIPTION_IDENTIFIER)
_TOPIC_ALIAS = int(PropertyId.TOPIC_ALIAS)
_RESPONSE_TOPIC = int(PropertyId.RESPONSE_TOPIC)
_AUTHENTICATION_METHOD = int(PropertyId.AUTHENTICATION_METHOD)
_AUTHENTICATION_DATA = int(PropertyId.AUTHENTICATION_DATA)

_unpack_uint32 = struct.Struct(">I").unpack_from
_pack_uint16 = struct.Struct(">H").pack
_pack_uint32 = struct.Struct(">I").pack
_pack_two_bytes_and_uint16 = struct.Struct(">BBH").pack


# "Message Expiry Interval" for PropertyId.MESSAGE_EXPIRY_INTERVAL, for error messages.
_PROPERTY_NAMES: Final[dict[int, str]] = {
    int(identifier): identifier.name.replace("_", " ").title().replace("Qos", "QoS")
    for identifier in PropertyId
}


# --------------------------------------------------------------------------------------
# Decoding


class _Reader:
    """A cursor over one packet body, ``data[position:end]``, that never reads past ``end``."""

    __slots__ = ("data", "end", "packet_name", "position")

    def __init__(self, data: bytes, position: int, end: int, packet_name: str) -> None:
        self.data = data
        self.position = position
        self.end = end
        self.packet_name = packet_name

    def truncated(self, what: str) -> MalformedPacket:
        return MalformedPacket(f"{self.packet_name} ends in the middle of its {what}")

    def at_end(self) -> bool:
        return self.position >= self.end

    def expect_end(self) -> None:
        if self.position != self.end:
            raise MalformedPacket(
                f"{self.packet_name} has {self.end - self.position} unexpected byte(s) after its last field"
            )

    def byte(self, what: str) -> int:
        position = self.position
        if position >= self.end:
            raise self.truncated(what)
        self.position = position + 1
        return self.data[position]

    def two_byte_integer(self, what: str) -> int:
        position = self.position
        if position + 2 > self.end:
            raise self.truncated(what)
        self.position = position + 2
        return self.data[position] << 8 | self.data[position + 1]

    def four_byte_integer(self, what: str) -> int:
        position = self.position
        if position + 4 > self.end:
            raise self.truncated(what)
        self.position = position + 4
        value: int = _unpack_uint32(self.data, position)[0]
        return value

    def packet_id(self) -> int:
        packet_id = self.two_byte_integer("packet identifier")
        if packet_id == 0:
            raise ProtocolError(f"{self.packet_name} has packet identifier 0; packet identifiers start at 1")
        return packet_id

    def variable_byte_integer(self, what: str) -> int:
        value = 0
        shift = 0
        data = self.data
        for size in range(1, 5):
            position = self.position
            if position >= self.end:
                raise self.truncated(what)
            byte = data[position]
            self.position = position + 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if size > 1 and byte == 0:
                    # MQTT 5.0 1.5.5: the encoding must use the fewest bytes possible.
                    raise MalformedPacket(f"{self.packet_name}: {what} is not encoded in the fewest bytes")
                return value
            shift += 7
        raise MalformedPacket(
            f"{self.packet_name}: {what} is longer than the 4 bytes a Variable Byte Integer may use"
        )

    def binary(self, what: str) -> bytes:
        length = self.two_byte_integer(f"{what} length")
        position = self.position
        if position + length > self.end:
            raise self.truncated(what)
        self.position = position + length
        return self.data[position : position + length]

    def string(self, what: str) -> str:
        return _decode_utf8(self.binary(what), self.packet_name, what)

    def properties(self, context: int) -> Properties:
        length = self.variable_byte_integer("property length")
        if length == 0:
            return {}
        stop = self.position + length
        if stop > self.end:
            raise MalformedPacket(
                f"{self.packet_name}: property length {length} runs past the end of the packet"
            )
        properties = _read_properties(self.data, self.position, stop, context, self.packet_name)
        self.position = stop
        return properties


def _decode_utf8(raw: bytes, packet_name: str, what: str) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        raise MalformedPacket(f"{packet_name}: {what} is not well-formed UTF-8 ({error.reason})") from None
    if "\x00" in text:
        raise MalformedPacket(f"{packet_name}: {what} contains the null character U+0000")
    return text


def _read_properties(data: bytes, position: int, stop: int, context: int, packet_name: str) -> Properties:
    """Read the properties in ``data[position:stop]`` (``stop`` is where the property length ends them).

    Written out field by field rather than through :class:`_Reader`: 5.0 PUBLISH packets
    often carry properties, and this loop runs for each of them.
    """
    allowed = _ALLOWED_PROPERTIES[context]
    properties: Properties = {}
    value: Any
    while position < stop:
        identifier = data[position]
        position += 1
        property_type = _PROPERTY_TYPE_BY_ID.get(identifier)
        if property_type is None:
            # Identifiers are Variable Byte Integers, but every defined one fits in one byte.
            raise MalformedPacket(f"{packet_name}: unknown property identifier 0x{identifier:02X}")
        if identifier not in allowed:
            raise ProtocolError(
                f"{_PROPERTY_NAMES[identifier]} is not allowed in {_CONTEXT_NAMES[context]} (MQTT 5.0 2.2.2.2)"
            )
        if property_type >= _UTF8_STRING:  # strings, binary data and string pairs
            if position + 2 > stop:
                raise _truncated_property(packet_name, identifier)
            value_end = position + 2 + (data[position] << 8 | data[position + 1])
            if value_end > stop:
                raise _truncated_property(packet_name, identifier)
            value = data[position + 2 : value_end]
            position = value_end
            if property_type != _BINARY:
                value = _decode_utf8(value, packet_name, _PROPERTY_NAMES[identifier])
            if property_type == _UTF8_STRING_PAIR:
                if position + 2 > stop:
                    raise _truncated_property(packet_name, identifier)
                value_end = position + 2 + (data[position] << 8 | data[position + 1])
                if value_end > stop:
                    raise _truncated_property(packet_name, identifier)
                value = (
                    value,
                    _decode_utf8(data[position + 2 : value_end], packet_name, "User Property"),
                )
                position = value_end
        elif property_type == _FOUR_BYTE_INTEGER:
            if position + 4 > stop:
                raise _truncated_property(packet_name, identifier)
            value = _unpack_uint32(data, position)[0]
            position += 4
        elif property_type == _BYTE:
            if position >= stop:
                raise _truncated_property(packet_name, identifier)
            value = data[position]
            position += 1
        elif property_type == _TWO_BYTE_INTEGER:
            if position + 2 > stop:
                raise _truncated_property(packet_name, identifier)
            value = data[position] << 8 | data[position + 1]
            position += 2
        else:
            reader = _Reader(data, position, stop, packet_name)
            value = reader.variable_byte_integer(_PROPERTY_NAMES[identifier])
            position = reader.position

        rule = _VALUE_RULES.get(identifier)
        if rule is not None:
            if rule == _MUST_BE_0_OR_1 and value > 1:
                raise ProtocolError(
                    f"{packet_name}: {_PROPERTY_NAMES[identifier]} is {value}; it may only be 0 or 1"
                )
            if rule == _MUST_NOT_BE_0 and value == 0:
                raise ProtocolError(f"{packet_name}: {_PROPERTY_NAMES[identifier]} may not be 0")

        if identifier == _USER_PROPERTY:
            user_properties = properties.get(identifier)
            if user_properties is None:
                properties[identifier] = [value]
            else:
                user_properties.append(value)
        elif identifier == _SUBSCRIPTION_IDENTIFIER:
            identifiers = properties.setdefault(identifier, [])
            if identifiers and context != _PUBLISH:
                raise ProtocolError(f"{packet_name} may carry only one Subscription Identifier")
            identifiers.append(value)
        elif identifier in properties:
            raise ProtocolError(f"{packet_name} carries {_PROPERTY_NAMES[identifier]} more than once")
        else:
            properties[identifier] = value

    if _RESPONSE_TOPIC in properties:
        validate_topic_name(properties[_RESPONSE_TOPIC])
    if _AUTHENTICATION_DATA in properties and _AUTHENTICATION_METHOD not in properties:
        raise ProtocolError(f"{packet_name} carries Authentication Data without an Authentication Method")
    return properties


def _truncated_property(packet_name: str, identifier: int) -> MalformedPacket:
    return MalformedPacket(f"{packet_name}: {_PROPERTY_NAMES[identifier]} runs past the property length")


def _check_flags(flags: int, expected: int, packet_name: str) -> None:
    if flags != expected:
        raise MalformedPacket(
            f"{packet_name} has fixed header flags 0b{flags:04b}; they must be 0b{expected:04b} (reserved)"
        )


def _check_reason_code(reason_code: int, packet_type: int) -> int:
    if reason_code not in _REASON_CODES_5[packet_type]:
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
                properties = _read_properties(data, position + 1, stop, property_context, "PUBLISH")
                position = stop
            else:
                reader = _Reader(data, position, end, "PUBLISH")
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
        reader = _Reader(data, start, end, packet_name)
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
    reader = _Reader(data, start, end, "CONNACK")
    acknowledge_flags = reader.byte("acknowledge flags")
    if acknowledge_flags & 0xFE:
        raise MalformedPacket("CONNACK has reserved acknowledge flag bits set")
    return_code = reader.byte("return code")
    reader.expect_end()
    if return_code not in _CONNACK_RETURN_CODES_3_1_1:
        raise MalformedPacket(f"0x{return_code:02X} is not a valid CONNACK return code")
    if return_code and acknowledge_flags:
        raise ProtocolError("CONNACK refuses the connection but says a session is present")
    return ConnAck(return_code, acknowledge_flags == 1)


def _decode_connack_5(data: bytes, start: int, end: int, flags: int) -> ConnAck:
    _check_flags(flags, 0, "CONNACK")
    reader = _Reader(data, start, end, "CONNACK")
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
        reader = _Reader(data, start, end, "SUBSCRIBE")
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
    valid_codes = _REASON_CODES_5[_SUBACK] if with_properties else _SUBACK_RETURN_CODES_3_1_1

    def decode_suback(data: bytes, start: int, end: int, flags: int) -> SubAck:
        _check_flags(flags, 0, "SUBACK")
        reader = _Reader(data, start, end, "SUBACK")
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
        reader = _Reader(data, start, end, "UNSUBSCRIBE")
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
    reader = _Reader(data, start, end, "UNSUBACK")
    packet_id = reader.packet_id()
    reader.expect_end()
    return UnsubAck(packet_id)


def _decode_unsuback_5(data: bytes, start: int, end: int, flags: int) -> UnsubAck:
    _check_flags(flags, 0, "UNSUBACK")
    reader = _Reader(data, start, end, "UNSUBACK")
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
    reader = _Reader(data, start, end, "DISCONNECT")
    reason_code = _check_reason_code(reader.byte("reason code"), _DISCONNECT)
    properties = {} if reader.at_end() else reader.properties(_DISCONNECT)
    reader.expect_end()
    return Disconnect(reason_code, properties)


def _decode_auth(data: bytes, start: int, end: int, flags: int) -> Auth:
    _check_flags(flags, 0, "AUTH")
    if end == start:
        return Auth()
    reader = _Reader(data, start, end, "AUTH")
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
        _make_publish_decoder(protocol_version, _PUBLISH_FROM_CLIENT if from_client else _PUBLISH),
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
        reader = _Reader(data, start, end, "CONNECT")
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


# --------------------------------------------------------------------------------------
# Encoding

_ONE_BYTE: Final = [bytes((value,)) for value in range(256)]


def _variable_byte_integer(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    if value > MAXIMUM_REMAINING_LENGTH:
        raise ValueError(
            f"{value} does not fit in a Variable Byte Integer (at most {MAXIMUM_REMAINING_LENGTH})"
        )
    encoded = bytearray()
    while value >= 0x80:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _encode_binary(value: bytes) -> bytes:
    if len(value) > _MAXIMUM_STRING_LENGTH:
        raise ValueError(f"{len(value)} bytes do not fit in an MQTT string or binary field (at most 65535)")
    return _pack_uint16(len(value)) + value


def _encode_string(value: str) -> bytes:
    return _encode_binary(value.encode())


def _encode_property_value(property_type: int, value: Any) -> bytes:
    if property_type == _BYTE:
        return bytes((value,))
    if property_type == _TWO_BYTE_INTEGER:
        return _pack_uint16(value)
    if property_type == _FOUR_BYTE_INTEGER:
        return _pack_uint32(value)
    if property_type == _VARIABLE_BYTE_INTEGER:
        return _variable_byte_integer(value)
    if property_type == _UTF8_STRING:
        return _encode_string(value)
    if property_type == _BINARY:
        return _encode_binary(value)
    name, text = value
    return _encode_string(name) + _encode_string(text)


def _encode_properties(properties: Mapping[int, Any]) -> bytes:
    """The property length followed by the properties (MQTT 5.0 2.2.2)."""
    if not properties:
        return b"\x00"
    parts: list[bytes] = []
    for identifier, value in properties.items():
        property_type = _PROPERTY_TYPE_BY_ID[identifier]
        prefix = _ONE_BYTE[identifier]
        if identifier in REPEATABLE:
            for item in value:
                parts.append(prefix)
                parts.append(_encode_property_value(property_type, item))
        else:
            parts.append(prefix)
            parts.append(_encode_property_value(property_type, value))
    body = b"".join(parts)
    return _variable_byte_integer(len(body)) + body


def _packet(first_byte: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _ONE_BYTE[first_byte] + _variable_byte_integer(len(body)) + body


def _encode_connect(packet: Connect, protocol_version: int) -> bytes:
    with_properties = protocol_version >= _MQTT_5
    protocol_name = packet.protocol_name
    if protocol_version == _MQTT_3_1 and protocol_name == "MQTT":
        protocol_name = "MQIsdp"  # the default name follows the level
    will = packet.will
    connect_flags = packet.clean_start << 1
    payload = [_encode_string(packet.client_id)]
    if will is not None:
        connect_flags |= 0x04 | will.qos << 3 | will.retain << 5
        if with_properties:
            payload.append(_encode_properties(will.properties))
        payload.append(_encode_string(will.topic))
        payload.append(_encode_binary(will.payload))
    if packet.username is not None:
        connect_flags |= 0x80
        payload.append(_encode_string(packet.username))
    if packet.password is not None:
        connect_flags |= 0x40
        payload.append(_encode_binary(packet.password))
    return _packet(
        0x10,
        _encode_string(protocol_name),
        bytes((protocol_version, connect_flags)),
        _pack_uint16(packet.keep_alive),
        _encode_properties(packet.properties) if with_properties else b"",
        *payload,
    )


def _encode_connack(packet: ConnAck, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        return bytes((0x20, 2, packet.session_present, packet.reason_code))
    return _packet(
        0x20, bytes((packet.session_present, packet.reason_code)), _encode_properties(packet.properties)
    )


def _encode_publish(packet: Publish, protocol_version: int) -> bytes:
    topic = packet.topic.encode()
    topic_length = len(topic)
    if topic_length > _MAXIMUM_STRING_LENGTH:
        raise ValueError(f"topic name of {topic_length} bytes is longer than 65535 bytes")
    qos = packet.qos
    payload = packet.payload
    if protocol_version < _MQTT_5:
        properties = b""
    elif packet.properties:
        properties = _encode_properties(packet.properties)
    else:
        properties = b"\x00"
    remaining_length = 2 + topic_length + len(properties) + len(payload)
    if qos:
        remaining_length += 2
    first_byte = 0x30 | qos << 1 | packet.retain | packet.dup << 3
    if remaining_length < 0x80:
        fixed_header_and_topic_length = _pack_two_bytes_and_uint16(first_byte, remaining_length, topic_length)
    else:
        fixed_header_and_topic_length = (
            _ONE_BYTE[first_byte] + _variable_byte_integer(remaining_length) + _pack_uint16(topic_length)
        )
    if qos:
        if packet.packet_id is None:
            raise ValueError("a PUBLISH with QoS 1 or 2 needs a packet identifier")
        return b"".join(
            (fixed_header_and_topic_length, topic, _pack_uint16(packet.packet_id), properties, payload)
        )
    return b"".join((fixed_header_and_topic_length, topic, properties, payload))


def _make_acknowledgement_encoder(first_byte: int) -> Callable[[Any, int], bytes]:
    def encode_acknowledgement(packet: PubAck | PubRec | PubRel | PubComp, protocol_version: int) -> bytes:
        packet_id = _pack_uint16(packet.packet_id)
        if protocol_version < _MQTT_5 or not (packet.reason_code or packet.properties):
            return bytes((first_byte, 2)) + packet_id
        if not packet.properties:
            return bytes((first_byte, 3)) + packet_id + _ONE_BYTE[packet.reason_code]
        return _packet(
            first_byte, packet_id, _ONE_BYTE[packet.reason_code], _encode_properties(packet.properties)
        )

    return encode_acknowledgement


def _encode_subscribe(packet: Subscribe, protocol_version: int) -> bytes:
    with_properties = protocol_version >= _MQTT_5
    parts = [_pack_uint16(packet.packet_id)]
    if with_properties:
        parts.append(_encode_properties(packet.properties))
    for subscription in packet.subscriptions:
        parts.append(_encode_string(subscription.topic_filter))
        options = subscription.qos
        if with_properties:
            options |= (
                subscription.no_local << 2
                | subscription.retain_as_published << 3
                | subscription.retain_handling << 4
            )
        parts.append(_ONE_BYTE[options])
    return _packet(0x82, *parts)


def _encode_suback(packet: SubAck, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        # 3.1.1 knows a single failure code.
        codes = bytes(code if code < 0x80 else SUBACK_FAILURE_3_1_1 for code in packet.reason_codes)
        return _packet(0x90, _pack_uint16(packet.packet_id), codes)
    return _packet(
        0x90,
        _pack_uint16(packet.packet_id),
        _encode_properties(packet.properties),
        bytes(packet.reason_codes),
    )


def _encode_unsubscribe(packet: Unsubscribe, protocol_version: int) -> bytes:
    parts = [_pack_uint16(packet.packet_id)]
    if protocol_version >= _MQTT_5:
        parts.append(_encode_properties(packet.properties))
    parts.extend(_encode_string(topic_filter) for topic_filter in packet.topic_filters)
    return _packet(0xA2, *parts)


def _encode_unsuback(packet: UnsubAck, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        return b"\xb0\x02" + _pack_uint16(packet.packet_id)
    return _packet(
        0xB0,
        _pack_uint16(packet.packet_id),
        _encode_properties(packet.properties),
        bytes(packet.reason_codes),
    )


def _encode_pingreq(packet: PingReq, protocol_version: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(packet: PingResp, protocol_version: int) -> bytes:
    return b"\xd0\x00"


def _encode_disconnect(packet: Disconnect, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5 or not (packet.reason_code or packet.properties):
        return b"\xe0\x00"
    if not packet.properties:
        return b"\xe0\x01" + _ONE_BYTE[packet.reason_code]
    return _packet(0xE0, _ONE_BYTE[packet.reason_code], _encode_properties(packet.properties))


def _encode_auth(packet: Auth, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        raise ValueError("AUTH exists only in MQTT 5.0")
    if not (packet.reason_code or packet.properties):
        return b"\xf0\x00"
    return _packet(0xF0, _ONE_BYTE[packet.reason_code], _encode_properties(packet.properties))


_ENCODERS: Final[dict[type, Callable[[Any, int], bytes]]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: _make_acknowledgement_encoder(0x40),
    PubRec: _make_acknowledgement_encoder(0x50),
    PubRel: _make_acknowledgement_encoder(0x62),
    PubComp: _make_acknowledgement_encoder(0x70),
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: _encode_pingreq,
    PingResp: _encode_pingresp,
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


def encode(packet: Packet, protocol_version: int) -> bytes:
    """The bytes of ``packet`` for a connection speaking ``protocol_version`` (3, 4 or 5).

    On 3.1 and 3.1.1, properties and 5.0-only fields are left out. For CONNECT the level
    written is ``protocol_version`` (so a test can ask for an unsupported one). The encoder
    trusts its input: it does not repeat the decoder's validation. Fields too large for the
    wire format raise :class:`ValueError`.
    """
    return _ENCODERS[type(packet)](packet, protocol_version)


def encode_properties(properties: Mapping[int, Any]) -> bytes:
    """``properties`` as MQTT 5.0 writes them in a packet (their length, then each one), for
    keeping them outside a packet; :func:`decode_properties` reads them back."""
    return _encode_properties(properties)


def decode_properties(data: bytes, position: int, context: int) -> tuple[Properties, int]:
    """The properties :func:`encode_properties` wrote at ``data[position:]``, checked as those of
    packet type ``context`` (or ``WILL``), and the position where they end."""
    reader = _Reader(data, position, len(data), "stored properties")
    length = reader.variable_byte_integer("property length")
    stop = reader.position + length
    if stop > len(data):
        raise MalformedPacket("stored properties run past the end of their record")
    return _read_properties(data, reader.position, stop, context, "stored properties"), stop
