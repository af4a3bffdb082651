"""The journal's record format, sans-io: what the broker appends to its write-ahead log before it
acknowledges anything durable, and reading it back (docs/configuration.md, "What survives a
restart").

A segment file is :data:`SEGMENT_HEADER` followed by blocks: ``length (u32) | CRC-32 (u32) |
records``, little-endian, the length and the CRC covering the records. A block is what one
commit writes, with one ``write(2)``: the broker acknowledges none of its records before the
whole block is written. A record is ``length (u32) | type (u8) | body``. :class:`RecordDecoder`
stops at the first block that is cut short or whose CRC does not match: a process killed in the
middle of a write leaves a partial block at the end of the log, whose records were never
acknowledged, and everything before it is intact.

Records describe changes to the state :mod:`certmq.broker.checkpoint_store` saves whole at a
checkpoint: a message body is written once (:class:`MessageStored`) and referred to by its id
from every session it is queued for. Times are wall-clock times (``time.time()``), which mean
the same thing to the next process.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from typing import Any, NamedTuple, TypeAlias
from zlib import crc32

from certmq.mqtt.errors import MQTTError
from certmq.mqtt.fields import decode_properties, encode_properties
from certmq.mqtt.packets import PacketType, Will
from certmq.mqtt.properties import WILL

SEGMENT_HEADER = b"certmq journal 1"


class JournalFormatError(Exception):
    """A record whose CRC is right but whose content this certmq cannot read."""


class RecordType(IntEnum):
    MESSAGE_STORED = 1
    RETAINED_SET = 2
    RETAINED_CLEARED = 3
    SESSION_CONNECTED = 4
    SESSION_OFFLINE = 5
    SESSION_ENDED = 6
    SUBSCRIBED = 7
    UNSUBSCRIBED = 8
    DELIVERY_QUEUED = 9
    DELIVERY_SENT = 10
    FLIGHT_RELEASED = 11
    FLIGHT_COMPLETED = 12
    INCOMING_QOS2_ADDED = 13
    INCOMING_QOS2_REMOVED = 14
    WILL_CLEARED = 15
    CLOCK = 16


# -- records ---------------------------------------------------------------------------------


class MessageStored(NamedTuple):
    """A message body, written once before the first record that refers to ``message_id``."""

    message_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Mapping[int, Any]  # the forwarded PUBLISH properties
    expires_at: float | None  # wall clock; None: never
    sender: str | None


class RetainedSet(NamedTuple):
    message_id: int


class RetainedCleared(NamedTuple):
    topic: str


class SessionConnected(NamedTuple):
    """A client connected to a session with an expiry interval above 0, new or resumed; its will
    replaces any earlier one."""

    client_id: str
    protocol_version: int
    expiry_interval: int
    owner: str
    connected_at: float
    will: Will | None
    # Who the client connected as: its topic permissions are compiled again from these.
    username: str | None = None
    identity: Mapping[str, str] = {}


class SessionOffline(NamedTuple):
    """The session's client went away; ``will_kept``: its will waits for its delay."""

    client_id: str
    expiry_interval: int
    disconnected_at: float
    will_kept: bool


class SessionEnded(NamedTuple):
    client_id: str


class Subscribed(NamedTuple):
    client_id: str
    topic_filter: str
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    subscription_id: int | None


class Unsubscribed(NamedTuple):
    client_id: str
    topic_filter: str


class DeliveryQueued(NamedTuple):
    """A message on its way to one session; ``packet_id`` 0: queued, otherwise sent at once."""

    client_id: str
    delivery_id: int
    message_id: int
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...]
    packet_id: int


class DeliverySent(NamedTuple):
    """A queued delivery sent with ``packet_id``."""

    client_id: str
    delivery_id: int
    packet_id: int


class FlightReleased(NamedTuple):
    """PUBREC received for the QoS 2 delivery in flight as ``packet_id``; PUBREL sent."""

    client_id: str
    packet_id: int


