"""One broker to its clients: what is published on one node reaches the subscribers on the others.

Each test publishes on node 1 and subscribes on nodes 2 and 3, and expects what a single node
gives: every matching subscription served once, at the QoS it was granted (never above the
publisher's), in the order each publisher sent, under the exact topic published, with the MQTT 5
properties the publisher set. The three nodes of this module share one cluster; tests keep apart
by their topics.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from cluster_nodes import ClusterNodes, ClusterServers
from paho.mqtt.packettypes import PacketTypes

from broker_process import RunningBroker
from mosquitto_tools import Subscriber, publish
from mqtt_clients import Clients
from paho_client import WAIT, PahoClient, properties

# A message that crosses between nodes is waited for as long as one within a node.
CROSSING = WAIT
SEQUENCE_LENGTH = 500


@pytest.fixture(scope="module")
def cluster(servers: ClusterServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    with servers.cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def on(clients: Clients, node: RunningBroker) -> PahoClient:
    """A paho-mqtt 5.0 client connected to ``node``."""
    return clients.for_broker(node).connected()


def test_subscribers_on_other_nodes_receive_each_qos_at_the_lower_of_publish_and_subscribe(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    subscribers = {}
    for number in (2, 3):
        for granted in (0, 1, 2):
            subscriber = on(clients, cluster.node(number))
            assert subscriber.subscribe(f"{topic}/#", qos=granted) == [granted]
            subscribers[number, granted] = subscriber
    publisher = on(clients, cluster.node(1))
    for sent in (0, 1, 2):
        # With QoS 1 and 2 this returns once the PUBACK (QoS 1) or PUBCOMP (QoS 2) has come back.
        publisher.publish(f"{topic}/qos{sent}", f"at qos {sent}".encode(), qos=sent)

    for (number, granted), subscriber in subscribers.items():
        received = sorted(
            (message.topic, message.payload, message.qos)
            for message in subscriber.expect_messages(3, timeout=CROSSING)
        )
        assert received == [
            (f"{topic}/qos{sent}", f"at qos {sent}".encode(), min(sent, granted)) for sent in (0, 1, 2)
        ], f"subscriber at QoS {granted} on node {number}"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_sub_on_node_3_receives_what_mosquitto_pub_sends_to_node_1(
    cluster: ClusterNodes, topic: str, qos: int
) -> None:
    subscriber = Subscriber(cluster.node(3), topic, qos=qos, count=1).start()
    try:
        publish(cluster.node(1), topic, "-q", str(qos), "-m", f"across at qos {qos}")
        assert subscriber.messages() == [(topic, qos, False, f"across at qos {qos}")]
    finally:
        subscriber.stop()


def test_a_message_published_just_after_a_subscription_on_another_node_is_delivered(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    subscriber = on(clients, cluster.node(2))
    publisher = on(clients, cluster.node(1))
    for attempt in range(20):
        subscriber.subscribe(f"{topic}/{attempt}", qos=1)
        publisher.publish(f"{topic}/{attempt}", b"right after the SUBACK", qos=1)
        assert subscriber.expect_message(timeout=CROSSING).topic == f"{topic}/{attempt}"


def test_overlapping_subscriptions_on_another_node_get_one_copy_of_each_message(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    subscriber = on(clients, cluster.node(2))
    subscriber.subscribe(f"{topic}/a/+", qos=1)
    subscriber.subscribe(f"{topic}/a/#", qos=1)
    publisher = on(clients, cluster.node(1))
    payloads = [f"message {number}".encode() for number in range(5)]
    for payload in [*payloads, b"last"]:
        publisher.publish(f"{topic}/a/x", payload, qos=1)

    received = []
    while not received or received[-1] != b"last":
        received.append(subscriber.expect_message(timeout=CROSSING).payload)
    # A second copy of a message would be on its way with the first, ahead of the last message.
    assert received == [*payloads, b"last"]


def test_numbered_qos1_messages_arrive_complete_and_in_order_on_every_other_node(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    subscribers = [on(clients, cluster.node(number)) for number in (2, 3)]
    for subscriber in subscribers:
        subscriber.subscribe(topic, qos=1)
    publisher = on(clients, cluster.node(1))
    sent = [str(number).encode() for number in range(SEQUENCE_LENGTH)]
    acknowledgements = [publisher.publish(topic, payload, qos=1, wait=False) for payload in sent]
    for acknowledgement in acknowledgements:
        acknowledgement.wait_for_publish(CROSSING)
        assert acknowledgement.is_published()

    for subscriber in subscribers:
        received = [message.payload for message in subscriber.expect_messages(len(sent), timeout=CROSSING)]
        assert received == sent


# Characters that NATS subjects give a meaning of their own (separators, wildcards, white space),
# unicode, and empty levels: each must come out under the topic it went in with.
UNUSUAL_LEVELS = [
    "dotted.level",
    "*",
    ">",
    "a*b>c",
    "with space",
    "ünïcødé 温度 🌡",
    "",
    "=2E",
    "%2F",
    "-_",
]


def test_topics_with_nats_special_characters_arrive_under_their_exact_topic(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    topics = [f"{topic}/{level}/end" for level in UNUSUAL_LEVELS]
    topics += [f"{topic}//", f"{topic}/a//b", f"/{topic}"]
    exact = on(clients, cluster.node(2))
    for name in topics:
        exact.subscribe(name, qos=1)
    everything = on(clients, cluster.node(3))
    everything.subscribe(f"{topic}/#", qos=1)
    everything.subscribe(f"/{topic}/#", qos=1)
    one_level = on(clients, cluster.node(2))
    one_level.subscribe(f"{topic}/+/end", qos=1)

    publisher = on(clients, cluster.node(1))
    for name in topics:
        publisher.publish(name, name.encode(), qos=1)
    # Matched by `+/end` and published last: whatever that filter wrongly took arrives before it.
    publisher.publish(f"{topic}/sentinel/end", b"sentinel", qos=1)

    received = exact.expect_messages(len(topics), timeout=CROSSING)
    assert sorted(message.topic for message in received) == sorted(topics)
    assert all(message.payload == message.topic.encode() for message in received)
    received = everything.expect_messages(len(topics) + 1, timeout=CROSSING)
    assert sorted(message.topic for message in received) == sorted([*topics, f"{topic}/sentinel/end"])

    single_level = []
    while not single_level or single_level[-1] != f"{topic}/sentinel/end":
        single_level.append(one_level.expect_message(timeout=CROSSING).topic)
    assert sorted(single_level) == sorted(
        [f"{topic}/{level}/end" for level in UNUSUAL_LEVELS] + [f"{topic}/sentinel/end"]
    )


def test_wildcards_on_another_node_do_not_match_topics_that_start_with_a_dollar(
    cluster: ClusterNodes, clients: Clients
) -> None:
    unique = uuid.uuid4().hex[:8]
    dollar_topic = f"$cluster-test/{unique}/x"
    named = on(clients, cluster.node(2))
    named.subscribe(f"$cluster-test/{unique}/#", qos=1)
    plus_first = on(clients, cluster.node(2))
    plus_first.subscribe(f"+/{unique}/x", qos=1)
    hash_only = on(clients, cluster.node(3))
    hash_only.subscribe("#", qos=1)

    publisher = on(clients, cluster.node(1))
    publisher.publish(dollar_topic, b"dollar", qos=1)
    assert named.expect_message(timeout=CROSSING).topic == dollar_topic
    sentinel = f"plain/{unique}/x"
    publisher.publish(sentinel, b"sentinel", qos=1)

    assert plus_first.expect_message(timeout=CROSSING).topic == sentinel, "'+' matched a $ topic"
    seen = []
    while not seen or seen[-1] != sentinel:
        seen.append(hash_only.expect_message(timeout=CROSSING).topic)
    assert [name for name in seen if name.startswith("$")] == [], "'#' matched a $ topic"


def test_mqtt5_properties_reach_a_subscriber_on_another_node_unchanged(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    subscriber = on(clients, cluster.node(2))
    subscriber.subscribe(topic, qos=1)
    publisher = on(clients, cluster.node(1))
    user_properties = [("trace", "a1"), ("trace", "b2"), ("ünï", "cødé 温度"), ("empty", "")]
    correlation = bytes(range(256))
    publisher.publish(
        topic,
        "température: 21.5 °C".encode(),
        qos=1,
        props=properties(
            PacketTypes.PUBLISH,
            UserProperty=user_properties,
            ContentType="text/plain; charset=utf-8",
            ResponseTopic=f"{topic}/reply",
            CorrelationData=correlation,
            PayloadFormatIndicator=1,
            MessageExpiryInterval=120,
        ),
    )

    message = subscriber.expect_message(timeout=CROSSING)
    assert message.payload == "température: 21.5 °C".encode()
    assert message.property("UserProperty") == user_properties
    assert message.property("ContentType") == "text/plain; charset=utf-8"
    assert message.property("ResponseTopic") == f"{topic}/reply"
    assert message.property("CorrelationData") == correlation
    assert message.property("PayloadFormatIndicator") == 1
    assert 110 <= message.property("MessageExpiryInterval", -1) <= 120


def test_message_expiry_counts_down_while_a_message_waits_on_another_node(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    client_id = clients.client_id("expiry")
    persistent = properties(PacketTypes.CONNECT, SessionExpiryInterval=300)
    device = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
    device.connect(clean_start=False, props=persistent)
    device.subscribe(topic, qos=1)
    device.disconnect()

    publisher = on(clients, cluster.node(1))
    for payload, expiry in ((b"short-lived", 1), (b"long-lived", 60)):
        publisher.publish(
            topic, payload, qos=1, props=properties(PacketTypes.PUBLISH, MessageExpiryInterval=expiry)
        )
    time.sleep(2.5)  # the time the expiry intervals count down while the subscriber is away

    back = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
    assert back.connect(clean_start=False, props=persistent).session_present
    message = back.expect_message(timeout=CROSSING)
    assert message.payload == b"long-lived", "an expired message was delivered"
    assert 50 <= message.property("MessageExpiryInterval", -1) <= 58
