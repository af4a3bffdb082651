"""Encoding MQTT: packets in, the bytes to send out (:func:`encode`).

The PUBLISH path is the hot one: every message a broker routes is encoded once per subscriber.
The fields packets are made of are written by :mod:`certmq.mqtt.fields`;
:mod:`certmq.mqtt.decoding` reads packets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from certmq.mqtt.fields import (
    ONE_BYTE,
    encode_binary,
    encode_properties,
    encode_string,
    encode_variable_byte_integer,
    pack_uint16,
)
from certmq.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    ProtocolVersion,
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
from certmq.mqtt.reason_codes import SUBACK_FAILURE_3_1_1

# Plain ints for the per-packet code: reading an enum member costs a lookup each time.
_MQTT_3_1: Final = int(ProtocolVersion.MQTT_3_1)
_MQTT_5: Final = int(ProtocolVersion.MQTT_5)
_MAXIMUM_STRING_LENGTH: Final = 0xFFFF

_pack_two_bytes_and_uint16 = struct.Struct(">BBH").pack


def _packet(first_byte: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return ONE_BYTE[first_byte] + encode_variable_byte_integer(len(body)) + body


def _encode_connect(packet: Connect, protocol_version: int) -> bytes:
    with_properties = protocol_version >= _MQTT_5
    protocol_name = packet.protocol_name
    if protocol_version == _MQTT_3_1 and protocol_name == "MQTT":
        protocol_name = "MQIsdp"  # the default name follows the level
    will = packet.will
    connect_flags = packet.clean_start << 1
    payload = [encode_string(packet.client_id)]
    if will is not None:
        connect_flags |= 0x04 | will.qos << 3 | will.retain << 5
        if with_properties:
            payload.append(encode_properties(will.properties))
        payload.append(encode_string(will.topic))
        payload.append(encode_binary(will.payload))
    if packet.username is not None:
        connect_flags |= 0x80
        payload.append(encode_string(packet.username))
    if packet.password is not None:
        connect_flags |= 0x40
        payload.append(encode_binary(packet.password))
    return _packet(
        0x10,
        encode_string(protocol_name),
        bytes((protocol_version, connect_flags)),
        pack_uint16(packet.keep_alive),
        encode_properties(packet.properties) if with_properties else b"",
        *payload,
    )


def _encode_connack(packet: ConnAck, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        return bytes((0x20, 2, packet.session_present, packet.reason_code))
    return _packet(
        0x20, bytes((packet.session_present, packet.reason_code)), encode_properties(packet.properties)
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
        properties = encode_properties(packet.properties)
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
            ONE_BYTE[first_byte] + encode_variable_byte_integer(remaining_length) + pack_uint16(topic_length)
        )
    if qos:
        if packet.packet_id is None:
            raise ValueError("a PUBLISH with QoS 1 or 2 needs a packet identifier")
        return b"".join(
            (fixed_header_and_topic_length, topic, pack_uint16(packet.packet_id), properties, payload)
        )
    return b"".join((fixed_header_and_topic_length, topic, properties, payload))


def _make_acknowledgement_encoder(first_byte: int) -> Callable[[Any, int], bytes]:
    def encode_acknowledgement(packet: PubAck | PubRec | PubRel | PubComp, protocol_version: int) -> bytes:
        packet_id = pack_uint16(packet.packet_id)
        if protocol_version < _MQTT_5 or not (packet.reason_code or packet.properties):
            return bytes((first_byte, 2)) + packet_id
        if not packet.properties:
            return bytes((first_byte, 3)) + packet_id + ONE_BYTE[packet.reason_code]
        return _packet(
            first_byte, packet_id, ONE_BYTE[packet.reason_code], encode_properties(packet.properties)
        )

    return encode_acknowledgement


def _encode_subscribe(packet: Subscribe, protocol_version: int) -> bytes:
    with_properties = protocol_version >= _MQTT_5
    parts = [pack_uint16(packet.packet_id)]
    if with_properties:
        parts.append(encode_properties(packet.properties))
    for subscription in packet.subscriptions:
        parts.append(encode_string(subscription.topic_filter))
        options = subscription.qos
        if with_properties:
            options |= (
                subscription.no_local << 2
                | subscription.retain_as_published << 3
                | subscription.retain_handling << 4
            )
        parts.append(ONE_BYTE[options])
    return _packet(0x82, *parts)


def _encode_suback(packet: SubAck, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        # 3.1.1 knows a single failure code.
        codes = bytes(code if code < 0x80 else SUBACK_FAILURE_3_1_1 for code in packet.reason_codes)
        return _packet(0x90, pack_uint16(packet.packet_id), codes)
    return _packet(
        0x90,
        pack_uint16(packet.packet_id),
        encode_properties(packet.properties),
        bytes(packet.reason_codes),
    )


def _encode_unsubscribe(packet: Unsubscribe, protocol_version: int) -> bytes:
    parts = [pack_uint16(packet.packet_id)]
    if protocol_version >= _MQTT_5:
        parts.append(encode_properties(packet.properties))
    parts.extend(encode_string(topic_filter) for topic_filter in packet.topic_filters)
    return _packet(0xA2, *parts)


def _encode_unsuback(packet: UnsubAck, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        return b"\xb0\x02" + pack_uint16(packet.packet_id)
    return _packet(
        0xB0,
        pack_uint16(packet.packet_id),
        encode_properties(packet.properties),
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
        return b"\xe0\x01" + ONE_BYTE[packet.reason_code]
    return _packet(0xE0, ONE_BYTE[packet.reason_code], encode_properties(packet.properties))


def _encode_auth(packet: Auth, protocol_version: int) -> bytes:
    if protocol_version < _MQTT_5:
        raise ValueError("AUTH exists only in MQTT 5.0")
    if not (packet.reason_code or packet.properties):
        return b"\xf0\x00"
    return _packet(0xF0, ONE_BYTE[packet.reason_code], encode_properties(packet.properties))


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