class FlightCompleted(NamedTuple):
    """The delivery in flight as ``packet_id`` is acknowledged (PUBACK, PUBCOMP) or refused."""

    client_id: str
    packet_id: int


class IncomingQos2Added(NamedTuple):
    """A QoS 2 PUBLISH from the client answered with PUBREC: a repeat is not delivered again."""

    client_id: str
    packet_id: int


class IncomingQos2Removed(NamedTuple):
    client_id: str
    packet_id: int


class WillCleared(NamedTuple):
    client_id: str


class Clock(NamedTuple):
    """The time, written now and then while clients are connected: a crash happened after it."""

    wall_time: float


Record: TypeAlias = (
    MessageStored
    | RetainedSet
    | RetainedCleared
    | SessionConnected
    | SessionOffline
    | SessionEnded
    | Subscribed
    | Unsubscribed
    | DeliveryQueued
    | DeliverySent
    | FlightReleased
    | FlightCompleted
    | IncomingQos2Added
    | IncomingQos2Removed
    | WillCleared
    | Clock
)

# -- encoding --------------------------------------------------------------------------------

_BLOCK = struct.Struct("<II")  # length, CRC-32 of the records
_LENGTH = struct.Struct("<I")
_U16 = struct.Struct("<H")
_MESSAGE = struct.Struct("<BQBBd")  # type, message id, qos, flags, expires_at
_ID = struct.Struct("<BQ")  # type, message id
_CONNECTED = struct.Struct("<BBIdB")  # type, protocol version, expiry, connected_at, will flags
_OFFLINE = struct.Struct("<BIdB")  # type, expiry, disconnected_at, will kept
_SUBSCRIBED = struct.Struct("<BBBI")  # type, qos, options, subscription id
_QUEUED = struct.Struct("<BQQBBHH")  # type, delivery id, message id, qos, retain, packet id, ids
_SENT = struct.Struct("<BQH")  # type, delivery id, packet id
_PACKET = struct.Struct("<BH")  # type, packet id
_CLOCK = struct.Struct("<Bd")
_TYPE = [bytes((value,)) for value in range(256)]

# MessageStored flags.
_RETAIN = 1
_EXPIRES = 2
_HAS_SENDER = 4
# Subscribed options, as in a SUBSCRIBE packet's options byte (MQTT 5.0 3.8.3.1).
_NO_LOCAL = 4
_RETAIN_AS_PUBLISHED = 8


def _frame(body: bytes) -> bytes:
    """The record whose type and body are ``body``."""
    return _LENGTH.pack(len(body)) + body


def encode_block(records: Sequence[bytes]) -> bytes:
    """The block of encoded ``records`` one commit writes."""
    payload = b"".join(records)
    return _BLOCK.pack(len(payload), crc32(payload)) + payload


# Client ids and topics repeat from record to record: each is encoded once in a while.
@functools.lru_cache(maxsize=4096)
def _string(value: str) -> bytes:
    encoded = value.encode()
    if len(encoded) > 0xFFFF:
        raise ValueError(f"a journal string holds at most 65535 bytes, not {len(encoded)}")
    return _U16.pack(len(encoded)) + encoded


def encode_message_stored(
    message_id: int,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    properties: Mapping[int, Any],
    expires_at: float | None,
    sender: str | None,
) -> bytes:
    flags = _RETAIN if retain else 0
    if expires_at is not None:
        flags |= _EXPIRES
    if sender is not None:
        flags |= _HAS_SENDER
    return _frame(
        b"".join(
            (
                _MESSAGE.pack(RecordType.MESSAGE_STORED, message_id, qos, flags, expires_at or 0.0),
                _string(topic),
                b"" if sender is None else _string(sender),
                encode_properties(properties) if properties else b"\x00",
                payload,
            )
        )
    )


def encode_retained_set(message_id: int) -> bytes:
    return _frame(_ID.pack(RecordType.RETAINED_SET, message_id))


