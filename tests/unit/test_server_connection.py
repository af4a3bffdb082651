"""The server side of an MQTT connection without I/O: bytes and times in, events and bytes out.
No event loop, no transport, no sleep: the time is a number passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from certmq.mqtt.decoding import PacketDecoder
from certmq.mqtt.encoding import encode
from certmq.mqtt.errors import ProtocolError
from certmq.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_connection import WINDOW_FULL, ServerConnection, ServerLimits
from certmq.mqtt.server_events import (
    AUTHENTICATING,
    CLOSED,
    CONNECTED,
    ConnectRefused,
    ConnectTimeout,
    FlightReleased,
    IncomingReleased,
    KeepAliveTimeout,
    ProtocolViolation,
)
from certmq.mqtt.session_flows import NEVER_EXPIRES, OutgoingFlight

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"


@dataclass
class Message:
    topic: str
    payload: bytes = b"x"
    properties: dict[int, Any] = field(default_factory=dict)
    expires_at: float | None = None

    def remaining_expiry(self, now: float) -> int | None:
        return None if self.expires_at is None else max(0, int(self.expires_at - now + 0.999))


@dataclass
class Delivery:
    message: Message
    qos: int = 0
    retain: bool = False
    subscription_ids: tuple[int, ...] = ()


@dataclass
class Flows:
    """A session's QoS exchanges, as the application keeps them."""

    inflight: dict[int, OutgoingFlight[Delivery]] = field(default_factory=dict)
    incoming_qos2: set[int] = field(default_factory=set)
    next_packet_id: int = 1


def events(connection: ServerConnection[Delivery]) -> list[Any]:
    found = []
    while (event := connection.next_event()) is not None:
        found.append(event)
    return found


def sent(connection: ServerConnection[Delivery], version: int) -> list[Packet]:
    """What the connection queued, as the client decodes it."""
    return PacketDecoder(protocol_version=version).feed(connection.data_to_send())


def connected(
    version: int = 5,
    *,
    limits: ServerLimits | None = None,
    now: float = 0.0,
    flows: Flows | None = None,
    **connect: Any,
) -> tuple[ServerConnection[Delivery], Flows]:
    """A connection whose CONNECT (client id "device", clean start) was accepted at ``now``;
    its output emptied."""
    connection: ServerConnection[Delivery] = ServerConnection(limits or ServerLimits(), now)
    connection.receive_data(encode(Connect("device", version, **connect), version), now)
    (event,) = events(connection)
    assert isinstance(event, Connect)
    flows = flows or Flows()
    connection.accept(flows, session_present=False, assigned_client_id=None, now=now)
    connection.data_to_send()
    return connection, flows


# -- CONNECT and CONNACK -----------------------------------------------------------------------


def test_a_connect_waits_for_the_application_and_so_do_the_packets_after_it() -> None:
    connection: ServerConnection[Delivery] = ServerConnection(ServerLimits(), 0.0)
    connection.receive_data(encode(Connect("device-1", 4, keep_alive=60), 4) + PINGREQ, 0.0)
    (event,) = events(connection)
    assert isinstance(event, Connect) and event.client_id == "device-1"
    assert connection.state == AUTHENTICATING and connection.output == []
    connection.receive_data(PINGREQ, 1.0)
    assert connection.next_event() is None, "no event while the CONNECT is being decided"

    connection.accept(Flows(), session_present=False, assigned_client_id=None, now=2.0)
    assert events(connection) == []
    assert connection.state == CONNECTED
    assert connection.data_to_send() == CONNACK_ACCEPTED + PINGRESP + PINGRESP


