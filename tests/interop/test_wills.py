"""Wills: published when a client goes away without DISCONNECT (or with 5.0 reason 0x04), not on a
normal DISCONNECT; 5.0 will delay interval."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from paho_client import V5, V311, properties

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_when_connection_drops(clients, topic, version):
    watcher = clients.connected(version)
    watcher.subscribe(f"{topic}/#", qos=1)
    device = clients.paho(version=version)
    device.will_set(f"{topic}/status", b"offline", qos=1)
    device.connect()
    device.drop_connection()

    message = watcher.expect_message()
    assert (message.topic, message.payload, message.qos) == (f"{topic}/status", b"offline", 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_will_is_kept(clients, topic, version):
    device = clients.paho(version=version)
    device.will_set(topic, b"gone", qos=1, retain=True)
    device.connect()
    device.drop_connection()

    # The will is published once the broker notices the closed connection; poll for it.
    deadline = time.monotonic() + 5
    while True:
        late = clients.connected(version)
        late.subscribe(topic, qos=1)
        late.publish(topic, b"probe", qos=1)
        first = late.expect_message()
        late.disconnect()
        if first.payload == b"gone":
            assert first.retain
            return
        assert time.monotonic() < deadline, "retained will not stored"


@pytest.mark.parametrize("version", VERSIONS)
def test_will_not_published_on_normal_disconnect(clients, topic, version):
    watcher = clients.connected(version)
    watcher.subscribe(f"{topic}/#", qos=1)
    device = clients.paho(version=version)
    device.will_set(f"{topic}/status", b"offline", qos=1)
    device.connect()
    device.disconnect()

    # A wrong will would follow the DISCONNECT at once; give it a moment, then send a sentinel
    # that must be the first thing the watcher sees.
    time.sleep(0.5)
    other = clients.connected(version)
    other.publish(f"{topic}/sentinel", b"sentinel", qos=1)
    message = watcher.expect_message()
    assert message.topic == f"{topic}/sentinel", f"will published after a normal DISCONNECT: {message}"


def test_disconnect_with_will_message_reason_publishes_the_will(clients, topic):
    watcher = clients.connected(V5)
    watcher.subscribe(f"{topic}/#", qos=1)
    device = clients.paho(version=V5)
    device.will_set(f"{topic}/status", b"offline-by-choice", qos=1)
    device.connect()
    device.disconnect(reason_code=0x04)  # Disconnect with Will Message

    message = watcher.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/status", b"offline-by-choice")


def test_will_delay_not_published_when_client_reconnects_in_time(clients, topic):
    watcher = clients.connected(V5)
    watcher.subscribe(f"{topic}/#", qos=1)
    client_id = clients.client_id("delayed")
    session = properties(PacketTypes.CONNECT, SessionExpiryInterval=60)

    device = clients.paho(client_id=client_id)
    device.will_set(
        f"{topic}/status", b"offline", qos=1, props=properties(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    )
    device.connect(props=session)
    device.drop_connection()

    again = clients.paho(client_id=client_id)
    result = again.connect(clean_start=False, props=session)
    assert result.session_present
    # Wait past the delay: the will must not come.
    time.sleep(3)
    watcher_probe = clients.connected(V5)
    watcher_probe.publish(f"{topic}/sentinel", b"sentinel", qos=1)
    message = watcher.expect_message()
    assert message.topic == f"{topic}/sentinel", (
        "will published although the client reconnected within the delay"
    )


def test_will_delay_published_after_the_delay(clients, topic):
    watcher = clients.connected(V5)
    watcher.subscribe(f"{topic}/#", qos=1)
    device = clients.paho()
    device.will_set(
        f"{topic}/status", b"offline", qos=1, props=properties(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    )
    device.connect(props=properties(PacketTypes.CONNECT, SessionExpiryInterval=60))
    device.drop_connection()
    dropped = time.monotonic()

    message = watcher.expect_message(timeout=8)
    waited = time.monotonic() - dropped
    assert (message.topic, message.payload) == (f"{topic}/status", b"offline")
    assert waited >= 1.5, f"will published {waited:.1f}s after the drop, before its 2s delay"


def test_will_published_when_session_ends_before_the_delay(clients, topic):
    watcher = clients.connected(V5)
    watcher.subscribe(f"{topic}/#", qos=1)
    device = clients.paho()
    device.will_set(
        f"{topic}/status", b"offline", qos=1, props=properties(PacketTypes.WILLMESSAGE, WillDelayInterval=60)
    )
    device.connect(props=properties(PacketTypes.CONNECT, SessionExpiryInterval=1))
    device.drop_connection()

    # The session expires after 1s, which ends the will delay early (MQTT 5.0 3.1.3.2.2).
    message = watcher.expect_message(timeout=8)
    assert (message.topic, message.payload) == (f"{topic}/status", b"offline")
