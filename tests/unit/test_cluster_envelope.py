"""certmq.cluster.envelope and the duplicate filter: what a message keeps as it travels between nodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certmq.broker.messages import Message
from certmq.cluster.envelope import EnvelopeError, open_envelope, seal
from certmq.cluster.router import Duplicates, travels_stored
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


@given(
    payload=st.binary(max_size=200),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    properties=properties,
    expiry=st.none() | st.floats(0, 1e6),
    sender=st.none() | text,
    number=st.integers(0, 2**64 - 1),
)
def test_a_message_arrives_as_it_was_sent(
    payload: bytes,
    qos: int,
    retain: bool,
    properties: dict[int, object],
    expiry: float | None,
    sender: str | None,
    number: int,
) -> None:
    sent_at, received_at = 1000.0, 5000.0
    expires_at = None if expiry is None else sent_at + expiry
    message = Message("a/b", payload, qos, retain, dict(properties), expires_at, sender)
    received = open_envelope("a/b", seal(message, "node-1", number, sent_at), received_at)
    assert (received.origin, received.number) == ("node-1", number)
    got = received.message
    assert (got.topic, got.payload, got.qos, got.retain, got.sender) == ("a/b", payload, qos, retain, sender)
    assert got.properties == properties
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
        b"\x01",
        b"\x02\x00" + bytes(9),
        b"\x01\x10" + bytes(8) + b"\x05ab",
        b"\x01\x00" + bytes(8) + b"\x01n\x05",
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
