"""Sessions, queued messages and retained messages survive a restart of the broker (SPEC 12)."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes

from broker_process import expect_failure_on_mosquitto
from paho_client import V5, V311, properties


@expect_failure_on_mosquitto("runs here with persistence off")
def test_sessions_queued_and_retained_messages_survive_a_restart(broker_factory, clients, topic):
    restarting = broker_factory()
    on_it = clients.for_broker(restarting)
    v5_id, v311_id = on_it.client_id("durable5"), on_it.client_id("durable3")
    session = properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)

    v5 = on_it.paho(client_id=v5_id)
    v5.connect(clean_start=False, props=session)
    v5.subscribe(f"{topic}/queued", qos=2)
    v5.disconnect()
    v311 = on_it.paho(client_id=v311_id, version=V311, clean=False)
    v311.connect()
    v311.subscribe(f"{topic}/queued", qos=1)
    v311.disconnect()

    publisher = on_it.connected(V5)
    publisher.publish(f"{topic}/retained", b"kept across restarts", qos=1, retain=True)
    publisher.publish(f"{topic}/queued", b"waiting", qos=2)
    publisher.disconnect()

    restarting.restart()

    late = on_it.connected(V5)
    late.subscribe(f"{topic}/retained", qos=1)
    message = late.expect_message()
    assert (message.payload, message.retain) == (b"kept across restarts", True)

    back = on_it.paho(client_id=v5_id)
    assert back.connect(clean_start=False, props=session).session_present, "5.0 session lost in the restart"
    message = back.expect_message()
    assert (message.payload, message.qos) == (b"waiting", 2)

    back311 = on_it.paho(client_id=v311_id, version=V311, clean=False)
    assert back311.connect().session_present, "3.1.1 session lost in the restart"
    message = back311.expect_message()
    assert (message.payload, message.qos) == (b"waiting", 1)
