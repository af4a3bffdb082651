"""Persistent sessions: messages queued while offline, session present, 5.0 session expiry,
message expiry, redelivery of unacknowledged messages, client id takeover and queue limits."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

import raw_mqtt
from broker_process import expect_failure_on_mosquitto
from paho_client import V5, V311, properties

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def _persistent_connect(client, version, expiry=300):
    if version == V5:
        return client.connect(
            clean_start=False, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=expiry)
        )
    return client.connect()


@pytest.mark.parametrize("version", VERSIONS)
def test_messages_queued_while_offline_are_delivered_on_reconnect(clients, topic, version):
    client_id = clients.client_id("persistent")
    device = clients.paho(client_id=client_id, version=version, clean=False)
    first = _persistent_connect(device, version)
    device.subscribe(f"{topic}/q1", qos=1)
    device.subscribe(f"{topic}/q2", qos=2)
    device.disconnect()
    assert first.session_present is False

    publisher = clients.connected(version)
    for n in range(5):
        publisher.publish(f"{topic}/q1", f"one-{n}".encode(), qos=1)
        publisher.publish(f"{topic}/q2", f"two-{n}".encode(), qos=2)

    back = clients.paho(client_id=client_id, version=version, clean=False)
    result = _persistent_connect(back, version)
    assert result.session_present is True, "the broker lost the session"
    received = back.expect_messages(10)
    by_topic = {}
    for message in received:
        by_topic.setdefault(message.topic, []).append((message.payload, message.qos))
    assert by_topic[f"{topic}/q1"] == [(f"one-{n}".encode(), 1) for n in range(5)]
    assert by_topic[f"{topic}/q2"] == [(f"two-{n}".encode(), 2) for n in range(5)]

    # The subscriptions are still there for new messages.
    publisher.publish(f"{topic}/q2", b"live", qos=2)
    assert back.expect_message().payload == b"live"


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_session_discards_the_old_session(clients, topic, version):
    client_id = clients.client_id("clean")
    device = clients.paho(client_id=client_id, version=version, clean=False)
    _persistent_connect(device, version)
    device.subscribe(topic, qos=1)
    device.disconnect()

    clients.connected(version).publish(topic, b"queued", qos=1)

    fresh = clients.paho(client_id=client_id, version=version, clean=True)
    result = fresh.connect(clean_start=True) if version == V5 else fresh.connect()
    assert result.session_present is False
    fresh.subscribe(f"{topic}/sentinel", qos=1)
    clients.connected(version).publish(f"{topic}/sentinel", b"sentinel", qos=1)
    message = fresh.expect_message()
    assert message.payload == b"sentinel", "a message of the discarded session was delivered"


def test_session_gone_after_session_expiry(clients, topic):
    client_id = clients.client_id("expiring")
    device = clients.paho(client_id=client_id)
    _persistent_connect(device, V5, expiry=1)
    device.subscribe(topic, qos=1)
    device.disconnect()
    clients.connected(V5).publish(topic, b"queued", qos=1)

    time.sleep(3)  # past the 1 s expiry, with a margin for the broker's expiry sweep
    back = clients.paho(client_id=client_id)
    result = _persistent_connect(back, V5)
    assert result.session_present is False, "the session outlived its expiry interval"
    back.subscribe(f"{topic}/sentinel", qos=1)
    clients.connected(V5).publish(f"{topic}/sentinel", b"sentinel", qos=1)
    assert back.expect_message().payload == b"sentinel", "a message of the expired session was delivered"


def test_session_kept_within_session_expiry(clients, topic):
    client_id = clients.client_id("kept")
    device = clients.paho(client_id=client_id)
    _persistent_connect(device, V5, expiry=30)
    device.subscribe(topic, qos=1)
    device.disconnect()
    clients.connected(V5).publish(topic, b"queued", qos=1)

    back = clients.paho(client_id=client_id)
    assert _persistent_connect(back, V5).session_present is True
    assert back.expect_message().payload == b"queued"


def test_disconnect_can_shorten_session_expiry_to_zero(clients, topic):
    client_id = clients.client_id("ends")
    device = clients.paho(client_id=client_id)
    _persistent_connect(device, V5, expiry=300)
    device.subscribe(topic, qos=1)
    device.disconnect(reason_code=0, props=properties(PacketTypes.DISCONNECT, SessionExpiryInterval=0))

    back = clients.paho(client_id=client_id)
    assert _persistent_connect(back, V5).session_present is False


def test_expired_queued_message_is_not_delivered_and_remaining_interval_forwarded(clients, topic):
    client_id = clients.client_id("expiry")
    device = clients.paho(client_id=client_id)
    _persistent_connect(device, V5)
    device.subscribe(topic, qos=1)
    device.disconnect()

    publisher = clients.connected(V5)
    publisher.publish(
        topic, b"short-lived", qos=1, props=properties(PacketTypes.PUBLISH, MessageExpiryInterval=1)
    )
    publisher.publish(
        topic, b"long-lived", qos=1, props=properties(PacketTypes.PUBLISH, MessageExpiryInterval=60)
    )
    time.sleep(2.5)

    back = clients.paho(client_id=client_id)
    _persistent_connect(back, V5)
    message = back.expect_message()
    assert message.payload == b"long-lived", "an expired message was delivered"
    remaining = message.property("MessageExpiryInterval")
    assert remaining is not None, "Message Expiry Interval not forwarded"
    assert 50 <= remaining <= 58, f"forwarded expiry {remaining}s is not the remaining time (about 57s)"


def test_message_expiry_forwarded_to_online_subscriber(clients, topic):
    subscriber = clients.connected(V5)
    subscriber.subscribe(topic, qos=1)
    clients.connected(V5).publish(
        topic, b"m", qos=1, props=properties(PacketTypes.PUBLISH, MessageExpiryInterval=120)
    )
    message = subscriber.expect_message()
    assert 115 <= message.property("MessageExpiryInterval", -1) <= 120


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_unacknowledged_qos1_redelivered_with_dup_on_reconnect(clients, topic, version):
    client_id = clients.client_id("redeliver")
    session = {raw_mqtt.SESSION_EXPIRY_INTERVAL: 300} if version == 5 else None
    device = clients.raw(version=version)
    device.connect(client_id, clean=False, properties=session)
    device.subscribe([(topic, 1)])
    clients.connected(V5).publish(topic, b"unacked", qos=1)
    first = device.read_publishes(1, acknowledge=False)[0]
    assert (first.payload, first.dup) == (b"unacked", False)
    device.close()

    again = clients.raw(version=version)
    connack = again.connect(client_id, clean=False, properties=session)
    assert connack.session_present
    redelivered = again.read_publishes(1)[0]
    assert redelivered.payload == b"unacked"
    assert redelivered.dup, "a redelivered QoS 1 message must have DUP set"


def test_qos2_flow_resumes_with_pubrel_after_reconnect(clients, topic):
    client_id = clients.client_id("qos2")
    session = {raw_mqtt.SESSION_EXPIRY_INTERVAL: 300}
    device = clients.raw()
    device.connect(client_id, clean=False, properties=session)
    device.subscribe([(topic, 2)])
    clients.connected(V5).publish(topic, b"exactly-once", qos=2)
    publish = device.read_publishes(1, acknowledge=False)[0]
    device.acknowledge(publish)  # PUBREC
    pubrel = device.read_until(raw_mqtt.PUBREL)
    assert pubrel.packet_id == publish.packet_id
    device.close()  # before PUBCOMP

    again = clients.raw()
    assert again.connect(client_id, clean=False, properties=session).session_present
    resumed = again.read_packet()
    assert resumed.kind == raw_mqtt.PUBREL, f"expected the PUBREL to be resent, got {resumed!r}"
    assert resumed.packet_id == publish.packet_id
    again.acknowledge(resumed)
    # Nothing else: the message was received once already.
    clients.connected(V5).publish(topic, b"next", qos=2)
    following = again.read_publishes(1)[0]
    assert following.payload == b"next", f"message delivered twice: {following!r}"


@expect_failure_on_mosquitto("closes the older connection without DISCONNECT 0x8E")
def test_duplicate_client_id_takes_over_with_reason_0x8e(clients, topic):
    client_id = clients.client_id("twin")
    older = clients.paho(client_id=client_id)
    older.connect()
    newer = clients.paho(client_id=client_id)
    newer.connect()

    code = older.wait_disconnected()
    assert code is not None and code.value == 0x8E, (
        f"older connection got {code}, not Session taken over (0x8E)"
    )
    newer.assert_connected()
    newer.subscribe(topic, qos=1)
    clients.connected(V5).publish(topic, b"to-newer", qos=1)
    assert newer.expect_message().payload == b"to-newer"


def test_duplicate_client_id_takes_over_on_311(clients, topic):
    client_id = clients.client_id("twin")
    older = clients.paho(client_id=client_id, version=V311)
    older.connect()
    newer = clients.paho(client_id=client_id, version=V311)
    newer.connect()
    older.wait_disconnected()
    newer.subscribe(topic, qos=1)
    clients.connected(V311).publish(topic, b"to-newer", qos=1)
    assert newer.expect_message().payload == b"to-newer"


def test_takeover_keeps_the_persistent_session(clients, topic):
    client_id = clients.client_id("takeover")
    older = clients.paho(client_id=client_id)
    _persistent_connect(older, V5)
    older.subscribe(topic, qos=1)
    newer = clients.paho(client_id=client_id)
    assert _persistent_connect(newer, V5).session_present is True
    clients.connected(V5).publish(topic, b"kept", qos=1)
    assert newer.expect_message().payload == b"kept"


def test_offline_queue_is_bounded(broker_factory, clients, topic):
    small = broker_factory(CERTMQ_MQTT_MAX_QUEUED_MESSAGES=5)
    on_small = clients.for_broker(small)
    client_id = on_small.client_id("bounded")
    device = on_small.paho(client_id=client_id)
    _persistent_connect(device, V5)
    device.subscribe(topic, qos=1)
    device.disconnect()

    publisher = on_small.connected(V5)
    sent = [f"m{n:02d}".encode() for n in range(30)]
    for payload in sent:
        publisher.publish(topic, payload, qos=1)

    back = on_small.paho(client_id=client_id)
    _persistent_connect(back, V5)
    back.subscribe(f"{topic}/sentinel", qos=1)
    publisher.publish(f"{topic}/sentinel", b"sentinel", qos=1)
    queued = []
    while (message := back.expect_message()).topic != f"{topic}/sentinel":
        queued.append(message.payload)
    assert 1 <= len(queued) <= 5, f"{len(queued)} messages kept for an offline client with a queue of 5"
    assert all(payload in sent for payload in queued)
    assert queued == sorted(queued), "queued messages delivered out of order"