def encode_retained_cleared(topic: str) -> bytes:
    return _frame(_TYPE[RecordType.RETAINED_CLEARED] + _string(topic))


def encode_session_connected(
    client_id: str,
    protocol_version: int,
    expiry_interval: int,
    owner: str,
    connected_at: float,
    will: Will | None,
    username: str | None = None,
    identity: Mapping[str, str] | None = None,
) -> bytes:
    # Bit 0: a will follows (its QoS in bits 2-3, retain in bit 1); bit 4: a username follows.
    will_flags = 0 if will is None else 1 | (2 if will.retain else 0) | will.qos << 2
    if username is not None:
        will_flags |= 16
    parts = [
        _CONNECTED.pack(
            RecordType.SESSION_CONNECTED, protocol_version, expiry_interval, connected_at, will_flags
        ),
        _string(client_id),
        _string(owner),
        _string("" if username is None else username),
        _string(json.dumps(dict(identity), separators=(",", ":")) if identity else ""),
    ]
    if will is not None:
        parts += (_string(will.topic), encode_properties(will.properties), will.payload)
    return _frame(b"".join(parts))


def encode_session_offline(
    client_id: str, expiry_interval: int, disconnected_at: float, will_kept: bool
) -> bytes:
    return _frame(
        _OFFLINE.pack(RecordType.SESSION_OFFLINE, expiry_interval, disconnected_at, will_kept)
        + _string(client_id)
    )


def _encode_client_only(record_type: RecordType) -> Callable[[str], bytes]:
    prefix = _TYPE[record_type]

    def encode_client_only(client_id: str) -> bytes:
        return _frame(prefix + _string(client_id))

    return encode_client_only


encode_session_ended = _encode_client_only(RecordType.SESSION_ENDED)
encode_will_cleared = _encode_client_only(RecordType.WILL_CLEARED)


def encode_subscribed(
    client_id: str,
    topic_filter: str,
    qos: int,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: int,
    subscription_id: int | None,
) -> bytes:
    options = (_NO_LOCAL if no_local else 0) | (_RETAIN_AS_PUBLISHED if retain_as_published else 0)
    options |= retain_handling << 4
    return _frame(
        _SUBSCRIBED.pack(RecordType.SUBSCRIBED, qos, options, subscription_id or 0)
        + _string(client_id)
        + _string(topic_filter)
    )


def encode_unsubscribed(client_id: str, topic_filter: str) -> bytes:
    return _frame(_TYPE[RecordType.UNSUBSCRIBED] + _string(client_id) + _string(topic_filter))


def encode_delivery_queued(
    client_id: str,
    delivery_id: int,
    message_id: int,
    qos: int,
    retain: bool,
    subscription_ids: Sequence[int],
    packet_id: int,
) -> bytes:
    head = _QUEUED.pack(
        RecordType.DELIVERY_QUEUED, delivery_id, message_id, qos, retain, packet_id, len(subscription_ids)
    )
    if subscription_ids:
        head += struct.pack(f"<{len(subscription_ids)}I", *subscription_ids)
    return _frame(head + _string(client_id))


def encode_delivery_sent(client_id: str, delivery_id: int, packet_id: int) -> bytes:
    return _frame(_SENT.pack(RecordType.DELIVERY_SENT, delivery_id, packet_id) + _string(client_id))


def _encode_packet_id(record_type: RecordType) -> Callable[[str, int], bytes]:
    def encode_packet_id(client_id: str, packet_id: int) -> bytes:
        return _frame(_PACKET.pack(record_type, packet_id) + _string(client_id))

    return encode_packet_id


encode_flight_released = _encode_packet_id(RecordType.FLIGHT_RELEASED)
encode_flight_completed = _encode_packet_id(RecordType.FLIGHT_COMPLETED)
encode_incoming_qos2_added = _encode_packet_id(RecordType.INCOMING_QOS2_ADDED)
encode_incoming_qos2_removed = _encode_packet_id(RecordType.INCOMING_QOS2_REMOVED)


