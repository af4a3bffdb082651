"""What a logged-in client can make the broker hold is bounded (docs/configuration.md, "Limits"):
queued bytes per session, retained messages in count and bytes, subscriptions per client, topic
length and levels. Each flood runs against a real broker process whose resident memory is read
from /proc before and after; the client sees the reason codes, and /metrics counts the refusals."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import raw_mqtt
from broker_process import RunningBroker, expect_failure_on_mosquitto, start_broker
from paho_client import V5, V311

MIB = 1024 * 1024
MESSAGE = 1_000_000  # payload bytes of one flood message
FLOOD = 200
QUEUE_QUOTA = 4 * MIB
RETAINED_QUOTA = 8 * MIB
# What a broker process may grow by beyond what its limits let it hold: transient buffers of the
# packets being read and the allocator's own slack. The floods below would add 130 MB and more
# without the limits.
ALLOCATOR_SLACK = 40 * MIB


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One broker with small queue and retained quotas for the floods below; each test reads the
    counters' growth and keeps to its own topics and client ids."""
    running = start_broker(
        tmp_path_factory.mktemp("limited"),
        {"CERTMQ_MQTT_MAX_QUEUED_BYTES": QUEUE_QUOTA, "CERTMQ_MQTT_MAX_RETAINED_BYTES": RETAINED_QUOTA},
    )
    yield running
    assert running.stop() == 0, running.log_tail()


