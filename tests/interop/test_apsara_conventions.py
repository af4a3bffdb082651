"""ApsaraMQ client conventions: point-to-point topics and GroupID@@@DeviceID client ids."""

from __future__ import annotations

from broker_process import expect_failure_on_mosquitto
from paho_client import V5, V311

pytestmark = expect_failure_on_mosquitto("ApsaraMQ conventions are certmq's")


def test_point_to_point_reaches_the_client_without_a_subscription(clients, topic):
    parent = topic.replace("/", "-")
    receiver = clients.connected(V311, client_id="GID_p2p@@@receiver")
    bystander = clients.connected(V5, client_id="GID_p2p@@@bystander")
    bystander.subscribe(f"{parent}/#", qos=1)
    sender = clients.connected(V5, client_id="GID_p2p@@@sender")

    sender.publish(f"{parent}/p2p/GID_p2p@@@receiver", b"for you", qos=1)
    message = receiver.expect_message()
    assert (message.topic, message.payload) == (f"{parent}/p2p/GID_p2p@@@receiver", b"for you")
    assert bystander.drain() == [], "a point-to-point message reached a subscriber"


def test_point_to_point_is_queued_for_an_offline_persistent_session(clients, topic):
    parent = topic.replace("/", "-")
    receiver = clients.paho(client_id="GID_p2p@@@offline", version=V311, clean=False)
    receiver.connect()
    receiver.disconnect()
    clients.connected(V5).publish(f"{parent}/p2p/GID_p2p@@@offline", b"later", qos=1)
    receiver.connect()
    assert receiver.expect_message().payload == b"later"


def test_apsara_client_ids_can_be_required(broker_factory, clients):
    strict = clients.for_broker(broker_factory(CERTMQ_MQTT_APSARA_CLIENT_ID="true"))
    strict.connected(V5, client_id="GID_fleet@@@device-1")
    refused = strict.paho(client_id="device-1", version=V5)
    assert refused.connect(expect_success=False).reason_code == 0x85
    raw = strict.raw(version=4)
    assert raw.connect("no-group").reason_code == 0x02
