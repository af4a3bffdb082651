"""Messages as they travel between the nodes of a cluster: the bytes of a NATS message's payload.

The topic travels as the NATS subject (certmq.cluster.subjects); an envelope carries one or
more messages of that topic, in the order they were published, with what a subscriber on
another node must be given and what its node must know to route them. A node gathers the
QoS 0 messages of each topic that one turn of its event loop publishes into one envelope, so
that NATS, and the nodes that receive them, handle one NATS message for many MQTT messages.

======  =============================================================================
bytes   field
======  =============================================================================
1       format version (2)
8       the envelope's number from its origin node (duplicates are recognised by it)
1 + n   the origin node's name (ASCII)
…       the messages, each:
1       flags: QoS (bits 0-1), retain (bit 2), an expiry follows (bit 3), a sender
        follows (bit 4), properties follow (bit 5)
4       the payload's length
4       milliseconds left before it expires (when bit 3 is set)
2 + n   the publisher's client id, UTF-8 (when bit 4 is set), for No Local
…       the forwarded MQTT 5 properties, as a PUBLISH packet holds them (when bit 5 is set)
…       the payload
======  =============================================================================

Sans-io: bytes in, bytes out.
"""

from __future__ import annotations

import operator
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from certmq.broker.messages import Message
from certmq.mqtt.errors import MalformedPacket
from certmq.mqtt.fields import decode_properties, encode_properties
from certmq.mqtt.packets import PacketType

VERSION = 2
_QOS = 0x03
_RETAIN = 0x04
_EXPIRY = 0x08
_SENDER = 0x10
_PROPERTIES = 0x20
_HEAD = struct.Struct(">BQB")
_ENTRY = struct.Struct(">BI")
_EXPIRY_FIELD = struct.Struct(">I")
_LENGTH = struct.Struct(">H")


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this version reads."""


@dataclass(slots=True)
class Received:
    """Messages from another node, as this node holds them, and where they are from."""

    messages: list[Message]
    origin: str
    number: int


def seal(messages: Sequence[Message], origin: str, number: int, now: float) -> bytes:
    """The envelope of ``messages`` (all of one topic), sent by node ``origin`` as its
    ``number``th, at loop time ``now`` (an expiry travels as the time it has left)."""
    origin_bytes = origin.encode("ascii")
    parts = [_HEAD.pack(VERSION, number, len(origin_bytes)), origin_bytes]
    append = parts.append
    # One publisher's client id follows each of its messages: encoded once per run of them.
    last_sender: str | None = None
    sender_field = b""
    for message in messages:
        flags = message.qos | (_RETAIN if message.retain else 0)
        payload = message.payload
        expires_at, sender, properties = message.expires_at, message.sender, message.properties
        if sender is not None:
            if sender is not last_sender:
                encoded = sender.encode()
                sender_field = _LENGTH.pack(len(encoded)) + encoded
                last_sender = sender
            if expires_at is None and not properties:
                # The common case: a client's message, no expiry, no properties.
                append(_ENTRY.pack(flags | _SENDER, len(payload)))
                append(sender_field)
                append(payload)
                continue
            flags |= _SENDER
        if expires_at is not None:
            flags |= _EXPIRY
        if properties:
            flags |= _PROPERTIES
        append(_ENTRY.pack(flags, len(payload)))
        if expires_at is not None:
            left = max(0, int((expires_at - now) * 1000))
            append(_EXPIRY_FIELD.pack(min(left, 0xFFFFFFFF)))
        if sender is not None:
            append(sender_field)
        if properties:
            append(encode_properties(properties))
        append(payload)
    return b"".join(parts)


def open_envelope(topic: str, data: bytes, now: float) -> Received:
    """The messages an envelope holds, published to ``topic``, as received at loop time ``now``."""
    messages: list[Message] = []
    append = messages.append
    try:
        version, number, origin_length = _HEAD.unpack_from(data)
        if version != VERSION:
            raise EnvelopeError(f"envelope format {version}, this node reads {VERSION}")
        position = _HEAD.size
        origin = data[position : position + origin_length].decode("ascii")
        position += origin_length
        if len(origin) != origin_length:
            raise EnvelopeError("not a message envelope: it ends within its origin")
        end = len(data)
        # The client id of the messages before, decoded once for a run of one publisher's.
        last_field = b""
        last_sender: str | None = None
        while position < end:
            flags, length = _ENTRY.unpack_from(data, position)
            position += _ENTRY.size
            expires_at = None
            sender = None
            properties: dict[int, object] = {}
            if flags & (_EXPIRY | _SENDER | _PROPERTIES):
                if flags & _EXPIRY:
                    expires_at = now + _EXPIRY_FIELD.unpack_from(data, position)[0] / 1000
                    position += _EXPIRY_FIELD.size
                if flags & _SENDER:
                    if last_field and data.startswith(last_field, position):
                        sender = last_sender
                        position += len(last_field)
                    else:
                        (sender_length,) = _LENGTH.unpack_from(data, position)
                        field_end = position + _LENGTH.size + sender_length
                        if field_end > end:
                            raise EnvelopeError("not a message envelope: it ends within a client id")
                        sender = last_sender = data[position + _LENGTH.size : field_end].decode()
                        last_field = data[position:field_end]
                        position = field_end
                if flags & _PROPERTIES:
                    decoded, position = decode_properties(data, position, PacketType.PUBLISH)
                    properties = dict(decoded)
            if position + length > end:
                raise EnvelopeError("not a message envelope: it ends within a payload")
            append(
                Message(
                    topic,
                    data[position : position + length],
                    flags & _QOS,
                    bool(flags & _RETAIN),
                    properties,
                    expires_at,
                    sender,
                )
            )
            position += length
    except (struct.error, IndexError, UnicodeDecodeError, MalformedPacket) as error:
        raise EnvelopeError(f"not a message envelope: {error}") from None
    if not messages:
        raise EnvelopeError("not a message envelope: it holds no message")
    return Received(messages, origin, number)


# How many message numbers of each origin are remembered to recognise duplicates.
DUPLICATE_WINDOW = 65536
# The payload bytes an envelope of QoS 0 messages gathers before another one is started: well
# within the 1 MB a NATS server takes in one message by default.
ENVELOPE_BYTES = 256 * 1024
# What a message adds to an envelope besides its payload, for counting up to ENVELOPE_BYTES.
ENTRY_BYTES = 16


class Duplicates:
    """The message numbers recently seen from each origin node."""

    def __init__(self, window: int = DUPLICATE_WINDOW) -> None:
        self.window = window
        self._seen: dict[str, tuple[set[int], deque[int]]] = {}

    def seen(self, origin: str, number: int) -> bool:
        """Whether ``number`` of ``origin`` was seen before; it is from now on."""
        known = self._seen.get(origin)
        if known is None:
            known = self._seen[origin] = (set(), deque())
        numbers, order = known
        if number in numbers:
            return True
        numbers.add(number)
        order.append(number)
        if len(order) > self.window:
            numbers.discard(order.popleft())
        return False


_payload = operator.attrgetter("payload")


def cut_into_envelopes(messages: list[Message]) -> Iterable[list[Message]]:
    """``messages`` cut into envelopes of about ENVELOPE_BYTES at most (one message each at least)."""
    if len(messages) * ENTRY_BYTES + sum(map(len, map(_payload, messages))) <= ENVELOPE_BYTES:
        yield messages
        return
    start = size = 0
    for index, message in enumerate(messages):
        added = ENTRY_BYTES + len(message.payload)
        if size + added > ENVELOPE_BYTES and index > start:
            yield messages[start:index]
            start, size = index, 0
        size += added
    yield messages[start:]