@pytest.mark.parametrize(
    ("version", "reason_code", "expected"),
    [
        (4, ReasonCode.NOT_AUTHORIZED, b"\x20\x02\x00\x05"),
        (4, ReasonCode.QUOTA_EXCEEDED, b"\x20\x02\x00\x03"),  # no 3.1.1 equivalent: unavailable
        (5, ReasonCode.NOT_AUTHORIZED, b"\x20\x03\x00\x87\x00"),
    ],
)
def test_a_refused_connect_is_told_in_the_clients_version(
    version: int, reason_code: int, expected: bytes
) -> None:
    connection: ServerConnection[Delivery] = ServerConnection(ServerLimits(), 0.0)
    connection.receive_data(encode(Connect("device", version), version), 0.0)
    events(connection)
    connection.refuse(reason_code, "")
    assert connection.state == CLOSED and connection.data_to_send() == expected


def test_a_refusal_says_why_to_a_5_client() -> None:
    connection: ServerConnection[Delivery] = ServerConnection(ServerLimits(), 0.0)
    connection.receive_data(encode(Connect("device", 5), 5), 0.0)
    events(connection)
    connection.refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad signature")
    (connack,) = sent(connection, 5)
    assert connack == ConnAck(0x86, False, {PropertyId.REASON_STRING: "bad signature"})


@pytest.mark.parametrize(
    ("version", "connect", "reason_code"),
    [
        (5, Connect("device", 5, properties={PropertyId.AUTHENTICATION_METHOD: "SCRAM"}), 0x8C),
        (4, Connect("", 4, clean_start=False), 0x02),  # identifier rejected
    ],
)
def test_the_protocol_refuses_what_it_cannot_do(version: int, connect: Connect, reason_code: int) -> None:
    connection: ServerConnection[Delivery] = ServerConnection(ServerLimits(), 0.0)
    connection.receive_data(encode(connect, version) + PINGREQ, 0.0)
    (event,) = events(connection)
    assert isinstance(event, ConnectRefused) and connection.state == CLOSED
    (connack,) = sent(connection, version)
    assert isinstance(connack, ConnAck) and connack.reason_code == reason_code


def test_an_unsupported_protocol_level_gets_a_3_1_1_connack() -> None:
    connection: ServerConnection[Delivery] = ServerConnection(ServerLimits(), 0.0)
    connection.receive_data(encode(Connect("device", 6), 6), 0.0)
    (event,) = events(connection)
    assert isinstance(event, ProtocolViolation) and event.malformed
    assert connection.state == CLOSED and connection.data_to_send() == b"\x20\x02\x00\x01"


def test_connack_announces_the_servers_limits_and_what_it_granted() -> None:
    limits = ServerLimits(
        max_packet_size=4096,
        receive_maximum=100,
        topic_alias_maximum=5,
        retain_available=False,
        server_keep_alive=30,
        max_session_expiry=3600,
    )
    connection: ServerConnection[Delivery] = ServerConnection(limits, 0.0)
    connect = Connect("", 5, keep_alive=600, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 86400})
    connection.receive_data(encode(connect, 5), 0.0)
    events(connection)
    assert connection.session_expiry_interval == 3600 and connection.keep_alive == 30
    connection.accept(Flows(), session_present=False, assigned_client_id="auto-1", now=0.0)
    (connack,) = sent(connection, 5)
    assert connack == ConnAck(
        0,
        False,
        {
            PropertyId.RECEIVE_MAXIMUM: 100,
            PropertyId.MAXIMUM_PACKET_SIZE: 4096,
            PropertyId.TOPIC_ALIAS_MAXIMUM: 5,
            PropertyId.RETAIN_AVAILABLE: 0,
            PropertyId.SESSION_EXPIRY_INTERVAL: 3600,
            PropertyId.ASSIGNED_CLIENT_IDENTIFIER: "auto-1",
            PropertyId.SERVER_KEEP_ALIVE: 30,
        },
    )


@pytest.mark.parametrize(("clean_start", "expiry"), [(True, 0), (False, NEVER_EXPIRES)])
def test_a_3_1_1_session_lasts_as_clean_session_says(clean_start: bool, expiry: int) -> None:
    connection, _ = connected(4, clean_start=clean_start)
    assert connection.session_expiry_interval == expiry


