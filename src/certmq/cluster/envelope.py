"""A message as it travels between the nodes of a cluster: the bytes of a NATS message's payload.

The topic travels as the NATS subject (certmq.cluster.subjects); the envelope carries the rest
of what a subscriber on another node must be given and what its node must know to route it:

======  =============================================================================
bytes   field
======  =============================================================================
1       format version (1)
1       flags: QoS (bits 0-1), retain (bit 2), an expiry follows (bit 3), a sender
        follows (bit 4)
8       the message's number from its origin node (duplicates are recognised by it)
1 + n   the origin node's name (ASCII)
4       milliseconds left before it expires (when bit 3 is set)
2 + n   the publisher's client id, UTF-8 (when bit 4 is set), for No Local
…       the forwarded MQTT 5 properties, as a PUBLISH packet holds them
…       the payload, to the end
======  =============================================================================

Sans-io: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from certmq.broker.messages import Message
from certmq.mqtt.errors import MalformedPacket
from certmq.mqtt.fields import decode_properties, encode_properties
from certmq.mqtt.packets import PacketType

VERSION = 1
_QOS = 0x03
_RETAIN = 0x04
_EXPIRY = 0x08
_SENDER = 0x10
_HEAD = struct.Struct(">BBQB")
_EXPIRY_FIELD = struct.Struct(">I")
_LENGTH = struct.Struct(">H")
_NO_PROPERTIES = b"\x00"


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this version reads."""


@dataclass(frozen=True, slots=True)
class Received:
    """A message from another node: the message as this node holds it, and where it is from."""

    message: Message
    origin: str
    number: int


def seal(message: Message, origin: str, number: int, now: float) -> bytes:
    """The envelope of ``message``, published by node ``origin`` as its ``number``th, at loop
    time ``now`` (its expiry travels as the time it has left)."""
    flags = message.qos | (_RETAIN if message.retain else 0)
    parts = [b""]
    origin_bytes = origin.encode("ascii")
    if message.expires_at is not None:
        flags |= _EXPIRY
        left = max(0, int((message.expires_at - now) * 1000))
        parts.append(_EXPIRY_FIELD.pack(min(left, 0xFFFFFFFF)))
    sender = message.sender
    if sender is not None:
        flags |= _SENDER
        encoded = sender.encode()
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    parts[0] = _HEAD.pack(VERSION, flags, number, len(origin_bytes)) + origin_bytes
    properties = message.properties
    parts.append(encode_properties(properties) if properties else _NO_PROPERTIES)
    parts.append(message.payload)
    return b"".join(parts)


def open_envelope(topic: str, data: bytes, now: float) -> Received:
    """The message an envelope holds, published to ``topic``, as received at loop time ``now``."""
    try:
        version, flags, number, origin_length = _HEAD.unpack_from(data)
        if version != VERSION:
            raise EnvelopeError(f"envelope format {version}, this node reads {VERSION}")
        position = _HEAD.size
        origin = data[position : position + origin_length].decode("ascii")
        position += origin_length
        expires_at = None
        if flags & _EXPIRY:
            expires_at = now + _EXPIRY_FIELD.unpack_from(data, position)[0] / 1000
            position += _EXPIRY_FIELD.size
        sender = None
        if flags & _SENDER:
            (length,) = _LENGTH.unpack_from(data, position)
            position += _LENGTH.size
            sender = data[position : position + length].decode()
            position += length
        if data[position] == 0:
            properties: dict[int, object] = {}
            position += 1
        else:
            decoded, position = decode_properties(data, position, PacketType.PUBLISH)
            properties = dict(decoded)
    except (struct.error, IndexError, UnicodeDecodeError, MalformedPacket) as error:
        raise EnvelopeError(f"not a message envelope: {error}") from None
    message = Message(
        topic, data[position:], flags & _QOS, bool(flags & _RETAIN), properties, expires_at, sender
    )
    return Received(message, origin, number)
