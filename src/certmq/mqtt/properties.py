"""MQTT 5.0 properties (spec 2.2.2.2): identifiers, value types, where each may appear and
which values each may take."""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from certmq.mqtt.packets import PacketType


class PropertyId(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class PropertyType(IntEnum):
    BYTE = 1
    TWO_BYTE_INTEGER = 2
    FOUR_BYTE_INTEGER = 3
    VARIABLE_BYTE_INTEGER = 4
    UTF8_STRING = 5
    BINARY = 6
    UTF8_STRING_PAIR = 7


# Properties that may appear more than once; their value is always a list.
REPEATABLE: frozenset[int] = frozenset({PropertyId.USER_PROPERTY, PropertyId.SUBSCRIPTION_IDENTIFIER})

# The will properties live in the CONNECT payload; WILL is the pseudo packet type used for them.
WILL = 0

_P = PacketType
PROPERTY_TYPES: dict[int, PropertyType] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: PropertyType.BYTE,
    PropertyId.MESSAGE_EXPIRY_INTERVAL: PropertyType.FOUR_BYTE_INTEGER,
    PropertyId.CONTENT_TYPE: PropertyType.UTF8_STRING,
    PropertyId.RESPONSE_TOPIC: PropertyType.UTF8_STRING,
    PropertyId.CORRELATION_DATA: PropertyType.BINARY,
    PropertyId.SUBSCRIPTION_IDENTIFIER: PropertyType.VARIABLE_BYTE_INTEGER,
    PropertyId.SESSION_EXPIRY_INTERVAL: PropertyType.FOUR_BYTE_INTEGER,
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: PropertyType.UTF8_STRING,
    PropertyId.SERVER_KEEP_ALIVE: PropertyType.TWO_BYTE_INTEGER,
    PropertyId.AUTHENTICATION_METHOD: PropertyType.UTF8_STRING,
    PropertyId.AUTHENTICATION_DATA: PropertyType.BINARY,
    PropertyId.REQUEST_PROBLEM_INFORMATION: PropertyType.BYTE,
    PropertyId.WILL_DELAY_INTERVAL: PropertyType.FOUR_BYTE_INTEGER,
    PropertyId.REQUEST_RESPONSE_INFORMATION: PropertyType.BYTE,
    PropertyId.RESPONSE_INFORMATION: PropertyType.UTF8_STRING,
    PropertyId.SERVER_REFERENCE: PropertyType.UTF8_STRING,
    PropertyId.REASON_STRING: PropertyType.UTF8_STRING,
    PropertyId.RECEIVE_MAXIMUM: PropertyType.TWO_BYTE_INTEGER,
    PropertyId.TOPIC_ALIAS_MAXIMUM: PropertyType.TWO_BYTE_INTEGER,
    PropertyId.TOPIC_ALIAS: PropertyType.TWO_BYTE_INTEGER,
    PropertyId.MAXIMUM_QOS: PropertyType.BYTE,
    PropertyId.RETAIN_AVAILABLE: PropertyType.BYTE,
    PropertyId.USER_PROPERTY: PropertyType.UTF8_STRING_PAIR,
    PropertyId.MAXIMUM_PACKET_SIZE: PropertyType.FOUR_BYTE_INTEGER,
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: PropertyType.BYTE,
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: PropertyType.BYTE,
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: PropertyType.BYTE,
}

