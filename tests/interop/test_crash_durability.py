"""What the broker acknowledged survives ``kill -9`` at any instant (docs/configuration.md, "What
survives a restart"): the broker is killed at many points of a stream of publishes, started again
on the same data directory, and what the clients were told is counted against what they get."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker_process import RunningBroker, expect_failure_on_mosquitto
from certmq.broker.journal import SEGMENT_HEADER, DeliveryQueued, RecordDecoder
from paho_client import V5, V311, WAIT, PahoClient, properties
from raw_mqtt import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SESSION_EXPIRY_INTERVAL,
    ConnectionClosed,
    RawClient,
)

pytestmark = expect_failure_on_mosquitto("runs here with persistence off")

STREAM = 1000  # QoS 1 messages per stream; every tenth is retained on a topic of its own
END = b"end"  # the payload of the message after which a subscriber has everything
SESSION = properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)


@dataclass(frozen=True)
class KillPoint:
    """When the broker is killed: after the publisher has ``acknowledgements`` PUBACKs, or
    ``seconds`` after the stream starts."""

    acknowledgements: int | None = None
    seconds: float | None = None


KILL_POINTS = [
    pytest.param(KillPoint(acknowledgements=0), id="before-any-acknowledgement"),
    pytest.param(KillPoint(acknowledgements=1), id="after-1"),
    pytest.param(KillPoint(acknowledgements=7), id="after-7"),
    pytest.param(KillPoint(acknowledgements=100), id="after-100"),
    pytest.param(KillPoint(acknowledgements=STREAM), id="after-all"),
    *(
        pytest.param(KillPoint(seconds=random.Random(seed).uniform(0.0, 0.12)), id=f"mid-stream-{seed}")
        for seed in range(4)
    ),
]


def kill(broker: RunningBroker) -> None:
    """SIGKILL: the process gets no chance to save anything."""
    broker.process.kill()


def offline_subscriber(on_it: Any, topic_filter: str, qos: int, version: int = V5) -> str:
    """A client with a session that outlives its connection, subscribed and gone; its id."""
    client_id = on_it.client_id("subscriber")
    subscriber = reconnect(on_it, client_id, version, expect_present=False)
    subscriber.subscribe(topic_filter, qos=qos)
    subscriber.disconnect()
    return client_id


def reconnect(on_it: Any, client_id: str, version: int = V5, expect_present: bool = True) -> PahoClient:
    if version == V5:
        client = on_it.paho(client_id=client_id)
        result = client.connect(clean_start=False, props=SESSION)
    else:
        client = on_it.paho(client_id=client_id, version=V311, clean=False)
        result = client.connect()
    assert result.session_present == expect_present, "the session was lost in the crash"
    return client


def everything_received(on_it: Any, client: PahoClient, topic: str, qos: int = 1) -> list[bytes]:
    """Payloads in arrival order, up to a last message that a new publisher sends to ``topic``
    now that ``client`` is back: the client's session queues it behind all it held, and the
    retained messages a subscription matches go out as it is acknowledged, before it. Whatever
    came after the last message is counted too. ``qos``: the subscription's, which the last
    message must have too, as paho-mqtt hands a QoS 2 message over only once it is released."""
    on_it.connected().publish(topic, END, qos=qos)
    payloads = []
    while (payload := client.expect_message(WAIT).payload) != END:
        payloads.append(payload)
    return payloads + [message.payload for message in client.drain()]


def publish_stream(on_it: Any, broker: RunningBroker, topic: str, point: KillPoint) -> list[bytes]:
    """Publish STREAM QoS 1 messages at once and kill the broker at ``point``; the payloads the
    broker acknowledged (PUBACK), in order."""
    publisher = on_it.paho()
    publisher.client.max_inflight_messages_set(STREAM)
    acknowledged_ids: list[int] = []
    lock = threading.Lock()

    def on_publish(client: Any, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        with lock:
            acknowledged_ids.append(mid)
            if len(acknowledged_ids) == point.acknowledgements:
                kill(broker)

    publisher.client.on_publish = on_publish
    publisher.connect()
    if point.seconds is not None:
        threading.Timer(point.seconds, kill, (broker,)).start()
    payload_of: dict[int, bytes] = {}
    for number in range(STREAM):
        retained = number % 10 == 9
        info = publisher.client.publish(
            f"{topic}/retained/{number}" if retained else f"{topic}/stream",
            f"{number}".encode(),
            qos=1,
            retain=retained,
        )
        payload_of[info.mid] = f"{number}".encode()
        if point.acknowledgements == 0 and number == 0:
            kill(broker)
    broker.process.wait(30)
    publisher.wait_disconnected()
    with lock:
        return [payload_of[mid] for mid in acknowledged_ids]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_every_acknowledged_message_survives_kill_9(broker_factory, clients, topic, point: KillPoint) -> None:
    crashing = broker_factory(CERTMQ_MQTT_MAX_QUEUED_MESSAGES=10 * STREAM)
    on_it = clients.for_broker(crashing)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=1)

    acknowledged = publish_stream(on_it, crashing, topic, point)
    crashing.crash_and_restart()

    delivered = everything_received(on_it, reconnect(on_it, subscriber_id), f"{topic}/stream")
    lost = [payload for payload in acknowledged if payload not in set(delivered)]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged messages lost: {lost[:10]}"
    # Nothing reached the subscriber before the crash: each message comes once, in order.
    repeated = [payload for payload, times in Counter(delivered).items() if times > 1]
    assert not repeated, f"delivered more than once: {repeated[:10]}"
    assert delivered == sorted(delivered, key=int)
    if point.acknowledgements == STREAM:
        assert len(acknowledged) == STREAM

    late = on_it.connected()
    late.subscribe(f"{topic}/retained/+", qos=1)
    retained = set(everything_received(on_it, late, f"{topic}/retained/end"))
    missing = [payload for payload in acknowledged if int(payload) % 10 == 9 and payload not in retained]
    assert not missing, f"acknowledged retained messages lost: {missing}"


def test_a_persistent_3_1_1_session_keeps_what_was_acknowledged(broker_factory, clients, topic) -> None:
    crashing = broker_factory(CERTMQ_MQTT_MAX_QUEUED_MESSAGES=10 * STREAM)
    on_it = clients.for_broker(crashing)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=1, version=V311)

    acknowledged = publish_stream(on_it, crashing, topic, KillPoint(acknowledgements=300))
    crashing.crash_and_restart()

    delivered = set(everything_received(on_it, reconnect(on_it, subscriber_id, V311), f"{topic}/stream"))
    assert len(acknowledged) >= 300
    assert not [payload for payload in acknowledged if payload not in delivered]


def test_qos_2_messages_acknowledged_with_pubrec_arrive_exactly_once(broker_factory, clients, topic) -> None:
    crashing = broker_factory()
    on_it = clients.for_broker(crashing)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=2)
    publisher_id = on_it.client_id("publisher")
    session = {SESSION_EXPIRY_INTERVAL: 3600}
    count, kill_after = 200, 60

    publisher = on_it.raw()
    publisher.connect(publisher_id, clean=False, properties=session)
    for number in range(count):
        publisher.publish(f"{topic}/q2", f"{number}".encode(), qos=2, packet_id=number + 1)
    received: set[int] = set()  # packet ids answered with PUBREC
    released: set[int] = set()  # PUBREL sent
    completed: set[int] = set()  # PUBCOMP received
    try:
        while True:
            packet = publisher.read_packet()
            if packet.kind == PUBREC:
                received.add(packet.packet_id)
                if packet.packet_id % 2:  # release half of them, keep the others waiting
                    publisher.acknowledge(packet)
                    released.add(packet.packet_id)
                if len(received) == kill_after:
                    kill(crashing)
            elif packet.kind == PUBCOMP:
                completed.add(packet.packet_id)
    except (ConnectionClosed, TimeoutError):
        pass
    crashing.crash_and_restart()
    assert len(received) >= kill_after

    # The publisher resumes its session: PUBREL for what was received, the PUBLISH again (DUP)
    # for the rest; the broker completes every exchange.
    back = on_it.raw()
    assert back.connect(publisher_id, clean=False, properties=session).session_present
    for packet_id in range(1, count + 1):
        if packet_id in completed:
            continue
        if packet_id in received:
            back.send_packet(PUBREL, 0x02, packet_id.to_bytes(2, "big"))
            completion = back.read_until(PUBCOMP)
            assert completion.packet_id == packet_id
            if packet_id not in released:
                # Received and never released: the broker must still know the packet id.
                assert (completion.reason_code or 0) == 0, f"packet id {packet_id} forgotten"
        else:
            back.send_packet(
                PUBLISH, 0x04 | 0x08, _publish_body(f"{topic}/q2", packet_id, f"{packet_id - 1}")
            )
            assert back.read_until(PUBREC).packet_id == packet_id
            back.send_packet(PUBREL, 0x02, packet_id.to_bytes(2, "big"))
            assert back.read_until(PUBCOMP).packet_id == packet_id

    delivered = Counter(everything_received(on_it, reconnect(on_it, subscriber_id), f"{topic}/q2", qos=2))
    for packet_id in sorted(received):
        payload = f"{packet_id - 1}".encode()
        assert delivered[payload] == 1, (
            f"{payload!r} acknowledged with PUBREC, delivered {delivered[payload]} times"
        )
    missing = [number for number in range(count) if not delivered[f"{number}".encode()]]
    assert not missing, f"never delivered: {missing}"


def _publish_body(topic: str, packet_id: int, payload: str) -> bytes:
    encoded = topic.encode()
    return (
        len(encoded).to_bytes(2, "big") + encoded + packet_id.to_bytes(2, "big") + b"\x00" + payload.encode()
    )


@pytest.mark.parametrize("version", [V5, V311], ids=["5.0", "3.1.1"])
def test_a_subscription_acknowledged_before_a_crash_is_there_after_it(
    broker_factory, clients, topic, version: int
) -> None:
    crashing = broker_factory()
    on_it = clients.for_broker(crashing)
    subscriber_id = on_it.client_id("subscriber")
    subscriber = reconnect(on_it, subscriber_id, version, expect_present=False)
    subscriber.subscribe(f"{topic}/kept", qos=1)
    subscriber.subscribe(f"{topic}/dropped", qos=1)
    subscriber.unsubscribe(f"{topic}/dropped")
    kill(crashing)  # at once: no time for anything but what the acknowledgements promised
    crashing.crash_and_restart()

    publisher = on_it.connected()
    publisher.publish(f"{topic}/dropped", b"unsubscribed before the crash", qos=1)
    publisher.publish(f"{topic}/kept", b"subscribed before the crash", qos=1)
    back = reconnect(on_it, subscriber_id, version)
    assert everything_received(on_it, back, f"{topic}/kept") == [b"subscribed before the crash"]


def test_messages_in_flight_at_the_crash_are_sent_again_with_dup(broker_factory, clients, topic) -> None:
    crashing = broker_factory()
    on_it = clients.for_broker(crashing)
    client_id = on_it.client_id("receiver")
    session = {SESSION_EXPIRY_INTERVAL: 3600}
    receiver: RawClient = on_it.raw()
    receiver.connect(client_id, clean=False, properties=session)
    receiver.subscribe([(f"{topic}/one/#", 1), (f"{topic}/two/#", 2)])
    publisher = on_it.connected()
    for number in range(3):
        publisher.publish(f"{topic}/one/{number}", f"qos 1 #{number}".encode(), qos=1)
    publisher.publish(f"{topic}/two/released", b"qos 2, released", qos=2)
    publisher.publish(f"{topic}/two/received", b"qos 2, not yet received", qos=2)
    first, second, third, released, unreceived = receiver.read_publishes(5, acknowledge=False)
    receiver.acknowledge(first)  # PUBACK: done with
    receiver.acknowledge(released)  # PUBREC: the broker answers PUBREL, left without PUBCOMP
    assert receiver.read_until(PUBREL).packet_id == released.packet_id
    # A SUBACK comes after the journal has the records before it, the PUBACK's among them.
    receiver.subscribe([(f"{topic}/sync", 0)])
    kill(crashing)
    crashing.crash_and_restart()

    back = on_it.raw()
    assert back.connect(client_id, clean=False, properties=session).session_present
    resent = [back.read_packet() for _ in range(4)]
    assert [(packet.kind, packet.packet_id) for packet in resent] == [
        (PUBLISH, second.packet_id),
        (PUBLISH, third.packet_id),
        (PUBREL, released.packet_id),
        (PUBLISH, unreceived.packet_id),
    ]
    assert all(packet.dup for packet in resent if packet.kind == PUBLISH)
    assert [packet.payload for packet in resent if packet.kind == PUBLISH] == [
        b"qos 1 #1",
        b"qos 1 #2",
        b"qos 2, not yet received",
    ]
    # The acknowledged one does not come back: next is a message published now.
    on_it.connected().publish(f"{topic}/one/end", END, qos=1)
    following = back.read_packet()
    assert (following.kind, following.payload) == (PUBLISH, END)


def test_a_client_connected_at_a_crash_has_its_will_published(broker_factory, clients, topic) -> None:
    crashing = broker_factory()
    on_it = clients.for_broker(crashing)
    watcher_id = offline_subscriber(on_it, f"{topic}/will", qos=1)
    # Connected when the broker dies: its connection is gone as of the crash.
    connected = on_it.paho(client_id=on_it.client_id("connected"))
    connected.will_set(f"{topic}/will", b"lost with the broker", qos=1)
    connected.connect(clean_start=False, props=SESSION)
    kill(crashing)
    crashing.crash_and_restart()

    assert everything_received(on_it, reconnect(on_it, watcher_id), f"{topic}/will") == [
        b"lost with the broker"
    ]


def journal_blocks(segment: Path) -> list[tuple[int, int, list[Any]]]:
    """Where each block of a journal segment starts and ends, and its records."""
    data = segment.read_bytes()
    blocks = []
    position = len(SEGMENT_HEADER)
    while position < len(data):
        end = position + 8 + int.from_bytes(data[position : position + 4], "little")
        blocks.append((position, end, RecordDecoder().feed(data[position:end])))
        position = end
    return blocks


def newest_segment(broker: RunningBroker) -> Path:
    return max((broker.data_dir / "journal").glob("*.log"))


@pytest.mark.parametrize("damage", ["cut-short", "garbled"])
def test_a_torn_tail_of_the_journal_loses_only_its_last_block(broker_factory, clients, topic, damage) -> None:
    crashing = broker_factory()
    on_it = clients.for_broker(crashing)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=1)
    publisher = on_it.connected()
    for number in range(20):
        publisher.publish(f"{topic}/m", f"{number}".encode(), qos=1)
    kill(crashing)
    crashing.process.wait(30)

    # What a process killed in the middle of a write leaves: the last block written, which
    # queues the last message for the subscriber, cut short or garbled.
    segment = newest_segment(crashing)
    start, end, _ = [
        block
        for block in journal_blocks(segment)
        if any(isinstance(record, DeliveryQueued) for record in block[2])
    ][-1]
    data = segment.read_bytes()
    if damage == "cut-short":
        segment.write_bytes(data[: (start + end) // 2])
    else:
        segment.write_bytes(data[: end - 2] + bytes(byte ^ 0xFF for byte in data[end - 2 : end]))
    crashing.crash_and_restart()

    delivered = everything_received(on_it, reconnect(on_it, subscriber_id), f"{topic}/m")
    assert delivered == [f"{number}".encode() for number in range(19)]
    assert "cut off" in crashing.log_tail()


def test_damage_before_the_end_of_the_journal_stops_the_start_and_loses_nothing(
    broker_factory, clients, topic
) -> None:
    crashing = broker_factory()
    on_it = clients.for_broker(crashing)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=1)
    publisher = on_it.connected()
    publisher.publish(f"{topic}/m", b"in the first segment", qos=1)
    kill(crashing)
    crashing.crash_and_restart()
    publisher = on_it.connected()
    publisher.publish(f"{topic}/m", b"in the second segment", qos=1)
    kill(crashing)
    crashing.process.wait(30)

    first = min((crashing.data_dir / "journal").glob("*.log"))
    assert first != newest_segment(crashing)
    intact = first.read_bytes()
    first.write_bytes(intact[:-3] + bytes(byte ^ 0xFF for byte in intact[-3:]))
    with pytest.raises(RuntimeError, match=f"{first.name} is damaged"):
        crashing.crash_and_restart()

    first.write_bytes(intact)  # restored from a backup, say
    crashing.crash_and_restart()
    assert everything_received(on_it, reconnect(on_it, subscriber_id), f"{topic}/m") == [
        b"in the first segment",
        b"in the second segment",
    ]


def test_a_crash_after_a_clean_restart_keeps_both_runs_messages(broker_factory, clients, topic) -> None:
    restarting = broker_factory()
    on_it = clients.for_broker(restarting)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=1)
    publisher = on_it.connected()
    publisher.publish(f"{topic}/m", b"before the clean stop", qos=1)
    restarting.restart()  # SIGTERM: a checkpoint, and the journal starts afresh
    publisher = on_it.connected()
    publisher.publish(f"{topic}/m", b"after the clean stop", qos=1)
    kill(restarting)
    restarting.crash_and_restart()

    assert everything_received(on_it, reconnect(on_it, subscriber_id), f"{topic}/m") == [
        b"before the clean stop",
        b"after the clean stop",
    ]


def test_power_loss_durability_keeps_every_acknowledged_message(broker_factory, clients, topic) -> None:
    crashing = broker_factory(
        CERTMQ_MQTT_DURABILITY="power-loss", CERTMQ_MQTT_MAX_QUEUED_MESSAGES=10 * STREAM
    )
    on_it = clients.for_broker(crashing)
    subscriber_id = offline_subscriber(on_it, f"{topic}/#", qos=1)

    acknowledged = publish_stream(on_it, crashing, topic, KillPoint(acknowledgements=100))
    crashing.crash_and_restart()

    delivered = set(everything_received(on_it, reconnect(on_it, subscriber_id), f"{topic}/stream"))
    assert len(acknowledged) >= 100
    assert not [payload for payload in acknowledged if payload not in delivered]


def test_acknowledgements_keep_the_order_of_the_publishes(broker_factory, clients, topic) -> None:
    """A PUBACK that waits for the journal holds back those after it (MQTT 4.6), even those
    that wait for nothing."""
    broker = broker_factory()
    on_it = clients.for_broker(broker)
    offline_subscriber(on_it, f"{topic}/kept", qos=1)
    publisher = on_it.raw()
    publisher.connect(on_it.client_id("publisher"))
    sent = []
    for number in range(300):
        # Every third message goes to the kept session: its PUBACK waits for the journal.
        kept = number % 3 == 0
        sent.append(publisher.publish(f"{topic}/kept" if kept else f"{topic}/nobody", b"x", qos=1))
    acknowledged = [publisher.read_until(PUBACK).packet_id for _ in sent]
    assert acknowledged == sent