# -- deadlines ---------------------------------------------------------------------------------


def test_no_connect_within_the_connect_timeout_closes_the_connection() -> None:
    connection: ServerConnection[Delivery] = ServerConnection(ServerLimits(connect_timeout=10), 100.0)
    assert connection.next_deadline() == 110.0
    assert connection.check_deadline(109.9) is None
    connection.receive_data(encode(Connect("device", 4), 4), 105.0)
    events(connection)
    assert connection.next_deadline() == 110.0, "a CONNECT being decided is held to the same deadline"
    assert isinstance(connection.check_deadline(110.0), ConnectTimeout)
    assert connection.state == CLOSED and connection.output == [] and connection.next_deadline() is None


def test_keep_alive_closes_a_connection_silent_for_one_and_a_half_periods() -> None:
    connection, _ = connected(5, now=100.0, keep_alive=10)
    assert connection.next_deadline() == 115.0
    assert connection.check_deadline(114.9) is None
    connection.receive_data(PINGREQ, 110.0)
    events(connection)
    connection.data_to_send()
    assert connection.next_deadline() == 125.0
    assert isinstance(connection.check_deadline(125.0), KeepAliveTimeout)
    assert connection.state == CLOSED
    assert sent(connection, 5) == [Disconnect(0x8D, {PropertyId.REASON_STRING: "keep alive timeout"})]


def test_only_complete_packets_keep_a_connection_alive() -> None:
    connection, _ = connected(4, now=0.0, keep_alive=2)
    unfinished = b"\x30\x64\x00\x01t" + bytes(50)  # a PUBLISH announcing 100 bytes
    for second, byte in enumerate(unfinished[:10]):
        connection.receive_data(bytes([byte]), float(second) / 4)
    assert connection.next_deadline() == 3.0
    assert isinstance(connection.check_deadline(3.0), KeepAliveTimeout)
    assert connection.output == [], "3.1.1 has no DISCONNECT from the server"


def test_no_keep_alive_no_deadline_and_the_servers_keep_alive_wins() -> None:
    connection, _ = connected(5, keep_alive=0)
    assert connection.next_deadline() is None and connection.check_deadline(1e9) is None
    connection, _ = connected(5, limits=ServerLimits(server_keep_alive=4), keep_alive=0)
    assert connection.next_deadline() == 6.0


# -- PUBLISH from the client -------------------------------------------------------------------


def publish_bytes(topic: str, alias: int | None = None, qos: int = 0, packet_id: int | None = None) -> bytes:
    properties = {} if alias is None else {PropertyId.TOPIC_ALIAS: alias}
    return encode(Publish(topic, b"p", qos, packet_id=packet_id, properties=properties), 5)


def test_a_topic_alias_set_by_the_client_names_the_topic_of_later_publishes() -> None:
    connection, _ = connected(5)
    connection.receive_data(publish_bytes("plant/line-1", alias=3) + publish_bytes("", alias=3), 1.0)
    first, second = events(connection)
    assert first.topic == second.topic == "plant/line-1"


@pytest.mark.parametrize(
    ("data", "reason_code"),
    [
        (publish_bytes("", alias=2), ReasonCode.PROTOCOL_ERROR),  # never set
        (publish_bytes("plant", alias=11), ReasonCode.TOPIC_ALIAS_INVALID),  # beyond the 10 allowed
        (encode(Publish("plant", b"p", retain=True), 5), ReasonCode.RETAIN_NOT_SUPPORTED),
    ],
)
def test_a_publish_breaking_a_negotiated_rule_closes_the_connection(data: bytes, reason_code: int) -> None:
    connection, _ = connected(5, limits=ServerLimits(retain_available=False))
    connection.receive_data(data + PINGREQ, 1.0)
    (event,) = events(connection)
    assert isinstance(event, ProtocolViolation) and not event.malformed
    assert event.reason_code == reason_code and connection.state == CLOSED
    (disconnect,) = sent(connection, 5)
    assert isinstance(disconnect, Disconnect) and disconnect.reason_code == reason_code