def encode_clock(wall_time: float) -> bytes:
    return _frame(_CLOCK.pack(RecordType.CLOCK, wall_time))


_ENCODERS: dict[type, Callable[..., bytes]] = {
    MessageStored: encode_message_stored,
    RetainedSet: encode_retained_set,
    RetainedCleared: encode_retained_cleared,
    SessionConnected: encode_session_connected,
    SessionOffline: encode_session_offline,
    SessionEnded: encode_session_ended,
    Subscribed: encode_subscribed,
    Unsubscribed: encode_unsubscribed,
    DeliveryQueued: encode_delivery_queued,
    DeliverySent: encode_delivery_sent,
    FlightReleased: encode_flight_released,
    FlightCompleted: encode_flight_completed,
    IncomingQos2Added: encode_incoming_qos2_added,
    IncomingQos2Removed: encode_incoming_qos2_removed,
    WillCleared: encode_will_cleared,
    Clock: encode_clock,
}


def encode_record(record: Record) -> bytes:
    """The bytes of one record. The broker calls the ``encode_*`` functions directly, with the
    values it has at hand, rather than building a record first."""
    return _ENCODERS[type(record)](*record)


# -- decoding --------------------------------------------------------------------------------
#
# Each decoder reads the record at ``data[start:end]`` (its type byte and body) in place: a start
# reads millions of records, so they are not copied out of the segment first.


# Builds a record from a tuple of its fields in one call, skipping the generated __new__.
_new = tuple.__new__
# Topics and client ids repeat from record to record: a start that reads a million messages
# keeps one string of each instead of a million.
_shared_text = functools.lru_cache(maxsize=1 << 16)(bytes.decode)


class _Truncated(Exception):
    """A field runs past the end of its record."""


def _text(data: bytes, position: int, end: int) -> tuple[str, int]:
    stop = position + 2 + (data[position] | data[position + 1] << 8)
    if stop > end:
        raise _Truncated("a string runs past the end of its record")
    return data[position + 2 : stop].decode(), stop


def _last_text(data: bytes, position: int, end: int) -> str:
    """The string that ends the record."""
    text, stop = _text(data, position, end)
    if stop != end:
        raise _Truncated("bytes after the last field")
    return text


def _properties(data: bytes, position: int, end: int, context: int) -> tuple[dict[int, Any], int]:
    if data[position] == 0:  # none: the common case
        return {}, position + 1
    properties, length = decode_properties(data[position:end], 0, context)
    return properties, position + length


def _decode_message_stored(data: bytes, start: int, end: int) -> MessageStored:
    _, message_id, qos, flags, expires_at = _MESSAGE.unpack_from(data, start)
    position = start + _MESSAGE.size
    stop = position + 2 + (data[position] | data[position + 1] << 8)
    topic = _shared_text(data[position + 2 : stop])
    sender = None
    if flags & _HAS_SENDER:
        position = stop
        stop = position + 2 + (data[position] | data[position + 1] << 8)
        sender = _shared_text(data[position + 2 : stop])
    if stop >= end:
        raise _Truncated("a string runs past the end of its record")
    if data[stop] == 0:
        properties: dict[int, Any] = {}
        stop += 1
    else:
        properties, stop = _properties(data, stop, end, PacketType.PUBLISH)
    return _new(
        MessageStored,
        (
            message_id,
            topic,
            data[stop:end],
            qos,
            bool(flags & _RETAIN),
            properties,
            expires_at if flags & _EXPIRES else None,
            sender,
        ),
    )


def _decode_retained_set(data: bytes, start: int, end: int) -> RetainedSet:
    if end - start != _ID.size:
        raise _Truncated("wrong length")
    return RetainedSet(_ID.unpack_from(data, start)[1])


