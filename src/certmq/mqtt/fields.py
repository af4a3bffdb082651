"""The fields MQTT packets are made of (MQTT 5.0 1.5 and 2.2.2), read and written: integers,
UTF-8 strings, binary data and property lists.

:class:`FieldReader` reads the fields of one packet body without reading past its end;
:func:`read_properties` reads a property list and checks it against the tables of
:mod:`certmq.mqtt.properties`; the ``encode_*`` functions write them. :mod:`certmq.mqtt.decoding`
and :mod:`certmq.mqtt.encoding` build packets from these.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from certmq.mqtt.errors import MalformedPacket, ProtocolError
from certmq.mqtt.packets import PacketType, Properties
from certmq.mqtt.properties import (
    ALLOWED_PROPERTIES,
    CONTEXT_NAMES,
    MUST_BE_0_OR_1,
    MUST_NOT_BE_0,
    PROPERTY_NAMES,
    PROPERTY_TYPES,
    REPEATABLE,
    VALUE_RULES,
    PropertyId,
    PropertyType,
)
from certmq.mqtt.topics import validate_topic_name

MAXIMUM_REMAINING_LENGTH: Final = 268_435_455
"""The largest value a Variable Byte Integer can hold (four bytes of seven bits)."""

MAXIMUM_PACKET_SIZE: Final = MAXIMUM_REMAINING_LENGTH + 5
"""The largest packet the wire format allows: the largest body plus a five-byte fixed header."""

_MAXIMUM_STRING_LENGTH: Final = 0xFFFF

# Plain ints so that the hot loops compare ints, not enum members: reading an enum member costs
# a lookup each time.
_PUBLISH: Final = int(PacketType.PUBLISH)
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
_RESPONSE_TOPIC = int(PropertyId.RESPONSE_TOPIC)
_AUTHENTICATION_METHOD = int(PropertyId.AUTHENTICATION_METHOD)
_AUTHENTICATION_DATA = int(PropertyId.AUTHENTICATION_DATA)

# Rebound here: Python calls a method of an imported name through a bound method object, one
# allocation per call, where it calls that of a module's own name directly.
_VALUE_RULES: Final = VALUE_RULES

_unpack_uint32 = struct.Struct(">I").unpack_from
pack_uint16 = struct.Struct(">H").pack
_pack_uint32 = struct.Struct(">I").pack


# --------------------------------------------------------------------------------------
# Reading


class FieldReader:
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
        return decode_utf8(self.binary(what), self.packet_name, what)

    def properties(self, context: int) -> Properties:
        length = self.variable_byte_integer("property length")
        if length == 0:
            return {}
        stop = self.position + length
        if stop > self.end:
            raise MalformedPacket(
                f"{self.packet_name}: property length {length} runs past the end of the packet"
            )
        properties = read_properties(self.data, self.position, stop, context, self.packet_name)
        self.position = stop
        return properties


def decode_utf8(raw: bytes, packet_name: str, what: str) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        raise MalformedPacket(f"{packet_name}: {what} is not well-formed UTF-8 ({error.reason})") from None
    if "\x00" in text:
        raise MalformedPacket(f"{packet_name}: {what} contains the null character U+0000")
    return text


def read_properties(data: bytes, position: int, stop: int, context: int, packet_name: str) -> Properties:
    """Read the properties in ``data[position:stop]`` (``stop`` is where the property length ends them).

    Written out field by field rather than through :class:`FieldReader`: 5.0 PUBLISH packets
    often carry properties, and this loop runs for each of them.
    """
    allowed = ALLOWED_PROPERTIES[context]
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
                f"{PROPERTY_NAMES[identifier]} is not allowed in {CONTEXT_NAMES[context]} (MQTT 5.0 2.2.2.2)"
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
                value = decode_utf8(value, packet_name, PROPERTY_NAMES[identifier])
            if property_type == _UTF8_STRING_PAIR:
                if position + 2 > stop:
                    raise _truncated_property(packet_name, identifier)
                value_end = position + 2 + (data[position] << 8 | data[position + 1])
                if value_end > stop:
                    raise _truncated_property(packet_name, identifier)
                value = (
                    value,
                    decode_utf8(data[position + 2 : value_end], packet_name, "User Property"),
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
            reader = FieldReader(data, position, stop, packet_name)
            value = reader.variable_byte_integer(PROPERTY_NAMES[identifier])
            position = reader.position

        rule = _VALUE_RULES.get(identifier)
        if rule is not None:
            if rule == MUST_BE_0_OR_1 and value > 1:
                raise ProtocolError(
                    f"{packet_name}: {PROPERTY_NAMES[identifier]} is {value}; it may only be 0 or 1"
                )
            if rule == MUST_NOT_BE_0 and value == 0:
                raise ProtocolError(f"{packet_name}: {PROPERTY_NAMES[identifier]} may not be 0")

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
            raise ProtocolError(f"{packet_name} carries {PROPERTY_NAMES[identifier]} more than once")
        else:
            properties[identifier] = value

    if _RESPONSE_TOPIC in properties:
        validate_topic_name(properties[_RESPONSE_TOPIC])
    if _AUTHENTICATION_DATA in properties and _AUTHENTICATION_METHOD not in properties:
        raise ProtocolError(f"{packet_name} carries Authentication Data without an Authentication Method")
    return properties


def _truncated_property(packet_name: str, identifier: int) -> MalformedPacket:
    return MalformedPacket(f"{packet_name}: {PROPERTY_NAMES[identifier]} runs past the property length")


# --------------------------------------------------------------------------------------
# Writing

ONE_BYTE: Final = [bytes((value,)) for value in range(256)]


def encode_variable_byte_integer(value: int) -> bytes:
    if value < 0x80:
        return ONE_BYTE[value]
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


def encode_binary(value: bytes) -> bytes:
    if len(value) > _MAXIMUM_STRING_LENGTH:
        raise ValueError(f"{len(value)} bytes do not fit in an MQTT string or binary field (at most 65535)")
    return pack_uint16(len(value)) + value


def encode_string(value: str) -> bytes:
    return encode_binary(value.encode())


def _encode_property_value(property_type: int, value: Any) -> bytes:
    if property_type == _BYTE:
        return bytes((value,))
    if property_type == _TWO_BYTE_INTEGER:
        return pack_uint16(value)
    if property_type == _FOUR_BYTE_INTEGER:
        return _pack_uint32(value)
    if property_type == _VARIABLE_BYTE_INTEGER:
        return encode_variable_byte_integer(value)
    if property_type == _UTF8_STRING:
        return encode_string(value)
    if property_type == _BINARY:
        return encode_binary(value)
    name, text = value
    return encode_string(name) + encode_string(text)


def encode_properties(properties: Mapping[int, Any]) -> bytes:
    """The property length followed by the properties (MQTT 5.0 2.2.2), as a packet carries them
    and as they are kept outside a packet (:func:`decode_properties` reads them back)."""
    if not properties:
        return b"\x00"
    parts: list[bytes] = []
    for identifier, value in properties.items():
        property_type = _PROPERTY_TYPE_BY_ID[identifier]
        prefix = ONE_BYTE[identifier]
        if identifier in REPEATABLE:
            for item in value:
                parts.append(prefix)
                parts.append(_encode_property_value(property_type, item))
        else:
            parts.append(prefix)
            parts.append(_encode_property_value(property_type, value))
    body = b"".join(parts)
    return encode_variable_byte_integer(len(body)) + body


def decode_properties(data: bytes, position: int, context: int) -> tuple[Properties, int]:
    """The properties :func:`encode_properties` wrote at ``data[position:]``, checked as those of
    packet type ``context`` (or ``WILL``), and the position where they end."""
    reader = FieldReader(data, position, len(data), "stored properties")
    length = reader.variable_byte_integer("property length")
    stop = reader.position + length
    if stop > len(data):
        raise MalformedPacket("stored properties run past the end of their record")
    return read_properties(data, reader.position, stop, context, "stored properties"), stop