def test_publishes_are_acknowledged_as_the_application_says() -> None:
    connection, flows = connected(5)
    connection.send_puback(7)
    assert connection.data_to_send() == encode(PubAck(7), 5) == encode(PubAck(7), 4)
    first = Publish("t", b"", 2, packet_id=8)
    assert connection.start_incoming_qos2(8) is True
    assert connection.start_incoming_qos2(8) is False, "a retry before PUBREL is not new"
    connection.send_pubrec(8)
    assert not connection.refuse_publish(Publish("t", b"", 1, packet_id=9), ReasonCode.NOT_AUTHORIZED)
    assert not connection.refuse_publish(first, ReasonCode.QUOTA_EXCEEDED)
    assert sent(connection, 5) == [PubRec(8), PubAck(9, 0x87), PubRec(8, 0x97)]
    assert flows.incoming_qos2 == {8}


@pytest.mark.parametrize("version", [5, 4])
def test_an_acceptance_held_back_can_be_withdrawn_on_5_only(version: int) -> None:
    # The broker holds PUBACK / PUBREC until the message is stored (certmq.broker.connection);
    # when the store refuses it, the held reply refuses the PUBLISH instead.
    connection, flows = connected(version)
    connection.send_puback(7)
    assert connection.start_incoming_qos2(8)
    connection.send_pubrec(8)
    connection.send_puback(9)
    held = connection.take_output()
    told = version == 5
    assert connection.withdraw_acceptance(held, 7, ReasonCode.QUOTA_EXCEEDED) == (1 if told else 0)
    assert connection.withdraw_acceptance(held, 8, ReasonCode.UNSPECIFIED_ERROR) == (2 if told else 0)
    assert connection.withdraw_acceptance(held, 10, ReasonCode.QUOTA_EXCEEDED) == 0, "no such reply"
    decoded = PacketDecoder(protocol_version=version).feed(b"".join(held))
    if version == 5:
        assert decoded == [PubAck(7, 0x97), PubRec(8, 0x80), PubAck(9)]
        assert flows.incoming_qos2 == set(), "the refused QoS 2 flow ends"
        # A message stored in two writes (retained) may be refused twice: once is enough.
        assert connection.withdraw_acceptance(held, 7, ReasonCode.UNSPECIFIED_ERROR) == 1
        assert PacketDecoder(protocol_version=5).feed(held[0]) == [PubAck(7, 0x97)]
    else:
        assert decoded == [PubAck(7), PubRec(8), PubAck(9)]
        assert flows.incoming_qos2 == {8}


def test_a_3_1_1_client_is_not_told_no_and_its_qos_2_flow_completes() -> None:
    connection, flows = connected(4)
    assert not connection.refuse_publish(Publish("t", b"", 1, packet_id=1), ReasonCode.NOT_AUTHORIZED)
    assert connection.refuse_publish(Publish("t", b"", 2, packet_id=2), ReasonCode.NOT_AUTHORIZED)
    assert not connection.refuse_publish(Publish("t", b""), ReasonCode.NOT_AUTHORIZED)
    assert sent(connection, 4) == [PubAck(1), PubRec(2)] and flows.incoming_qos2 == {2}


def test_qos_2_publishes_beyond_the_servers_receive_maximum_are_a_protocol_error() -> None:
    connection, _ = connected(5, limits=ServerLimits(receive_maximum=2))
    assert connection.start_incoming_qos2(1) and connection.start_incoming_qos2(2)
    with pytest.raises(ProtocolError) as raised:
        connection.start_incoming_qos2(3)
    assert raised.value.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_pubrel_releases_a_qos_2_publish_and_is_answered() -> None:
    connection, flows = connected(5)
    connection.start_incoming_qos2(4)
    connection.receive_data(encode(PubRel(4), 5) + encode(PubRel(5), 5), 1.0)
    assert events(connection) == [IncomingReleased(4)]
    assert flows.incoming_qos2 == set()
    assert sent(connection, 5) == [PubComp(4), PubComp(5, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)]


