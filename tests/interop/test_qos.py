"""QoS 0, 1 and 2 delivery with paho-mqtt on MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import pytest

from paho_client import V5, V311

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_message_delivered_at_published_qos(clients, topic, version, qos):
    subscriber = clients.connected(version)
    assert subscriber.subscribe(f"{topic}/#", qos=2) == [2]
    publisher = clients.connected(version)

    payloads = [f"qos{qos}-{n}".encode() for n in range(20)]
    for payload in payloads:
        publisher.publish(f"{topic}/data", payload, qos=qos)

    received = subscriber.expect_messages(len(payloads))
    assert [message.payload for message in received] == payloads, "messages lost, duplicated or reordered"
    assert {message.qos for message in received} == {qos}
    assert {message.topic for message in received} == {f"{topic}/data"}
    assert not any(message.retain for message in received)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("published", "subscribed", "delivered"), [(2, 1, 1), (2, 0, 0), (1, 0, 0), (1, 2, 1), (0, 2, 0)]
)
def test_delivery_qos_is_the_lower_of_publish_and_subscription(
    clients, topic, version, published, subscribed, delivered
):
    subscriber = clients.connected(version)
    assert subscriber.subscribe(topic, qos=subscribed) == [subscribed]
    publisher = clients.connected(version)
    publisher.publish(topic, b"downgrade", qos=published)

    message = subscriber.expect_message()
    assert message.payload == b"downgrade"
    assert message.qos == delivered


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_subscriptions_match(clients, topic, version):
    subscriber = clients.connected(version)
    subscriber.subscribe(f"{topic}/+/temperature", qos=1)
    subscriber.subscribe(f"{topic}/building/#", qos=1)
    subscriber.subscribe(f"{topic}/last", qos=1)
    publisher = clients.connected(version)

    publisher.publish(f"{topic}/kitchen/temperature", b"21", qos=1)
    publisher.publish(f"{topic}/kitchen/humidity", b"40", qos=1)
    publisher.publish(f"{topic}/building/floor/1", b"on", qos=1)
    # Messages from one publisher reach a subscriber in order, so once this one arrives any
    # wrongly matched message before it would have arrived too.
    publisher.publish(f"{topic}/last", b"sentinel", qos=1)

    received = []
    while True:
        message = subscriber.expect_message()
        if message.topic == f"{topic}/last":
            break
        received.append((message.topic, message.payload))
    assert received == [(f"{topic}/kitchen/temperature", b"21"), (f"{topic}/building/floor/1", b"on")]


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(clients, topic, version):
    subscriber = clients.connected(version)
    subscriber.subscribe(f"{topic}/a", qos=1)
    subscriber.subscribe(f"{topic}/b", qos=1)
    publisher = clients.connected(version)
    publisher.publish(f"{topic}/a", b"before", qos=1)
    assert subscriber.expect_message().payload == b"before"

    subscriber.unsubscribe(f"{topic}/a")
    publisher.publish(f"{topic}/a", b"after", qos=1)
    publisher.publish(f"{topic}/b", b"sentinel", qos=1)
    message = subscriber.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/b", b"sentinel"), (
        "message delivered after UNSUBSCRIBE"
    )
