"""Retained messages: set, replace, clear, delivered on subscribe; retain flags; retain handling
and retain-as-published (5.0)."""

from __future__ import annotations

import pytest

from paho_client import V5, V311

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_set_replaced_and_cleared(clients, topic, version):
    publisher = clients.connected(version)
    publisher.publish(topic, b"first", qos=1, retain=True)
    publisher.publish(topic, b"second", qos=1, retain=True)

    late = clients.connected(version)
    late.subscribe(topic, qos=1)
    message = late.expect_message()
    assert (message.payload, message.retain) == (b"second", True), "the retained message was not replaced"

    publisher.publish(topic, b"", qos=1, retain=True)  # an empty retained payload clears it
    later = clients.connected(version)
    later.subscribe(topic, qos=1)
    publisher.publish(topic, b"live", qos=1)
    message = later.expect_message()
    assert (message.payload, message.retain) == (b"live", False), "cleared retained message still delivered"


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages_delivered_for_wildcard_subscription(clients, topic, version):
    publisher = clients.connected(version)
    expected = {f"{topic}/sensor/{n}": f"value-{n}".encode() for n in range(5)}
    for name, payload in expected.items():
        publisher.publish(name, payload, qos=1, retain=True)

    subscriber = clients.connected(version)
    subscriber.subscribe(f"{topic}/sensor/+", qos=1)
    received = subscriber.expect_messages(len(expected))
    assert {message.topic: message.payload for message in received} == expected
    assert all(message.retain for message in received)


@pytest.mark.parametrize("version", VERSIONS)
def test_live_message_to_existing_subscriber_has_retain_flag_cleared(clients, topic, version):
    subscriber = clients.connected(version)
    subscriber.subscribe(topic, qos=1)
    publisher = clients.connected(version)
    publisher.publish(topic, b"retained-now", qos=1, retain=True)
    message = subscriber.expect_message()
    assert message.payload == b"retained-now"
    assert message.retain is False, "a message forwarded to an existing subscription must have RETAIN 0"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_retained_message_delivered_at_the_lower_qos(clients, topic, qos):
    publisher = clients.connected(V5)
    publisher.publish(topic, b"r", qos=2, retain=True)
    subscriber = clients.connected(V5)
    subscriber.subscribe(topic, qos=qos)
    message = subscriber.expect_message()
    assert (message.payload, message.retain, message.qos) == (b"r", True, qos)


def test_retain_as_published_keeps_the_flag(clients, topic):
    subscriber = clients.connected(V5)
    subscriber.subscribe(f"{topic}/rap", qos=1, retain_as_published=True)
    subscriber.subscribe(f"{topic}/plain", qos=1)
    publisher = clients.connected(V5)
    publisher.publish(f"{topic}/rap", b"kept", qos=1, retain=True)
    publisher.publish(f"{topic}/plain", b"cleared", qos=1, retain=True)
    publisher.publish(f"{topic}/rap", b"not-retained", qos=1)

    first, second, third = subscriber.expect_messages(3)
    assert (first.payload, first.retain) == (b"kept", True)
    assert (second.payload, second.retain) == (b"cleared", False)
    assert (third.payload, third.retain) == (b"not-retained", False)


def _first_payload_after_subscribe(subscriber, publisher, topic, **options):
    """Subscribe, then publish a live message: the first thing received is the retained message if
    the broker sent it (it is sent before anything published later), else the live one."""
    subscriber.subscribe(topic, qos=1, **options)
    publisher.publish(topic, b"live", qos=1)
    message = subscriber.expect_message()
    if message.payload != b"live":
        assert subscriber.expect_message().payload == b"live"
    return message.payload


def test_retain_handling_0_sends_retained_on_every_subscribe(clients, topic):
    publisher = clients.connected(V5)
    publisher.publish(topic, b"retained", qos=1, retain=True)
    subscriber = clients.connected(V5)
    assert _first_payload_after_subscribe(subscriber, publisher, topic, retain_handling=0) == b"retained"
    assert _first_payload_after_subscribe(subscriber, publisher, topic, retain_handling=0) == b"retained"


def test_retain_handling_1_sends_retained_only_for_a_new_subscription(clients, topic):
    publisher = clients.connected(V5)
    publisher.publish(topic, b"retained", qos=1, retain=True)
    subscriber = clients.connected(V5)
    assert _first_payload_after_subscribe(subscriber, publisher, topic, retain_handling=1) == b"retained"
    assert _first_payload_after_subscribe(subscriber, publisher, topic, retain_handling=1) == b"live"


def test_retain_handling_2_never_sends_retained(clients, topic):
    publisher = clients.connected(V5)
    publisher.publish(topic, b"retained", qos=1, retain=True)
    subscriber = clients.connected(V5)
    assert _first_payload_after_subscribe(subscriber, publisher, topic, retain_handling=2) == b"live"


def test_retained_message_with_properties_keeps_them(clients, topic):
    from paho.mqtt.packettypes import PacketTypes

    from paho_client import properties

    publisher = clients.connected(V5)
    props = properties(PacketTypes.PUBLISH, ContentType="text/plain", UserProperty=[("origin", "sensor-7")])
    publisher.publish(topic, b"hello", qos=1, retain=True, props=props)
    subscriber = clients.connected(V5)
    subscriber.subscribe(topic, qos=1)
    message = subscriber.expect_message()
    assert message.retain
    assert message.property("ContentType") == "text/plain"
    assert message.property("UserProperty") == [("origin", "sensor-7")]
