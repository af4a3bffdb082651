"""Sessions, queued messages and retained messages survive a clean restart of the broker (a crash:
test_crash_durability.py)."""

from __future__ import annotations

import struct

from paho.mqtt.packettypes import PacketTypes

from broker_process import expect_failure_on_mosquitto
from paho_client import V5, V311, properties
from raw_mqtt import PUBCOMP, PUBLISH, PUBREC, PUBREL, SESSION_EXPIRY_INTERVAL


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


@expect_failure_on_mosquitto("runs here with persistence off")
def test_qos2_exchanges_in_flight_resume_after_a_restart(broker_factory, clients, topic):
    restarting = broker_factory()
    on_it = clients.for_broker(restarting)
    client_id = on_it.client_id("inflight")
    session = {SESSION_EXPIRY_INTERVAL: 3600}

    receiver = on_it.raw()
    receiver.connect(client_id, clean=False, properties=session)
    receiver.subscribe([(f"{topic}/#", 2)])
    publisher = on_it.connected(V5)
    publisher.publish(f"{topic}/a", b"released before the restart", qos=2)
    publisher.publish(f"{topic}/b", b"unacknowledged before the restart", qos=2)
    first, second = receiver.read_publishes(2, acknowledge=False)
    receiver.acknowledge(first)  # PUBREC: the broker answers PUBREL, left without PUBCOMP
    assert receiver.read_until(PUBREL).packet_id == first.packet_id
    # And a QoS 2 message from this client, answered with PUBREC, left without PUBREL.
    incoming_id = receiver.publish(f"{topic}-elsewhere", b"from the client", qos=2)
    assert receiver.read_until(PUBREC).packet_id == incoming_id
    receiver.close()
    publisher.disconnect()

    restarting.restart()

    back = on_it.raw()
    assert back.connect(client_id, clean=False, properties=session).session_present
    resent = [back.read_packet(), back.read_packet()]
    assert [(packet.kind, packet.packet_id) for packet in resent] == [
        (PUBREL, first.packet_id),
        (PUBLISH, second.packet_id),
    ]
    assert (resent[1].payload, resent[1].qos, resent[1].dup) == (
        b"unacknowledged before the restart",
        2,
        True,
    )
    # The broker still knows the client's packet id: PUBREL completes it (not 0x92, not found).
    back.send_packet(PUBREL, 0x02, struct.pack("!H", incoming_id))
    completed = back.read_until(PUBCOMP)
    assert (completed.packet_id, completed.reason_code or 0) == (incoming_id, 0)
    back.acknowledge(resent[0])  # PUBCOMP
    back.acknowledge(resent[1])  # PUBREC
    release = back.read_until(PUBREL)
    assert release.packet_id == second.packet_id
    back.acknowledge(release)  # PUBCOMP: both exchanges complete
    assert not back.skipped, f"unexpected packets: {back.skipped}"