def _decode_retained_cleared(data: bytes, start: int, end: int) -> RetainedCleared:
    return RetainedCleared(_last_text(data, start + 1, end))


def _decode_session_connected(data: bytes, start: int, end: int) -> SessionConnected:
    _, protocol_version, expiry_interval, connected_at, will_flags = _CONNECTED.unpack_from(data, start)
    client_id, position = _text(data, start + _CONNECTED.size, end)
    owner, position = _text(data, position, end)
    username: str | None
    username, position = _text(data, position, end)
    if not will_flags & 16:
        username = None
    identity_text, position = _text(data, position, end)
    identity = json.loads(identity_text) if identity_text else {}
    if not will_flags & 1:
        if position != end:
            raise _Truncated("bytes after the last field")
        return SessionConnected(
            client_id, protocol_version, expiry_interval, owner, connected_at, None, username, identity
        )
    topic, position = _text(data, position, end)
    properties, position = _properties(data, position, end, WILL)
    will = Will(topic, data[position:end], will_flags >> 2 & 3, bool(will_flags & 2), properties)
    return SessionConnected(
        client_id, protocol_version, expiry_interval, owner, connected_at, will, username, identity
    )


def _decode_session_offline(data: bytes, start: int, end: int) -> SessionOffline:
    _, expiry_interval, disconnected_at, will_kept = _OFFLINE.unpack_from(data, start)
    client_id = _last_text(data, start + _OFFLINE.size, end)
    return SessionOffline(client_id, expiry_interval, disconnected_at, bool(will_kept))


def _decode_session_ended(data: bytes, start: int, end: int) -> SessionEnded:
    return SessionEnded(_last_text(data, start + 1, end))


def _decode_will_cleared(data: bytes, start: int, end: int) -> WillCleared:
    return WillCleared(_last_text(data, start + 1, end))


def _decode_subscribed(data: bytes, start: int, end: int) -> Subscribed:
    _, qos, options, subscription_id = _SUBSCRIBED.unpack_from(data, start)
    client_id, position = _text(data, start + _SUBSCRIBED.size, end)
    return Subscribed(
        client_id,
        _last_text(data, position, end),
        qos,
        bool(options & _NO_LOCAL),
        bool(options & _RETAIN_AS_PUBLISHED),
        options >> 4 & 3,
        subscription_id or None,
    )


def _decode_unsubscribed(data: bytes, start: int, end: int) -> Unsubscribed:
    client_id, position = _text(data, start + 1, end)
    return Unsubscribed(client_id, _last_text(data, position, end))


def _decode_delivery_queued(data: bytes, start: int, end: int) -> DeliveryQueued:
    _, delivery_id, message_id, qos, retain, packet_id, count = _QUEUED.unpack_from(data, start)
    position = start + _QUEUED.size
    subscription_ids: tuple[int, ...] = ()
    if count:
        subscription_ids = struct.unpack_from(f"<{count}I", data, position)
        position += 4 * count
    stop = position + 2 + (data[position] | data[position + 1] << 8)
    if stop != end:
        raise _Truncated("the client id does not end the record")
    return _new(
        DeliveryQueued,
        (
            _shared_text(data[position + 2 : stop]),
            delivery_id,
            message_id,
            qos,
            bool(retain),
            subscription_ids,
            packet_id,
        ),
    )


def _decode_delivery_sent(data: bytes, start: int, end: int) -> DeliverySent:
    _, delivery_id, packet_id = _SENT.unpack_from(data, start)
    return DeliverySent(_last_text(data, start + _SENT.size, end), delivery_id, packet_id)


def _decode_packet_id(record: type[NamedTuple]) -> Callable[[bytes, int, int], Any]:
    def decode_packet_id(data: bytes, start: int, end: int) -> Any:
        return record(_last_text(data, start + _PACKET.size, end), _PACKET.unpack_from(data, start)[1])

    return decode_packet_id