# -- PUBLISH to the client ---------------------------------------------------------------------


def test_qos_1_deliveries_stay_in_flight_until_acknowledged_within_the_window() -> None:
    connection, flows = connected(5, properties={PropertyId.RECEIVE_MAXIMUM: 2})
    first, second = Delivery(Message("a"), 1), Delivery(Message("b"), 1)
    assert connection.publish_in_flight(first, 0.0) == 1
    assert not connection.window_full()
    assert connection.publish_in_flight(second, 0.0) == 2
    assert connection.window_full()
    assert connection.publish_in_flight(Delivery(Message("c"), 1), 0.0) == WINDOW_FULL
    assert sent(connection, 5) == [Publish("a", b"x", 1, packet_id=1), Publish("b", b"x", 1, packet_id=2)]
    connection.receive_data(encode(PubAck(1), 5) + encode(PubAck(1), 5) + encode(PubAck(9), 5), 1.0)
    assert events(connection) == [OutgoingFlight(first, 1)], "an unknown or repeated PUBACK is no event"
    assert list(flows.inflight) == [2] and not connection.window_full()


@pytest.mark.parametrize(
    ("version", "properties"),
    [
        (4, {}),  # 3.1.1: no Receive Maximum
        (5, {}),  # 5.0 without one: 65,535
        (5, {PropertyId.RECEIVE_MAXIMUM: 10}),
    ],
)
def test_the_servers_max_inflight_bounds_the_window_whatever_the_client_asks(
    version: int, properties: dict[int, Any]
) -> None:
    connection, _ = connected(version, limits=ServerLimits(max_inflight=2), properties=properties)
    assert [connection.publish_in_flight(Delivery(Message(t), 1), 0.0) for t in "abc"] == [1, 2, WINDOW_FULL]


def test_packet_ids_go_round_and_skip_those_in_flight() -> None:
    connection, flows = connected(5)
    flows.inflight[1] = OutgoingFlight(Delivery(Message("a"), 1), 1)
    flows.inflight[2] = OutgoingFlight(Delivery(Message("a"), 1), 2)
    assert connection.publish_in_flight(Delivery(Message("b"), 1), 0.0) == 3
    flows.next_packet_id = 65535
    assert connection.publish_in_flight(Delivery(Message("c"), 1), 0.0) == 65535
    assert connection.publish_in_flight(Delivery(Message("d"), 1), 0.0) == 4
    assert flows.next_packet_id == 5


def test_a_qos_2_delivery_goes_through_pubrec_and_pubcomp() -> None:
    connection, flows = connected(5)
    delivery = Delivery(Message("a"), 2)
    packet_id = connection.publish_in_flight(delivery, 0.0)
    connection.data_to_send()
    connection.receive_data(encode(PubRec(packet_id), 5) + encode(PubRec(99), 5), 1.0)
    assert events(connection) == [FlightReleased(packet_id)]
    assert flows.inflight[packet_id].released
    assert sent(connection, 5) == [PubRel(packet_id), PubRel(99, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)]
    connection.receive_data(encode(PubComp(packet_id), 5), 2.0)
    assert events(connection) == [OutgoingFlight(delivery, packet_id, released=True)] and flows.inflight == {}


def test_a_pubrec_with_an_error_ends_the_flight() -> None:
    connection, flows = connected(5)
    delivery = Delivery(Message("a"), 2)
    packet_id = connection.publish_in_flight(delivery, 0.0)
    connection.receive_data(encode(PubRec(packet_id, 0x80), 5), 1.0)
    assert events(connection) == [OutgoingFlight(delivery, packet_id)] and flows.inflight == {}


