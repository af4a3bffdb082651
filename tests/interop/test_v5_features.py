"""MQTT 5.0 features seen from clients: topic aliases, subscription identifiers, no-local, receive
maximum, maximum packet size, request/response properties, server keep alive and assigned client
identifiers."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes

import raw_mqtt
from broker_process import expect_failure_on_mosquitto
from paho_client import V5, V311, properties


def test_topic_alias_from_client_is_resolved(clients, topic):
    subscriber = clients.connected(V5)
    subscriber.subscribe(f"{topic}/#", qos=1)
    publisher = clients.paho()
    connack = publisher.connect()
    assert connack.property("TopicAliasMaximum", 0) >= 1, "broker does not accept topic aliases"

    publisher.publish(
        f"{topic}/long/topic/name", b"first", qos=1, props=properties(PacketTypes.PUBLISH, TopicAlias=1)
    )
    publisher.publish("", b"second", qos=1, props=properties(PacketTypes.PUBLISH, TopicAlias=1))
    publisher.publish(f"{topic}/other", b"third", qos=1, props=properties(PacketTypes.PUBLISH, TopicAlias=1))
    publisher.publish("", b"fourth", qos=1, props=properties(PacketTypes.PUBLISH, TopicAlias=1))

    received = [(message.topic, message.payload) for message in subscriber.expect_messages(4)]
    assert received == [
        (f"{topic}/long/topic/name", b"first"),
        (f"{topic}/long/topic/name", b"second"),
        (f"{topic}/other", b"third"),
        (f"{topic}/other", b"fourth"),
    ]
    for message in subscriber.history:
        assert message.property("TopicAlias") is None, "a client's topic alias must not be forwarded"


def _assert_disconnected_with(client, reason_code):
    packets = client.wait_closed(5)
    disconnects = [packet for packet in packets if packet.kind == raw_mqtt.DISCONNECT]
    assert disconnects, f"connection closed without DISCONNECT; read {packets}"
    assert disconnects[0].reason_code == reason_code, f"expected 0x{reason_code:02X}, got {disconnects[0]!r}"


def test_topic_alias_beyond_the_maximum_is_refused(broker_factory, clients, topic):
    limited = broker_factory(CERTMQ_MQTT_TOPIC_ALIAS_MAXIMUM=2)
    on_limited = clients.for_broker(limited)
    client = on_limited.raw()
    connack = client.connect(on_limited.client_id("alias"))
    assert connack.properties.get(raw_mqtt.TOPIC_ALIAS_MAXIMUM) == 2
    client.publish(topic, b"x", qos=0, properties={raw_mqtt.TOPIC_ALIAS: 3})
    _assert_disconnected_with(client, 0x94)  # Topic Alias invalid


def test_topic_alias_zero_is_refused(clients, topic):
    client = clients.raw()
    client.connect(clients.client_id("alias0"))
    client.publish(topic, b"x", qos=0, properties={raw_mqtt.TOPIC_ALIAS: 0})
    packets = client.wait_closed(5)
    disconnects = [packet for packet in packets if packet.kind == raw_mqtt.DISCONNECT]
    # Protocol Error (0x82) or Topic Alias invalid (0x94); mosquitto says Malformed Packet (0x81).
    assert disconnects and disconnects[0].reason_code in (0x81, 0x82, 0x94), (
        f"expected 0x94 or 0x82, got {packets}"
    )


def test_unknown_topic_alias_is_refused(clients):
    client = clients.raw()
    client.connect(clients.client_id("alias-unknown"))
    client.publish("", b"x", qos=0, properties={raw_mqtt.TOPIC_ALIAS: 1})
    packets = client.wait_closed(5)
    disconnects = [packet for packet in packets if packet.kind == raw_mqtt.DISCONNECT]
    # Protocol Error (0x82) or Topic Alias invalid (0x94); mosquitto says Malformed Packet (0x81).
    assert disconnects and disconnects[0].reason_code in (0x81, 0x82, 0x94), (
        f"expected 0x82 or 0x94, got {packets}"
    )


@expect_failure_on_mosquitto("never sends topic aliases to clients")
def test_broker_uses_topic_aliases_toward_a_client_that_allows_them(clients, topic):
    receiver = clients.raw()
    receiver.connect(clients.client_id("aliases"), properties={raw_mqtt.TOPIC_ALIAS_MAXIMUM: 5})
    receiver.subscribe([(f"{topic}/#", 1)])
    publisher = clients.connected(V5)
    name = f"{topic}/a/rather/long/topic/name/that/is/worth/an/alias"
    for n in range(4):
        publisher.publish(name, f"m{n}".encode(), qos=1)

    packets = receiver.read_publishes(4)
    aliases = {}
    for packet in packets:
        alias = packet.properties.get(raw_mqtt.TOPIC_ALIAS)
        if alias is not None:
            assert 1 <= alias <= 5, f"alias {alias} beyond the client's Topic Alias Maximum 5"
            if packet.topic:
                aliases[alias] = packet.topic
            else:
                assert alias in aliases, f"alias {alias} used before it was set: {packet!r}"
        else:
            assert packet.topic == name
        assert (packet.topic or aliases[alias]) == name
    assert [packet.payload for packet in packets] == [b"m0", b"m1", b"m2", b"m3"]
    assert any(not packet.topic for packet in packets), f"no message used an alias: {packets}"


def test_no_topic_alias_toward_a_client_that_did_not_allow_them(clients, topic):
    receiver = clients.raw()
    receiver.connect(clients.client_id("no-aliases"))
    receiver.subscribe([(f"{topic}/#", 1)])
    publisher = clients.connected(V5)
    for n in range(3):
        publisher.publish(f"{topic}/t", f"m{n}".encode(), qos=1)
    for packet in receiver.read_publishes(3):
        assert packet.topic == f"{topic}/t"
        assert raw_mqtt.TOPIC_ALIAS not in packet.properties


def test_subscription_identifiers_delivered_with_matching_messages(clients, topic):
    subscriber = clients.connected(V5)
    subscriber.subscribe(
        f"{topic}/a/+", qos=1, props=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1)
    )
    subscriber.subscribe(
        f"{topic}/b/#", qos=1, props=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2)
    )
    subscriber.subscribe(
        f"{topic}/a/x", qos=1, props=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=300)
    )
    subscriber.subscribe(f"{topic}/plain", qos=1)
    publisher = clients.connected(V5)

    publisher.publish(f"{topic}/b/y", b"b", qos=1)
    message = subscriber.expect_message()
    assert message.property("SubscriptionIdentifier") == [2]

    publisher.publish(f"{topic}/plain", b"plain", qos=1)
    message = subscriber.expect_message()
    assert message.property("SubscriptionIdentifier") is None

    # Two overlapping subscriptions: one message carrying both identifiers, or one per subscription.
    publisher.publish(f"{topic}/a/x", b"a", qos=1)
    publisher.publish(f"{topic}/plain", b"sentinel", qos=1)
    identifiers = []
    while (message := subscriber.expect_message()).payload != b"sentinel":
        assert message.payload == b"a"
        identifiers += message.property("SubscriptionIdentifier")
    assert sorted(identifiers) == [1, 300]


def test_no_local_suppresses_own_messages(clients, topic):
    client = clients.connected(V5)
    client.subscribe(f"{topic}/chat", qos=1, no_local=True)
    client.subscribe(f"{topic}/sentinel", qos=1)
    other = clients.connected(V5)

    client.publish(f"{topic}/chat", b"mine", qos=1)
    client.publish(f"{topic}/sentinel", b"sentinel", qos=1)
    assert client.expect_message().payload == b"sentinel", "own message delivered despite no-local"
    other.publish(f"{topic}/chat", b"theirs", qos=1)
    assert client.expect_message().payload == b"theirs"


def test_without_no_local_own_messages_come_back(clients, topic):
    client = clients.connected(V5)
    client.subscribe(topic, qos=1)
    client.publish(topic, b"echo", qos=1)
    assert client.expect_message().payload == b"echo"


@pytest.mark.parametrize("receive_maximum", [1, 3])
def test_receive_maximum_limits_unacknowledged_messages(clients, topic, receive_maximum):
    receiver = clients.raw()
    receiver.connect(clients.client_id("slow"), properties={raw_mqtt.RECEIVE_MAXIMUM: receive_maximum})
    receiver.subscribe([(topic, 1)])
    publisher = clients.connected(V5)
    total = 10
    for n in range(total):
        publisher.publish(topic, f"m{n}".encode(), qos=1)

    # The broker may send no more than receive_maximum QoS 1 messages before the first PUBACK.
    in_flight = receiver.read_publishes(receive_maximum, acknowledge=False)
    with pytest.raises(TimeoutError):
        extra = receiver.read_packet(timeout=1.0)
        pytest.fail(f"broker exceeded Receive Maximum {receive_maximum}: sent {extra!r}")

    delivered = list(in_flight)
    receiver.acknowledge(in_flight[0])
    outstanding = in_flight[1:]
    while len(delivered) < total:
        packet = receiver.read_publishes(1, acknowledge=False)[0]
        delivered.append(packet)
        outstanding.append(packet)
        assert len(outstanding) <= receive_maximum, "more unacknowledged messages than Receive Maximum"
        receiver.acknowledge(outstanding.pop(0))
    assert [packet.payload for packet in delivered] == [f"m{n}".encode() for n in range(total)]


def test_client_maximum_packet_size_is_respected(clients, topic):
    receiver = clients.paho()
    receiver.connect(props=properties(PacketTypes.CONNECT, MaximumPacketSize=256))
    receiver.subscribe(topic, qos=1)
    publisher = clients.connected(V5)
    publisher.publish(topic, b"x" * 1000, qos=1)
    publisher.publish(topic, b"small", qos=1)

    message = receiver.expect_message()
    assert message.payload == b"small", "a packet larger than the client's Maximum Packet Size was sent"
    receiver.assert_connected()


def test_broker_maximum_packet_size_enforced(broker_factory, clients, topic):
    small = broker_factory(CERTMQ_MQTT_MAX_PACKET_SIZE=1024)
    on_small = clients.for_broker(small)
    client = on_small.raw()
    connack = client.connect(on_small.client_id("big"))
    assert connack.properties.get(raw_mqtt.MAXIMUM_PACKET_SIZE) == 1024

    client.publish(topic, b"fits", qos=1)
    assert client.read_until(raw_mqtt.PUBACK).reason_code in (None, 0, 0x10)
    bystander = on_small.connected(V5)
    bystander.subscribe(topic, qos=1)

    client.publish(topic, b"y" * 2000, qos=1)
    _assert_disconnected_with(client, 0x95)  # Packet too large
    on_small.connected(V5).publish(topic, b"after", qos=1)
    assert bystander.expect_message().payload == b"after", "other clients affected"


def test_request_response_properties_passed_through(clients, topic):
    responder = clients.connected(V5)
    responder.subscribe(f"{topic}/request", qos=1)
    requester = clients.connected(V5)
    requester.subscribe(f"{topic}/response/+", qos=1)

    request = properties(
        PacketTypes.PUBLISH,
        ResponseTopic=f"{topic}/response/42",
        CorrelationData=b"\x00\x01correlation\xff",
        ContentType="application/json; charset=utf-8",
        PayloadFormatIndicator=1,
        UserProperty=[("trace", "abc"), ("trace", "def"), ("ünïcode", "välue")],
    )
    requester.publish(f"{topic}/request", b'{"question": 42}', qos=1, props=request)

    received = responder.expect_message()
    assert received.property("ResponseTopic") == f"{topic}/response/42"
    assert received.property("CorrelationData") == b"\x00\x01correlation\xff"
    assert received.property("ContentType") == "application/json; charset=utf-8"
    assert received.property("PayloadFormatIndicator") == 1
    assert received.property("UserProperty") == [("trace", "abc"), ("trace", "def"), ("ünïcode", "välue")]

    reply = properties(PacketTypes.PUBLISH, CorrelationData=received.property("CorrelationData"))
    responder.publish(received.property("ResponseTopic"), b'{"answer": true}', qos=1, props=reply)
    answer = requester.expect_message()
    assert answer.topic == f"{topic}/response/42"
    assert answer.property("CorrelationData") == b"\x00\x01correlation\xff"


def test_properties_reach_a_311_subscriber_as_plain_messages(clients, topic):
    subscriber = clients.connected(V311)
    subscriber.subscribe(topic, qos=1)
    clients.connected(V5).publish(
        topic,
        b"payload",
        qos=1,
        props=properties(PacketTypes.PUBLISH, UserProperty=[("k", "v")], ContentType="text/plain"),
    )
    message = subscriber.expect_message()
    assert (message.payload, message.qos) == (b"payload", 1)


def test_assigned_client_identifier_for_empty_client_id(clients):
    client = clients.paho(client_id="")
    result = client.connect()
    assigned = result.property("AssignedClientIdentifier")
    assert assigned, "no Assigned Client Identifier in CONNACK for an empty client id"
    other = clients.paho(client_id="")
    assert other.connect().property("AssignedClientIdentifier") != assigned


def test_empty_client_id_on_311_accepted_with_clean_session(clients, topic):
    client = clients.raw(version=4)
    connack = client.connect("", clean=True)
    assert connack.reason_code == 0


def test_server_keep_alive_in_connack(broker_factory, clients):
    configured = broker_factory(CERTMQ_MQTT_SERVER_KEEP_ALIVE=10)
    client = clients.for_broker(configured).paho()
    result = client.connect(keepalive=60)
    assert result.property("ServerKeepAlive") == 10


@expect_failure_on_mosquitto("answers the excess PUBLISH with PUBREC 0x97 instead of DISCONNECT 0x93")
def test_broker_receive_maximum_announced_and_enforced(broker_factory, clients, topic):
    limited = broker_factory(CERTMQ_MQTT_RECEIVE_MAXIMUM=2)
    on_limited = clients.for_broker(limited)
    client = on_limited.raw()
    connack = client.connect(on_limited.client_id("eager"))
    assert connack.properties.get(raw_mqtt.RECEIVE_MAXIMUM) == 2
    # QoS 2 messages stay in flight until PUBREL; a third one exceeds the broker's Receive Maximum.
    for n in range(2):
        client.publish(topic, f"m{n}".encode(), qos=2)
        assert client.read_until(raw_mqtt.PUBREC).reason_code in (None, 0, 0x10)
    client.publish(topic, b"one-too-many", qos=2)
    _assert_disconnected_with(client, 0x93)  # Receive Maximum exceeded


@expect_failure_on_mosquitto("never sends topic aliases to clients")
def test_the_broker_keeps_no_more_aliases_for_a_client_than_topic_alias_maximum(clients, topic):
    """Each alias the broker sends is a topic it keeps for the connection: a client allowing
    65535 gets no more than the broker's topic_alias_maximum (10 by default)."""
    receiver = clients.raw()
    receiver.connect(clients.client_id("aliases"), properties={raw_mqtt.TOPIC_ALIAS_MAXIMUM: 65535})
    receiver.subscribe([(f"{topic}/#", 0)])
    publisher = clients.connected(V5)
    for index in range(30):
        publisher.publish(f"{topic}/{index}", b"x", qos=1)
    aliases = {packet.properties.get(raw_mqtt.TOPIC_ALIAS) for packet in receiver.read_publishes(30)}
    assert aliases - {None} == set(range(1, 11))