def _decode_clock(data: bytes, start: int, end: int) -> Clock:
    if end - start != _CLOCK.size:
        raise _Truncated("wrong length")
    return Clock(_CLOCK.unpack_from(data, start)[1])


_DECODERS: dict[int, Callable[[bytes, int, int], Record]] = {
    RecordType.MESSAGE_STORED: _decode_message_stored,
    RecordType.RETAINED_SET: _decode_retained_set,
    RecordType.RETAINED_CLEARED: _decode_retained_cleared,
    RecordType.SESSION_CONNECTED: _decode_session_connected,
    RecordType.SESSION_OFFLINE: _decode_session_offline,
    RecordType.SESSION_ENDED: _decode_session_ended,
    RecordType.SUBSCRIBED: _decode_subscribed,
    RecordType.UNSUBSCRIBED: _decode_unsubscribed,
    RecordType.DELIVERY_QUEUED: _decode_delivery_queued,
    RecordType.DELIVERY_SENT: _decode_delivery_sent,
    RecordType.FLIGHT_RELEASED: _decode_packet_id(FlightReleased),
    RecordType.FLIGHT_COMPLETED: _decode_packet_id(FlightCompleted),
    RecordType.INCOMING_QOS2_ADDED: _decode_packet_id(IncomingQos2Added),
    RecordType.INCOMING_QOS2_REMOVED: _decode_packet_id(IncomingQos2Removed),
    RecordType.WILL_CLEARED: _decode_will_cleared,
    RecordType.CLOCK: _decode_clock,
}

_MALFORMED = (_Truncated, IndexError, struct.error, UnicodeDecodeError, MQTTError)


def _malformed(data: bytes, start: int, error: Exception) -> JournalFormatError:
    record_type = data[start]
    if record_type not in _DECODERS:
        return JournalFormatError(f"unknown journal record type {record_type}: written by a newer certmq?")
    return JournalFormatError(f"malformed {RecordType(record_type).name} record: {error}")


def decode_record(data: bytes) -> Record:
    """The record whose type and body are ``data`` (a record without its length and CRC)."""
    try:
        return _DECODERS[data[0]](data, 0, len(data))
    except (KeyError, *_MALFORMED) as error:
        raise _malformed(data, 0, error) from None


class RecordDecoder:
    """Records out of the bytes of a segment after its header, fed in pieces of any size.

    :attr:`offset` is where the last whole, intact block ends. Reading stops for good at a
    block whose checksum does not match (:attr:`damage` says so); bytes left after
    :attr:`offset` when the file ends are a torn tail. A block whose checksum matches but which
    this certmq cannot read raises :class:`JournalFormatError`.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.offset = 0
        self.damage: str | None = None

    @property
    def pending(self) -> int:
        """Bytes after the last whole block."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Record]:
        """The records of the blocks completed by ``data``."""
        if self.damage is not None:
            self._buffer += data
            return []
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        position = record = start = 0
        records: list[Record] = []
        append = records.append
        unpack_block = _BLOCK.unpack_from
        unpack_length = _LENGTH.unpack_from
        decoders = _DECODERS
        with memoryview(buffer) as view:
            try:
                while end - position >= 8:
                    length, checksum = unpack_block(buffer, position)
                    record = position + 8
                    stop = record + length
                    if stop > end:
                        break
                    if length == 0 or crc32(view[record:stop]) != checksum:
                        self.damage = f"the block at offset {self.offset + position} is damaged"
                        break
                    while record < stop:
                        start = record + 4
                        record = start + unpack_length(buffer, record)[0]
                        if record > stop or record == start:
                            raise _Truncated("a record runs past the end of its block")
                        append(decoders[buffer[start]](buffer, start, record))
                    position = stop
            except (KeyError, *_MALFORMED) as error:
                raise _malformed(buffer, start, error) from None
            finally:
                self.offset += position
                self._buffer = buffer[position:]
        return records
