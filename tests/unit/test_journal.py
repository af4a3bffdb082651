"""The journal's record format: every record round-trips, a stream split anywhere reads the same,
and a log cut or damaged anywhere gives back every record before the cut and nothing after."""

from __future__ import annotations

import struct
import zlib
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certmq.broker.journal import (
    Clock,
    DeliveryQueued,
    DeliverySent,
    FlightCompleted,
    FlightReleased,
    IncomingQos2Added,
    IncomingQos2Removed,
    JournalFormatError,
    MessageStored,
    Record,
    RecordDecoder,
    RecordType,
    RetainedCleared,
    RetainedSet,
    SessionConnected,
    SessionEnded,
    SessionOffline,
    Subscribed,
    Unsubscribed,
    WillCleared,
    encode_record,
)
from certmq.broker.messages import FORWARDED_PROPERTIES
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import WILL

from .test_codec_properties import (
    SETTINGS,
    _property_values,
    fed_in_pieces,
    properties_for,
    texts,
    topic_filters,
    topic_names,
)

client_ids = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
ids = st.integers(1, 2**64 - 1)
packet_ids = st.integers(1, 0xFFFF)
wall_times = st.floats(0, 4e9, allow_nan=False)
expiry_intervals = st.integers(0, 0xFFFF_FFFF)


@st.composite
def forwarded_properties(draw: st.DrawFn) -> dict[int, object]:
    chosen = draw(st.lists(st.sampled_from(FORWARDED_PROPERTIES), unique=True, max_size=4))
    return {identifier: draw(_property_values(identifier)) for identifier in chosen}


wills = st.builds(
    Will,
    topic_names,
    st.binary(max_size=40),
    st.integers(0, 2),
    st.booleans(),
    properties_for(WILL),
)

RECORD_STRATEGIES: dict[type, st.SearchStrategy[Record]] = {
    MessageStored: st.builds(
        MessageStored,
        ids,
        topic_names,
        st.binary(max_size=200),
        st.integers(0, 2),
        st.booleans(),
        forwarded_properties(),
        st.none() | wall_times,
        st.none() | client_ids,
    ),
    RetainedSet: st.builds(RetainedSet, ids),
    RetainedCleared: st.builds(RetainedCleared, topic_names),
    SessionConnected: st.builds(
        SessionConnected,
        client_ids,
        st.sampled_from([3, 4, 5]),
        expiry_intervals,
        texts,
        wall_times,
        st.none() | wills,
    ),
    SessionOffline: st.builds(SessionOffline, client_ids, expiry_intervals, wall_times, st.booleans()),
    SessionEnded: st.builds(SessionEnded, client_ids),
    Subscribed: st.builds(
        Subscribed,
        client_ids,
        topic_filters(),
        st.integers(0, 2),
        st.booleans(),
        st.booleans(),
        st.integers(0, 2),
        st.none() | st.integers(1, 268_435_455),
    ),
    Unsubscribed: st.builds(Unsubscribed, client_ids, topic_filters()),
    DeliveryQueued: st.builds(
        DeliveryQueued,
        client_ids,
        ids,
        ids,
        st.integers(1, 2),
        st.booleans(),
        st.lists(st.integers(1, 268_435_455), max_size=4).map(tuple),
        st.integers(0, 0xFFFF),
    ),
    DeliverySent: st.builds(DeliverySent, client_ids, ids, packet_ids),
    FlightReleased: st.builds(FlightReleased, client_ids, packet_ids),
    FlightCompleted: st.builds(FlightCompleted, client_ids, packet_ids),
    IncomingQos2Added: st.builds(IncomingQos2Added, client_ids, packet_ids),
    IncomingQos2Removed: st.builds(IncomingQos2Removed, client_ids, packet_ids),
    WillCleared: st.builds(WillCleared, client_ids),
    Clock: st.builds(Clock, wall_times),
}
records = st.one_of(*RECORD_STRATEGIES.values())


def test_every_record_type_has_a_strategy() -> None:
    assert set(RECORD_STRATEGIES) == set(get_args(Record))
    assert len(RECORD_STRATEGIES) == len(RecordType)


@SETTINGS
@given(st.lists(records, max_size=8), st.data())
def test_records_round_trip_however_the_stream_is_split(written: list[Record], data: st.DataObject) -> None:
    stream = b"".join(encode_record(record) for record in written)
    decoder = RecordDecoder()
    assert fed_in_pieces(decoder.feed, stream, data, 5) == written
    assert (decoder.offset, decoder.pending, decoder.damage) == (len(stream), 0, None)


@SETTINGS
@given(st.lists(records, min_size=1, max_size=6), st.data())
def test_a_log_cut_anywhere_keeps_every_whole_record_before_the_cut(
    written: list[Record], data: st.DataObject
) -> None:
    encoded = [encode_record(record) for record in written]
    stream = b"".join(encoded)
    cut = data.draw(st.integers(0, len(stream)))
    decoder = RecordDecoder()
    read = decoder.feed(stream[:cut])
    boundaries = [sum(map(len, encoded[:count])) for count in range(len(encoded) + 1)]
    whole = max(count for count, boundary in enumerate(boundaries) if boundary <= cut)
    assert read == written[:whole]
    assert decoder.offset == boundaries[whole]
    assert decoder.pending == cut - boundaries[whole]


@SETTINGS
@given(st.lists(records, min_size=1, max_size=6), st.data())
def test_a_damaged_byte_stops_reading_at_its_record(written: list[Record], data: st.DataObject) -> None:
    encoded = [encode_record(record) for record in written]
    stream = bytearray(b"".join(encoded))
    position = data.draw(st.integers(0, len(stream) - 1))
    stream[position] ^= data.draw(st.integers(1, 255))
    damaged = next(index for index in range(len(encoded)) if sum(map(len, encoded[: index + 1])) > position)
    decoder = RecordDecoder()
    read = decoder.feed(bytes(stream))
    # The records before the damaged one are all there; none after it is read.
    assert read == written[:damaged]
    assert decoder.offset == sum(map(len, encoded[:damaged]))


def test_a_zero_filled_tail_is_damage_not_records() -> None:
    record = encode_record(Clock(1.0))
    decoder = RecordDecoder()
    assert decoder.feed(record + bytes(4096)) == [Clock(1.0)]
    assert decoder.offset == len(record)
    assert decoder.damage is not None


def test_a_record_of_an_unknown_type_is_refused_as_a_newer_format() -> None:
    body = bytes((200,)) + b"future"
    record = struct.pack("<II", len(body), zlib.crc32(body)) + body
    with pytest.raises(JournalFormatError, match="newer certmq"):
        RecordDecoder().feed(record)