def resident_bytes(broker: RunningBroker) -> int:
    for line in Path(f"/proc/{broker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


def assert_grown_within(broker: RunningBroker, before: int, held: int) -> None:
    grown = resident_bytes(broker) - before
    assert grown < held + ALLOCATOR_SLACK, (
        f"the broker grew by {grown / MIB:.0f} MiB where its limits let it hold {held / MIB:.0f} MiB"
    )


def metric(broker: RunningBroker, name: str) -> float:
    """The value of an unlabelled metric on the broker's /metrics page."""
    samples = broker.metrics()
    assert name in samples, f"{name} is not on /metrics"
    return samples[name]


def flood_payload(index: int, size: int = MESSAGE) -> bytes:
    return index.to_bytes(4, "big") + bytes(size - 4)


def publish_and_collect_acks(
    client: raw_mqtt.RawClient, topics: list[str], payload: Callable[[int], bytes], **options: Any
) -> list[int]:
    """Publish one QoS 1 message per topic, then read the PUBACKs; their reason codes in order."""
    sent = [client.publish(name, payload(index), qos=1, **options) for index, name in enumerate(topics)]
    codes = {}
    while len(codes) < len(sent):
        puback = client.read_until(raw_mqtt.PUBACK, timeout=30)
        codes[puback.packet_id] = puback.reason_code or 0
    return [codes[packet_id] for packet_id in sent]


def warm_up(clients, topic: str) -> None:
    """Let the broker read a few large packets that go nowhere, so that the buffers it reads them
    with are already part of the memory measured before a flood."""
    publisher = clients.raw()
    publisher.connect(clients.client_id("warm-up"))
    publish_and_collect_acks(publisher, [f"{topic}/nobody"] * 5, flood_payload)
    publisher.disconnect()


def offline_subscriber(clients, topic: str) -> str:
    """A persistent session subscribed to ``topic`` at QoS 1, offline; its client id."""
    client_id = clients.client_id("offline")
    subscriber = clients.raw()
    subscriber.connect(client_id, clean=False, properties={raw_mqtt.SESSION_EXPIRY_INTERVAL: 600})
    subscriber.subscribe([(topic, 1)])
    subscriber.disconnect()
    return client_id


# ---- queued bytes per session -------------------------------------------------------------------


@expect_failure_on_mosquitto("has no /metrics")
def test_an_offline_session_holds_no_more_than_max_queued_bytes(limited, clients, topic):
    clients = clients.for_broker(limited)
    subscriber_id = offline_subscriber(clients, topic)
    warm_up(clients, topic)
    dropped_before = metric(limited, "certmq_messages_dropped_queue_full_total")
    before = resident_bytes(limited)

    publisher = clients.raw()
    publisher.connect(clients.client_id("flood"))
    codes = publish_and_collect_acks(publisher, [topic] * FLOOD, flood_payload)
    assert codes == [0] * FLOOD, "the publisher's messages are accepted; only the full session drops them"

    assert_grown_within(limited, before, QUEUE_QUOTA)
    kept = QUEUE_QUOTA // (MESSAGE + len(topic))
    assert metric(limited, "certmq_messages_dropped_queue_full_total") - dropped_before == FLOOD - kept
    assert metric(limited, "certmq_queued_bytes") == kept * (MESSAGE + len(topic))

    again = clients.raw()
    assert again.connect(subscriber_id, clean=False).session_present
    received = again.read_publishes(kept, timeout=30)
    indexes = [int.from_bytes(packet.payload[:4], "big") for packet in received]
    assert indexes == list(range(kept)), "the first messages are kept, the later ones dropped"
    with pytest.raises(TimeoutError):
        again.read_packet(timeout=1)
    assert metric(limited, "certmq_queued_bytes") == 0, "acknowledged messages free their bytes"


@expect_failure_on_mosquitto("counts only queued messages, not those in flight, and has no /metrics")
def test_a_subscriber_that_never_acknowledges_holds_no_more_than_max_queued_bytes(limited, clients, topic):
    clients = clients.for_broker(limited)
    subscriber = clients.raw(timeout=30)
    subscriber.connect(clients.client_id("silent"))
    subscriber.subscribe([(topic, 1)])
    warm_up(clients, topic)
    dropped_before = metric(limited, "certmq_messages_dropped_queue_full_total")
    before = resident_bytes(limited)

    publisher = clients.raw()
    publisher.connect(clients.client_id("flood"))
    assert publish_and_collect_acks(publisher, [topic] * FLOOD, flood_payload) == [0] * FLOOD

    kept = QUEUE_QUOTA // (MESSAGE + len(topic))
    in_flight = subscriber.read_publishes(kept, acknowledge=False)
    with pytest.raises(TimeoutError):
        subscriber.read_packet(timeout=1)
    assert_grown_within(limited, before, QUEUE_QUOTA)
    assert metric(limited, "certmq_messages_dropped_queue_full_total") - dropped_before == FLOOD - kept

    # Acknowledging frees the quota: the next message is delivered.
    for packet in in_flight:
        subscriber.acknowledge(packet)
    publisher.publish(topic, flood_payload(FLOOD), qos=1)
    assert int.from_bytes(subscriber.read_publishes(1)[0].payload[:4], "big") == FLOOD


@expect_failure_on_mosquitto("has no /metrics")
def test_user_properties_count_for_what_they_cost_to_hold(limited, clients, topic):
    """A message of thousands of tiny user properties is small on the wire and large in memory;
    the queue counts what it costs to hold, not its payload."""
    clients = clients.for_broker(limited)
    offline_subscriber(clients, topic)
    dropped_before = metric(limited, "certmq_messages_dropped_queue_full_total")
    before = resident_bytes(limited)

    publisher = clients.raw()
    publisher.connect(clients.client_id("properties"))
    properties = {raw_mqtt.USER_PROPERTY: [(f"{n % 100:02d}", "ab") for n in range(4000)]}
    codes = publish_and_collect_acks(publisher, [topic] * FLOOD, lambda index: b"", properties=properties)
    assert codes == [0] * FLOOD

    assert_grown_within(limited, before, QUEUE_QUOTA)
    kept = FLOOD - (metric(limited, "certmq_messages_dropped_queue_full_total") - dropped_before)
    assert 1 <= kept <= 10, f"{kept:.0f} messages of 4000 user properties (36 kB on the wire) kept in 4 MiB"


@expect_failure_on_mosquitto("has no limit on the size of a will")
def test_a_will_larger_than_a_session_may_hold_is_refused(limited, clients, topic):
    """A will of 30,000 user properties is 270 kB on the wire and 5 MB to hold: more than the
    4 MiB a session of this broker may hold."""
    clients = clients.for_broker(limited)
    properties = {raw_mqtt.USER_PROPERTY: [("ab", "cd")] * 30_000}
    client = clients.raw()
    connack = client.connect(
        clients.client_id("will"), will=(f"{topic}/will", b"gone", 1, False), will_properties=properties
    )
    assert connack.reason_code == 0x97
    smaller = {raw_mqtt.USER_PROPERTY: [("ab", "cd")] * 10_000}
    client = clients.raw()
    connack = client.connect(
        clients.client_id("will"), will=(f"{topic}/will", b"gone", 1, False), will_properties=smaller
    )
    assert connack.reason_code == 0


# ---- retained messages --------------------------------------------------------------------------


@expect_failure_on_mosquitto("has no limit on retained messages")
def test_retained_messages_beyond_max_retained_bytes_are_refused_with_quota_exceeded(limited, clients, topic):
    clients = clients.for_broker(limited)
    warm_up(clients, topic)
    refused_before = metric(limited, "certmq_retained_refused_total")
    before = resident_bytes(limited)

    publisher = clients.raw()
    publisher.connect(clients.client_id("retainer"))
    names = [f"{topic}/{index}" for index in range(FLOOD)]
    codes = publish_and_collect_acks(publisher, names, flood_payload, retain=True)
    kept = codes.count(0)
    assert kept == 8, f"{kept} retained messages of 1 MB stored in 8 MiB"
    assert codes == [0] * kept + [0x97] * (FLOOD - kept), (
        "0x97 Quota exceeded once the retained bytes are full"
    )
    assert_grown_within(limited, before, RETAINED_QUOTA)
    assert metric(limited, "certmq_retained_refused_total") - refused_before == FLOOD - kept
    assert metric(limited, "certmq_retained_bytes") <= RETAINED_QUOTA

    # One topic at a time: the late subscriber's own queue quota is smaller than what is retained.
    late = clients.raw(timeout=30)
    late.connect(clients.client_id("late"))
    for name in names[:kept]:
        late.subscribe([(name, 1)])
        assert late.read_publishes(1)[0].topic == name
    late.subscribe([(names[kept], 1)])
    with pytest.raises(TimeoutError):
        late.read_packet(timeout=1)

    # Clearing a topic frees its bytes for another; replacing by one no larger always succeeds.
    assert publish_and_collect_acks(publisher, [names[0]], lambda index: b"", retain=True) == [0]
    assert publish_and_collect_acks(publisher, [f"{topic}/new"], flood_payload, retain=True) == [0]
    assert publish_and_collect_acks(publisher, [names[1]], flood_payload, retain=True) == [0]
    assert publish_and_collect_acks(publisher, [f"{topic}/more"], flood_payload, retain=True) == [0x97]
    # Leave the store as it was for the other tests.
    publish_and_collect_acks(publisher, [*names[1:kept], f"{topic}/new"], lambda index: b"", retain=True)


@expect_failure_on_mosquitto("has no limit on retained messages")
def test_a_retained_message_its_publisher_cannot_be_told_about_is_delivered_not_kept(
    broker_factory, clients, topic
):
    """MQTT 3.1.1 has no negative acknowledgement, and a QoS 0 publish none at all: the message
    goes to the present subscribers and is not kept beyond max_retained_messages."""
    broker = broker_factory(CERTMQ_MQTT_MAX_RETAINED_MESSAGES=5, CERTMQ_MQTT_SYS_INTERVAL=0)
    clients = clients.for_broker(broker)
    for version, qos in ((V311, 1), (V5, 0)):
        prefix = f"{topic}/v{version}-qos{qos}"
        live = clients.connected(V5)
        live.subscribe(f"{prefix}/#", qos=1)
        publisher = clients.connected(version)
        names = [f"{prefix}/{index}" for index in range(10)]
        for name in names:
            publisher.publish(name, b"retained", qos=qos, retain=True)
        assert sorted(message.topic for message in live.expect_messages(10)) == sorted(names)

        late = clients.connected(V5)
        late.subscribe(f"{prefix}/#", qos=1)
        assert sorted(message.topic for message in late.expect_messages(5)) == sorted(names[:5])
        time.sleep(0.5)
        assert late.drain() == [], "only max_retained_messages are kept"
        assert metric(broker, "certmq_retained_messages") == 5
        for name in names[:5]:
            publisher.publish(name, b"", qos=1, retain=True)
    assert metric(broker, "certmq_retained_refused_total") == 10


# ---- subscriptions per client -------------------------------------------------------------------


def subscribe_many(client: raw_mqtt.RawClient, filters: list[str]) -> list[int]:
    """One SUBSCRIBE of many filters at QoS 1; the SUBACK's codes."""
    packet_id = client.next_packet_id()
    body = struct.pack("!H", packet_id) + (b"\x00" if client.version == 5 else b"")
    body += b"".join(raw_mqtt.encode_string(name) + b"\x01" for name in filters)
    client.send_packet(raw_mqtt.SUBSCRIBE, 0x02, body)
    suback = client.read_until(raw_mqtt.SUBACK, timeout=30)
    assert suback.packet_id == packet_id
    return suback.reason_codes


@expect_failure_on_mosquitto("has no limit on subscriptions per client")
def test_200000_subscriptions_are_refused_beyond_the_limit_and_memory_stays_bounded(broker, clients, topic):
    """The default limit, 100 per client, on the broker with default settings."""
    refused_before = metric(broker, "certmq_subscriptions_over_limit_total")
    subscriptions_before = metric(broker, "certmq_subscriptions")
    before = resident_bytes(broker)
    flooder = clients.raw(timeout=30)
    flooder.connect(clients.client_id("subscriber"))
    codes: list[int] = []
    for batch in range(200):
        codes += subscribe_many(flooder, [f"{topic}/{batch}/{n}" for n in range(1000)])
    assert (len(codes), codes[:100], set(codes[100:])) == (200_000, [1] * 100, {0x97})
    grown = resident_bytes(broker) - before
    # Without the limit the 200,000 subscriptions take over 100 MB.
    assert grown < 16 * MIB, f"the broker grew by {grown / MIB:.0f} MiB for 100 subscriptions"
    assert metric(broker, "certmq_subscriptions_over_limit_total") - refused_before == 199_900
    assert metric(broker, "certmq_subscriptions") - subscriptions_before == 100

    # Subscribing again to a filter it has replaces it; unsubscribing makes room for another.
    assert subscribe_many(flooder, [f"{topic}/0/0"]) == [1]
    flooder.send_packet(
        raw_mqtt.UNSUBSCRIBE,
        0x02,
        struct.pack("!H", 60000) + b"\x00" + raw_mqtt.encode_string(f"{topic}/0/1"),
    )
    assert flooder.read_until(raw_mqtt.UNSUBACK).reason_codes == [0]
    assert subscribe_many(flooder, [f"{topic}/new", f"{topic}/newer"]) == [1, 0x97]

    old = clients.raw(version=4)
    old.connect(clients.client_id("v311"))
    assert subscribe_many(old, [f"{topic}/v311/{n}" for n in range(101)]) == [1] * 100 + [0x80]


# ---- topic length and levels ---------------------------------------------------------------------

DEFAULT_MAX_TOPIC_LENGTH = 1024
DEFAULT_MAX_TOPIC_LEVELS = 128


def over_limits(prefix: str) -> dict[str, str]:
    """Topics under ``prefix`` just beyond the default limits, and just within them."""
    levels = prefix.count("/") + 1
    return {
        "length": prefix + "/" + "x" * (DEFAULT_MAX_TOPIC_LENGTH - len(prefix)),
        # Within the limit in characters, beyond it in UTF-8 bytes.
        "utf8-length": prefix + "/" + "é" * ((DEFAULT_MAX_TOPIC_LENGTH - len(prefix)) // 2 + 1),
        "levels": prefix + "/l" * (DEFAULT_MAX_TOPIC_LEVELS + 1 - levels),
    }


def within_limits(prefix: str) -> dict[str, str]:
    levels = prefix.count("/") + 1
    return {
        "length": prefix + "/" + "x" * (DEFAULT_MAX_TOPIC_LENGTH - len(prefix) - 1),
        "levels": prefix + "/l" * (DEFAULT_MAX_TOPIC_LEVELS - levels),
    }


def route_publish(version: int, qos: int):
    def attempt(clients, name: str) -> int | None:
        client = clients.raw(version=version)
        client.connect(clients.client_id("publisher"))
        client.publish(name, b"over", qos=qos)
        if qos == 0:
            return None
        return client.read_until(raw_mqtt.PUBACK if qos == 1 else raw_mqtt.PUBREC).reason_code or 0

    return attempt


def route_subscribe(version: int, shared: bool = False):
    def attempt(clients, name: str) -> int | None:
        client = clients.raw(version=version)
        client.connect(clients.client_id("subscriber"))
        return client.subscribe([(f"$share/group/{name}" if shared else name, 1)]).reason_codes[0]

    return attempt


def route_will(version: int):
    def attempt(clients, name: str) -> int | None:
        client = clients.raw(version=version)
        return client.connect(clients.client_id("will"), will=(name, b"last words", 1, True)).reason_code

    return attempt


# Every way a client names a topic, and what it is told when the topic is beyond the limits.
ROUTES = [
    pytest.param(route_publish(5, 1), 0x90, id="publish-v5-qos1-puback-0x90"),
    pytest.param(route_publish(5, 2), 0x90, id="publish-v5-qos2-pubrec-0x90"),
    pytest.param(route_publish(4, 1), 0, id="publish-v311-qos1-dropped"),
    pytest.param(route_publish(5, 0), None, id="publish-v5-qos0-dropped"),
    pytest.param(route_subscribe(5), 0x8F, id="subscribe-v5-suback-0x8f"),
    pytest.param(route_subscribe(5, shared=True), 0x8F, id="shared-subscribe-v5-suback-0x8f"),
    pytest.param(route_subscribe(4), 0x80, id="subscribe-v311-suback-0x80"),
    pytest.param(route_will(5), 0x90, id="will-v5-connack-0x90"),
    pytest.param(route_will(4), 3, id="will-v311-connack-3"),
]


@expect_failure_on_mosquitto("has no limit on topic length or levels")
@pytest.mark.parametrize("beyond", ["length", "utf8-length", "levels"])
@pytest.mark.parametrize(("route", "expected"), ROUTES)
def test_a_topic_beyond_the_default_limits_is_refused_on_every_route(
    broker, clients, topic, route, expected, beyond
):
    watcher = clients.connected(V5)
    watcher.subscribe(f"{topic}/#", qos=1)
    name = over_limits(topic)[beyond]
    refused_before = metric(broker, "certmq_topics_over_limit_total")

    assert route(clients, name) == expected
    assert metric(broker, "certmq_topics_over_limit_total") == refused_before + 1

    # Nothing was published under the watcher's filter: the next message it gets is the sentinel.
    clients.connected(V5).publish(f"{topic}/sentinel", b"after", qos=1)
    assert watcher.expect_message().topic == f"{topic}/sentinel", "a refused topic was delivered"


@pytest.mark.parametrize("within", ["length", "levels"])
def test_a_topic_at_the_default_limits_is_published_and_subscribed(clients, topic, within):
    name = within_limits(topic)[within]
    subscriber = clients.raw()
    subscriber.connect(clients.client_id("subscriber"))
    assert subscriber.subscribe([(name, 1)]).reason_codes == [1]
    publisher = clients.raw()
    publisher.connect(clients.client_id("publisher"))
    publisher.publish(name, b"at the limit", qos=1)
    assert (publisher.read_until(raw_mqtt.PUBACK).reason_code or 0) == 0
    assert subscriber.read_publishes(1)[0].topic == name
