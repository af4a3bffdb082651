from certmq.broker.connection import valid_apsara_client_id
from certmq.broker.messages import Message
from certmq.broker.session import Delivery, OutgoingFlight, Session


def test_packet_ids_skip_those_in_flight_and_wrap() -> None:
    session = Session("c", 5)
    delivery = Delivery(Message("t", b""), 1, False)
    session.inflight[1] = OutgoingFlight(delivery)
    session.inflight[2] = OutgoingFlight(delivery)
    assert session.allocate_packet_id() == 3
    session._next_packet_id = 65535
    assert session.allocate_packet_id() == 65535
    assert session.allocate_packet_id() == 3


def test_queue_is_bounded_and_counts_drops() -> None:
    session = Session("c", 5)
    delivery = Delivery(Message("t", b""), 1, False)
    assert session.queue(delivery, 2)
    assert session.queue(delivery, 2)
    assert not session.queue(delivery, 2)
    assert session.dropped_messages == 1


def test_apsara_client_ids() -> None:
    assert valid_apsara_client_id("GID_Test@@@0001")
    assert valid_apsara_client_id("GID-abc@@@device-1")
    assert not valid_apsara_client_id("GID_Te@@@0001")  # group shorter than 7
    assert not valid_apsara_client_id("Test_abc@@@0001")
    assert not valid_apsara_client_id("GID_Test0001")
    assert not valid_apsara_client_id("GID_Test@@@")
    assert not valid_apsara_client_id("GID_Te st@@@1")
    assert not valid_apsara_client_id("GID_Test@@@" + "x" * 60)
