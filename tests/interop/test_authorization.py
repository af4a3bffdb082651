"""Topic authorization: rules with identity variables, checked on SUBSCRIBE and PUBLISH."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import raw_mqtt
from broker_process import RunningBroker, expect_failure_on_mosquitto, start_broker
from paho_client import V5, V311

RULES = """
[[rule]]
permission = "allow"
action = "publish"
topic = "acl/devices/${client_id}/#"

[[rule]]
permission = "allow"
action = "subscribe"
topic = "acl/commands/${client_id}/#"

[[rule]]
permission = "allow"
action = "subscribe"
topic = "acl/devices/#"
client_id = "monitor-*"
"""

pytestmark = expect_failure_on_mosquitto("topic rules are certmq configuration")


@pytest.fixture(scope="module")
def guarded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One broker with the rules above for the module; each test keeps to client ids of its own,
    or to ones an earlier test has disconnected."""
    rules = tmp_path_factory.mktemp("rules") / "acl.toml"
    rules.write_text(RULES)
    running = start_broker(
        tmp_path_factory.mktemp("guarded"),
        {"CERTMQ_AUTH_ACL_FILE": str(rules), "CERTMQ_AUTH_ACL_DEFAULT": "deny"},
    )
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture
def guarded(guarded_broker, clients):
    return clients.for_broker(guarded_broker)


def test_subscriptions_outside_the_rules_are_refused(guarded):
    device = guarded.connected(V5, client_id="dev-a")
    assert device.subscribe("acl/commands/dev-a/#", qos=1) == [1]
    assert device.subscribe("acl/commands/dev-b/#", qos=1) == [0x87]
    assert device.subscribe("acl/#", qos=1) == [0x87]

    old_device = guarded.connected(V311, client_id="dev-c")
    assert old_device.subscribe("acl/commands/dev-b/#", qos=1) == [0x80]
    assert old_device.subscribe("acl/commands/dev-c/+", qos=0) == [0]


def test_a_device_publishes_only_under_its_own_name(guarded):
    monitor = guarded.connected(V5, client_id="monitor-1")
    assert monitor.subscribe("acl/devices/#", qos=1) == [1]

    device = guarded.raw(version=5)
    device.connect("dev-a")
    device.publish("acl/devices/dev-b/temperature", b"forged", qos=1)
    puback = device.read_until(raw_mqtt.PUBACK)
    assert puback.reason_code == 0x87
    device.publish("acl/devices/dev-a/temperature", b"21.5", qos=1)
    assert device.read_until(raw_mqtt.PUBACK).reason_code in (None, 0)  # short form: success

    received = monitor.expect_message()
    assert (received.topic, received.payload) == ("acl/devices/dev-a/temperature", b"21.5")
    assert monitor.drain() == []


def test_denied_qos2_publish_on_311_completes_without_delivery(guarded):
    monitor = guarded.connected(V5, client_id="monitor-2")
    monitor.subscribe("acl/devices/#", qos=2)
    device = guarded.connected(V311, client_id="dev-d")
    device.publish("acl/devices/dev-e/x", b"forged", qos=2)
    device.publish("acl/devices/dev-d/x", b"mine", qos=2)
    assert monitor.expect_message().payload == b"mine"
    assert monitor.drain() == []