# Where each property may appear (spec 2.2.2.2 table). A property elsewhere is a Protocol Error.
ALLOWED_IN: dict[int, frozenset[int]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: frozenset({_P.PUBLISH, WILL}),
    PropertyId.MESSAGE_EXPIRY_INTERVAL: frozenset({_P.PUBLISH, WILL}),
    PropertyId.CONTENT_TYPE: frozenset({_P.PUBLISH, WILL}),
    PropertyId.RESPONSE_TOPIC: frozenset({_P.PUBLISH, WILL}),
    PropertyId.CORRELATION_DATA: frozenset({_P.PUBLISH, WILL}),
    PropertyId.SUBSCRIPTION_IDENTIFIER: frozenset({_P.PUBLISH, _P.SUBSCRIBE}),
    PropertyId.SESSION_EXPIRY_INTERVAL: frozenset({_P.CONNECT, _P.CONNACK, _P.DISCONNECT}),
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: frozenset({_P.CONNACK}),
    PropertyId.SERVER_KEEP_ALIVE: frozenset({_P.CONNACK}),
    PropertyId.AUTHENTICATION_METHOD: frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH}),
    PropertyId.AUTHENTICATION_DATA: frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH}),
    PropertyId.REQUEST_PROBLEM_INFORMATION: frozenset({_P.CONNECT}),
    PropertyId.WILL_DELAY_INTERVAL: frozenset({WILL}),
    PropertyId.REQUEST_RESPONSE_INFORMATION: frozenset({_P.CONNECT}),
    PropertyId.RESPONSE_INFORMATION: frozenset({_P.CONNACK}),
    PropertyId.SERVER_REFERENCE: frozenset({_P.CONNACK, _P.DISCONNECT}),
    PropertyId.REASON_STRING: frozenset(
        {
            _P.CONNACK,
            _P.PUBACK,
            _P.PUBREC,
            _P.PUBREL,
            _P.PUBCOMP,
            _P.SUBACK,
            _P.UNSUBACK,
            _P.DISCONNECT,
            _P.AUTH,
        }
    ),
    PropertyId.RECEIVE_MAXIMUM: frozenset({_P.CONNECT, _P.CONNACK}),
    PropertyId.TOPIC_ALIAS_MAXIMUM: frozenset({_P.CONNECT, _P.CONNACK}),
    PropertyId.TOPIC_ALIAS: frozenset({_P.PUBLISH}),
    PropertyId.MAXIMUM_QOS: frozenset({_P.CONNACK}),
    PropertyId.RETAIN_AVAILABLE: frozenset({_P.CONNACK}),
    PropertyId.USER_PROPERTY: frozenset(
        {
            _P.CONNECT,
            _P.CONNACK,
            _P.PUBLISH,
            WILL,
            _P.PUBACK,
            _P.PUBREC,
            _P.PUBREL,
            _P.PUBCOMP,
            _P.SUBSCRIBE,
            _P.SUBACK,
            _P.UNSUBSCRIBE,
            _P.UNSUBACK,
            _P.DISCONNECT,
            _P.AUTH,
        }
    ),
    PropertyId.MAXIMUM_PACKET_SIZE: frozenset({_P.CONNECT, _P.CONNACK}),
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: frozenset({_P.CONNACK}),
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: frozenset({_P.CONNACK}),
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: frozenset({_P.CONNACK}),
}


PUBLISH_FROM_CLIENT: Final = 16
"""Property context of a PUBLISH a client sends: like PUBLISH, without Subscription Identifier."""

# The properties allowed in each context (packet type, WILL or PUBLISH_FROM_CLIENT).
ALLOWED_PROPERTIES: Final[dict[int, frozenset[int]]] = {
    context: frozenset(identifier for identifier, where in ALLOWED_IN.items() if context in where)
    for context in [WILL, *PacketType]
}
ALLOWED_PROPERTIES[PUBLISH_FROM_CLIENT] = ALLOWED_PROPERTIES[_P.PUBLISH] - {
    PropertyId.SUBSCRIPTION_IDENTIFIER
}

# Names of the contexts, for error messages.
CONTEXT_NAMES: Final[dict[int, str]] = {
    WILL: "will properties",
    PUBLISH_FROM_CLIENT: "PUBLISH from a client",
}
CONTEXT_NAMES.update({packet_type: packet_type.name for packet_type in PacketType})

# Properties with a limited range; a value outside it is a Protocol Error.
MUST_BE_0_OR_1: Final = 1
MUST_NOT_BE_0: Final = 2
VALUE_RULES: Final[dict[int, int]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: MUST_BE_0_OR_1,
    PropertyId.REQUEST_PROBLEM_INFORMATION: MUST_BE_0_OR_1,
    PropertyId.REQUEST_RESPONSE_INFORMATION: MUST_BE_0_OR_1,
    PropertyId.MAXIMUM_QOS: MUST_BE_0_OR_1,
    PropertyId.RETAIN_AVAILABLE: MUST_BE_0_OR_1,
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: MUST_BE_0_OR_1,
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: MUST_BE_0_OR_1,
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: MUST_BE_0_OR_1,
    PropertyId.RECEIVE_MAXIMUM: MUST_NOT_BE_0,
    PropertyId.TOPIC_ALIAS: MUST_NOT_BE_0,
    PropertyId.MAXIMUM_PACKET_SIZE: MUST_NOT_BE_0,
    PropertyId.SUBSCRIPTION_IDENTIFIER: MUST_NOT_BE_0,
}

# "Message Expiry Interval" for PropertyId.MESSAGE_EXPIRY_INTERVAL, for error messages.
PROPERTY_NAMES: Final[dict[int, str]] = {
    int(identifier): identifier.name.replace("_", " ").title().replace("Qos", "QoS")
    for identifier in PropertyId
}
