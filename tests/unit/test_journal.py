"""The journal's record format: every record round-trips, a stream split anywhere reads the same,
and a log cut or damaged anywhere gives back every record before the cut and nothing after."""

from __future__ import annotations

import itertools
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
    encode_block,
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
        st.none() | texts,
        st.dictionaries(
            st.sampled_from(["cert.cn", "cert.sn", "cert.ca_sn", "access_key_id"]), texts, max_size=3
        ),
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


# What commits write: blocks of records.
blocks = st.lists(st.lists(records, min_size=1, max_size=4), min_size=1, max_size=4)


def encoded_blocks(written: list[list[Record]]) -> list[bytes]:
    return [encode_block([encode_record(record) for record in block]) for block in written]


def records_of(written: list[list[Record]]) -> list[Record]:
    return [record for block in written for record in block]


@SETTINGS
@given(blocks, st.data())
def test_records_round_trip_however_the_stream_is_split(
    written: list[list[Record]], data: st.DataObject
) -> None:
    stream = b"".join(encoded_blocks(written))
    decoder = RecordDecoder()
    assert fed_in_pieces(decoder.feed, stream, data, 5) == records_of(written)
    assert (decoder.offset, decoder.pending, decoder.damage) == (len(stream), 0, None)


@SETTINGS
@given(blocks, st.data())
def test_a_log_cut_anywhere_keeps_every_whole_block_before_the_cut(
    written: list[list[Record]], data: st.DataObject
) -> None:
    encoded = encoded_blocks(written)
    stream = b"".join(encoded)
    cut = data.draw(st.integers(0, len(stream)))
    decoder = RecordDecoder()
    read = decoder.feed(stream[:cut])
    ends = list(itertools.accumulate(map(len, encoded), initial=0))
    whole = max(count for count, end in enumerate(ends) if end <= cut)
    # A block cut short was never acknowledged: none of its records is read.
    assert read == records_of(written[:whole])
    assert decoder.offset == ends[whole]
    assert decoder.pending == cut - ends[whole]


@SETTINGS
@given(blocks, st.data())
def test_a_damaged_byte_stops_reading_at_its_block(written: list[list[Record]], data: st.DataObject) -> None:
    encoded = encoded_blocks(written)
    stream = bytearray(b"".join(encoded))
    position = data.draw(st.integers(0, len(stream) - 1))
    stream[position] ^= data.draw(st.integers(1, 255))
    ends = list(itertools.accumulate(map(len, encoded)))
    damaged = next(index for index, end in enumerate(ends) if end > position)
    decoder = RecordDecoder()
    read = decoder.feed(bytes(stream))
    # The blocks before the damaged one are all there; nothing after it is read.
    assert read == records_of(written[:damaged])
    assert decoder.offset == (ends[damaged - 1] if damaged else 0)


def test_a_zero_filled_tail_is_damage_not_records() -> None:
    block = encode_block([encode_record(Clock(1.0))])
    decoder = RecordDecoder()
    assert decoder.feed(block + bytes(4096)) == [Clock(1.0)]
    assert decoder.offset == len(block)
    assert decoder.damage is not None


def block_of(*bodies: bytes) -> bytes:
    """A block with a right checksum around records of any content."""
    payload = b"".join(struct.pack("<I", len(body)) + body for body in bodies)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def test_a_record_of_an_unknown_type_is_refused_as_a_newer_format() -> None:
    with pytest.raises(JournalFormatError, match="newer certmq"):
        RecordDecoder().feed(block_of(bytes((200,)) + b"future"))


def test_a_record_that_runs_past_its_block_is_refused() -> None:
    clock = encode_record(Clock(1.0))
    payload = clock[:-1]  # its length says one byte more than the block holds
    with pytest.raises(JournalFormatError, match="runs past"):
        RecordDecoder().feed(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
