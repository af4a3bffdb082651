"""certmq.cluster.envelope and the duplicate filter: what a message keeps as it travels between nodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certmq.broker.messages import Message
from certmq.cluster.envelope import (
    ENTRY_BYTES,
    ENVELOPE_BYTES,
    Duplicates,
    EnvelopeError,
    cut_into_envelopes,
    open_envelope,
    seal,
)
from certmq.cluster.router import travels_stored
from certmq.mqtt.properties import PropertyId

text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)
properties = st.fixed_dictionaries(
    {},
    optional={
        PropertyId.PAYLOAD_FORMAT_INDICATOR: st.integers(0, 1),
        PropertyId.CONTENT_TYPE: text,
        PropertyId.RESPONSE_TOPIC: text.filter(lambda topic: topic and not set(topic) & set("+#")),
        PropertyId.CORRELATION_DATA: st.binary(max_size=40),
        PropertyId.USER_PROPERTY: st.lists(st.tuples(text, text), min_size=1, max_size=4),
    },
)


messages = st.builds(
    lambda payload, qos, retain, properties, expiry, sender: (
        payload,
        qos,
        retain,
        properties,
        expiry,
        sender,
    ),
    st.binary(max_size=200),
    st.integers(0, 2),
    st.booleans(),
    properties,
    st.none() | st.floats(0, 1e6),
    # Runs of one client's messages (a client id is written once per run), and ids that are
    # the start of another.
    st.none() | st.sampled_from(["device-1", "device-12", ""]) | text,
)


@given(sent=st.lists(messages, min_size=1, max_size=8), number=st.integers(0, 2**64 - 1))
def test_messages_arrive_as_they_were_sent_in_order(
    sent: list[tuple[bytes, int, bool, dict[int, object], float | None, str | None]], number: int
) -> None:
    sent_at, received_at = 1000.0, 5000.0
    envelope = [
        Message(
            "a/b", payload, qos, retain, dict(props), None if expiry is None else sent_at + expiry, sender
        )
        for payload, qos, retain, props, expiry, sender in sent
    ]
    received = open_envelope("a/b", seal(envelope, "node-1", number, sent_at), received_at)
    assert (received.origin, received.number) == ("node-1", number)
    assert len(received.messages) == len(sent)
    for got, (payload, qos, retain, props, expiry, sender) in zip(received.messages, sent, strict=True):
        assert (got.topic, got.payload, got.qos, got.retain, got.sender) == (
            "a/b",
            payload,
            qos,
            retain,
            sender,
        )
        assert got.properties == props
        if expiry is None:
            assert got.expires_at is None
        else:
            # The time left travels, in milliseconds: it counts from the arrival on.
            assert got.expires_at is not None
            assert abs((got.expires_at - received_at) - min(expiry, 0xFFFFFFFF / 1000)) <= 0.001


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",
        b"\x01" + bytes(9),  # an earlier format
        b"\x02" + bytes(8) + b"\x05ab",  # ends within the origin
        b"\x02" + bytes(8) + b"\x01n",  # no message
        b"\x02" + bytes(8) + b"\x01n" + b"\x00\x00\x00\x00\x05ab",  # ends within the payload
        b"\x02" + bytes(8) + b"\x01n" + b"\x10\x00\x00\x00\x00",  # no sender's length
        b"\x02" + bytes(8) + b"\x01n" + b"\x10\x00\x00\x00\x00\x00\x09ab",  # ends within the sender
        b"\x02" + bytes(8) + b"\x01n" + b"\x20\x00\x00\x00\x00\x05",  # ends within the properties
        b"\x02" + bytes(8) + b"\x01n" + b"\x08\x00\x00\x00\x00\x00",  # ends within the expiry
    ],
)
def test_bytes_that_are_not_an_envelope_are_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope("a/b", data, 0.0)


def test_a_number_seen_once_is_a_duplicate_the_second_time_within_the_window() -> None:
    duplicates = Duplicates(window=3)
    assert [duplicates.seen("a", n) for n in (1, 2, 1, 3)] == [False, False, True, False]
    assert not duplicates.seen("b", 1)  # another origin's numbers are its own
    duplicates.seen("a", 4)
    assert not duplicates.seen("a", 1)  # beyond the window: forgotten


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        (Message("a/b", b"x", 0), False),
        (Message("a/b", b"x", 1), True),
        (Message("a/b", b"x", 2), True),
        (Message("a/b", b"x", 0, retain=True), True),
        (Message("g/p2p/client", b"x", 0), True),
    ],
)
def test_what_travels_through_the_stream(message: Message, stored: bool) -> None:
    assert travels_stored(message) is stored


@given(sizes=st.lists(st.integers(0, ENVELOPE_BYTES + 10), max_size=30))
def test_gathered_messages_are_cut_into_envelopes_in_order_within_the_limit(sizes: list[int]) -> None:
    gathered = [Message("a/b", bytes(size), 0) for size in sizes]
    envelopes = list(cut_into_envelopes(gathered)) if gathered else []
    assert [message for envelope in envelopes for message in envelope] == gathered
    for envelope in envelopes:
        assert envelope
        if len(envelope) > 1:
            assert sum(ENTRY_BYTES + len(message.payload) for message in envelope) <= ENVELOPE_BYTES


def test_the_messages_of_one_turn_travel_in_one_envelope_up_to_the_limit() -> None:
    small = [Message("a/b", bytes(100), 0) for _ in range(1000)]
    assert [len(envelope) for envelope in cut_into_envelopes(small)] == [1000]
    per_envelope = ENVELOPE_BYTES // (ENTRY_BYTES + 1000)
    large = [Message("a/b", bytes(1000), 0) for _ in range(per_envelope * 2 + 1)]
    assert [len(envelope) for envelope in cut_into_envelopes(large)] == [per_envelope, per_envelope, 1]