def test_a_resumed_session_resends_what_is_in_flight_on_a_new_connection() -> None:
    first, flows = connected(5)
    waiting, released = Delivery(Message("a"), 1), Delivery(Message("b"), 2)
    first.publish_in_flight(waiting, 0.0)
    second_id = first.publish_in_flight(released, 0.0)
    first.receive_data(encode(PubRec(second_id), 5), 1.0)
    events(first)
    first.close()

    again: ServerConnection[Delivery] = ServerConnection(ServerLimits(), 5.0)
    again.receive_data(encode(Connect("device", 5, clean_start=False), 5), 5.0)
    events(again)
    again.accept(flows, session_present=True, assigned_client_id=None, now=5.0)
    assert again.resend_in_flight(5.0) == 0
    connack, *resent = sent(again, 5)
    assert connack == ConnAck(
        0, True, {PropertyId.MAXIMUM_PACKET_SIZE: 1048576, PropertyId.TOPIC_ALIAS_MAXIMUM: 10}
    )
    assert resent == [Publish("a", b"x", 1, dup=True, packet_id=1), PubRel(second_id)]


def test_the_server_names_topics_by_aliases_within_the_clients_maximum() -> None:
    connection, _ = connected(5, properties={PropertyId.TOPIC_ALIAS_MAXIMUM: 1})
    for topic in ("a/b", "a/b", "c/d"):
        assert connection.publish_at_most_once(Delivery(Message(topic)), 0.0, None)
    assert sent(connection, 5) == [
        Publish("a/b", b"x", properties={PropertyId.TOPIC_ALIAS: 1}),
        Publish("", b"x", properties={PropertyId.TOPIC_ALIAS: 1}),
        Publish("c/d", b"x"),  # no alias left
    ]


def test_a_delivery_carries_its_remaining_expiry_and_subscription_ids() -> None:
    connection, _ = connected(5)
    delivery = Delivery(Message("a", expires_at=100.0), subscription_ids=(4, 9))
    assert connection.publish_at_most_once(delivery, 40.5, None)
    (publish,) = sent(connection, 5)
    assert publish == Publish(
        "a",
        b"x",
        properties={PropertyId.MESSAGE_EXPIRY_INTERVAL: 60, PropertyId.SUBSCRIPTION_IDENTIFIER: [4, 9]},
    )


def test_what_exceeds_the_clients_maximum_packet_size_is_not_sent() -> None:
    connection, flows = connected(5, properties={PropertyId.MAXIMUM_PACKET_SIZE: 40})
    cache: dict[Any, bytes] = {}
    assert not connection.publish_at_most_once(Delivery(Message("a", payload=bytes(50))), 0.0, cache)
    assert connection.publish_in_flight(Delivery(Message("a", payload=bytes(50)), 1), 0.0) == 0
    assert flows.inflight == {} and connection.output == []
    assert connection.publish_at_most_once(Delivery(Message("a", payload=bytes(10))), 0.0, cache)
    # A reason string that would make a packet too large is left out.
    connection.data_to_send()
    connection.close(ReasonCode.ADMINISTRATIVE_ACTION, "x" * 60)
    assert sent(connection, 5) == [Disconnect(0x98)]


def test_a_qos_0_packet_encoded_for_one_connection_serves_the_next() -> None:
    cache: dict[Any, bytes] = {}
    delivery = Delivery(Message("a"))
    first, _ = connected(4)
    assert first.publish_at_most_once(delivery, 0.0, cache)
    assert cache == {(4, False, ()): first.data_to_send()}
    cache[(4, False, ())] = b"shared"
    second, _ = connected(4)
    assert second.publish_at_most_once(delivery, 0.0, cache)
    assert second.data_to_send() == b"shared"
    # A connection that names topics by aliases encodes its own.
    aliased, _ = connected(5, properties={PropertyId.TOPIC_ALIAS_MAXIMUM: 1})
    assert aliased.publish_at_most_once(delivery, 0.0, cache)
    assert sent(aliased, 5) == [Publish("a", b"x", properties={PropertyId.TOPIC_ALIAS: 1})]
    # One encoded for a client that takes larger packets is not sent to one that does not.
    cache[(5, False, ())] = bytes(100)
    small, _ = connected(5, properties={PropertyId.MAXIMUM_PACKET_SIZE: 50})
    assert not small.publish_at_most_once(delivery, 0.0, cache) and small.output == []


