from certmq.auth.apsara_client_id import valid_apsara_client_id
from certmq.broker.messages import USER_PROPERTY_OVERHEAD, Delivery, Message, message_size
from certmq.broker.session import Session
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.session_flows import OutgoingFlight


def test_queue_is_bounded_and_counts_drops() -> None:
    session = Session("c", 5)
    delivery = Delivery(Message("t", b""), 1, False)
    assert session.queue(delivery, 2, 1000)
    assert session.queue(delivery, 2, 1000)
    assert not session.queue(delivery, 2, 1000)
    assert session.dropped_messages == 1


def test_queue_is_bounded_in_bytes_with_the_messages_in_flight() -> None:
    session = Session("c", 5)
    big = Delivery(Message("t", b"x" * 599), 1, False)  # 600 bytes with its topic
    small = Delivery(Message("t", b"x" * 299), 1, False)
    assert session.hold(big, 1000)  # sent at once, in flight
    assert session.held_bytes == 600
    assert not session.queue(big, 10, 1000)
    assert session.queue(small, 10, 1000)
    assert not session.hold(small, 1000)
    assert (session.held_bytes, len(session.pending), session.dropped_messages) == (900, 1, 1)
    session.release(big)  # acknowledged
    assert session.queue(big, 10, 1000)
    assert session.held_bytes == 900


def test_held_bytes_are_counted_anew_for_a_restored_session() -> None:
    session = Session("c", 5)
    session.pending.append(Delivery(Message("a", b"12345"), 1, False))
    session.inflight[1] = OutgoingFlight(Delivery(Message("b/c", b"123"), 2, False), 1, released=True)
    session.count_held_bytes()
    assert session.held_bytes == 6 + 6


def test_a_message_counts_its_topic_payload_and_properties() -> None:
    plain = Message("a/b", b"1234")
    assert message_size(plain) == 7
    with_properties = Message(
        "a/b",
        b"1234",
        properties={
            PropertyId.CONTENT_TYPE: "text/plain",
            PropertyId.CORRELATION_DATA: b"12",
            PropertyId.PAYLOAD_FORMAT_INDICATOR: 1,
            PropertyId.USER_PROPERTY: [("k", "value"), ("", "")],
        },
    )
    assert message_size(with_properties) == 7 + 10 + 2 + (6 + USER_PROPERTY_OVERHEAD) + USER_PROPERTY_OVERHEAD


def test_apsara_client_ids() -> None:
    assert valid_apsara_client_id("GID_Test@@@0001")
    assert valid_apsara_client_id("GID-abc@@@device-1")
    assert not valid_apsara_client_id("GID_Te@@@0001")  # group shorter than 7
    assert not valid_apsara_client_id("Test_abc@@@0001")
    assert not valid_apsara_client_id("GID_Test0001")
    assert not valid_apsara_client_id("GID_Test@@@")
    assert not valid_apsara_client_id("GID_Te st@@@1")
    assert not valid_apsara_client_id("GID_Test@@@" + "x" * 60)