# -- SUBSCRIBE, DISCONNECT, AUTH, bad bytes ----------------------------------------------------


def test_suback_tells_a_3_1_1_client_0x80_for_every_refusal() -> None:
    connection, _ = connected(4)
    connection.send_suback(3, [1, ReasonCode.NOT_AUTHORIZED, ReasonCode.QUOTA_EXCEEDED])
    assert connection.data_to_send() == encode(SubAck(3, [1, 0x80, 0x80]), 4)


def test_subscribe_and_unsubscribe_are_for_the_application() -> None:
    connection, _ = connected(5)
    subscribe = Subscribe(1, [Subscription("a/#", 1)])
    unsubscribe = Unsubscribe(2, ["a/#"])
    connection.receive_data(encode(subscribe, 5) + encode(unsubscribe, 5), 1.0)
    assert events(connection) == [subscribe, unsubscribe]


def test_no_local_on_a_shared_subscription_is_a_protocol_error() -> None:
    connection, _ = connected(5)
    subscribe = Subscribe(1, [Subscription("a", 1), Subscription("$share/g/a", 1, no_local=True)])
    connection.receive_data(encode(subscribe, 5), 1.0)
    (event,) = events(connection)
    assert isinstance(event, ProtocolViolation) and event.reason_code == ReasonCode.PROTOCOL_ERROR


def test_disconnect_may_change_the_session_expiry_but_not_from_0() -> None:
    connection, _ = connected(
        5, limits=ServerLimits(max_session_expiry=600), properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60}
    )
    disconnect = Disconnect(0, {PropertyId.SESSION_EXPIRY_INTERVAL: 7200})
    connection.receive_data(encode(disconnect, 5), 1.0)
    assert events(connection) == [disconnect]
    assert connection.session_expiry_interval == 600 and connection.state == CLOSED

    connection, _ = connected(5)
    connection.receive_data(encode(disconnect, 5), 1.0)
    (event,) = events(connection)
    assert isinstance(event, ProtocolViolation) and event.reason_code == ReasonCode.PROTOCOL_ERROR


def test_auth_without_an_authentication_method_is_a_protocol_error() -> None:
    connection, _ = connected(5)
    connection.receive_data(encode(Auth(0x18), 5), 1.0)
    (event,) = events(connection)
    assert isinstance(event, ProtocolViolation) and connection.state == CLOSED


def test_packets_before_bad_bytes_are_handled_then_the_error_is_reported_once() -> None:
    connection, _ = connected(4)
    connection.receive_data(encode(Publish("a", b"1"), 4) + b"\x30\x02\x00\x05", 1.0)  # topic cut short
    first, second = events(connection)
    assert isinstance(first, Publish)
    assert isinstance(second, ProtocolViolation) and second.malformed
    assert connection.state == CLOSED and connection.next_event() is None
    connection.receive_data(PINGREQ, 2.0)
    assert connection.next_event() is None and connection.output == []


def test_a_ping_is_answered_without_the_application() -> None:
    connection, _ = connected(5)
    connection.receive_data(encode(PingReq(), 5) * 2, 1.0)
    assert events(connection) == [] and connection.data_to_send() == PINGRESP * 2


def test_output_can_be_taken_in_part() -> None:
    connection, _ = connected(5)
    connection.receive_data(PINGREQ * 3, 1.0)
    events(connection)
    assert connection.output_size == 6
    assert connection.take_output(1) == [PINGRESP, PINGRESP]
    assert connection.output_size == 2 and connection.data_to_send() == PINGRESP
