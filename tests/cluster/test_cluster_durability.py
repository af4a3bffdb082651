"""What a node's sessions survive: each node keeps them in JetStream (cluster.state_storage =
"nats"), not in its data directory, and its clients find them again after a kill -9 or a
rolling restart of every node."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from cluster_nodes import ClusterNodes
from paho.mqtt.packettypes import PacketTypes

from broker_process import RunningBroker
from mqtt_clients import Clients
from paho_client import WAIT, properties

# A message of the stream that a killed node had not acknowledged is sent to it again once
# the stream's acknowledgement wait (30 s) is over.
REDELIVERY = 30 + 3 * WAIT


@pytest.fixture
def cluster(start_cluster: Callable[..., ClusterNodes]) -> ClusterNodes:
    return start_cluster()


@pytest.mark.nodes(1, 2)
def test_a_killed_node_has_its_sessions_and_their_queued_messages_from_jetstream_not_its_disk(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    client_id = f"durable-{uuid.uuid4().hex[:8]}"
    expiry = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    subscriber = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    subscriber.connect(clean_start=True, props=expiry)
    assert subscriber.subscribe(f"{topic}/#", qos=1) == [1]
    subscriber.disconnect()

    # Published on node 2, acknowledged once the cluster's stream has them, queued on node 1.
    publisher = clients.for_broker(cluster.node(2)).connected()
    sent = [f"queued {number}".encode() for number in range(5)]
    for payload in sent:
        publisher.publish(f"{topic}/readings", payload, qos=1)
    deadline = time.monotonic() + WAIT
    while cluster.node(1).metrics()["certmq_queued_messages"] < len(sent):
        assert time.monotonic() < deadline, "node 1 did not queue the messages"
        time.sleep(0.02)

    cluster.kill(1)
    data_dir = cluster.node(1).data_dir
    assert not (data_dir / "journal").exists() and not (data_dir / "broker-state.db").exists()
    # What a node with cluster.state_storage = "local" would have left: not read, and said so.
    (data_dir / "broker-state.db").write_bytes(b"")
    cluster.start(1)
    assert f"{data_dir} holds sessions and retained messages kept there before" in cluster.node(1).log_tail(
        200
    )

    back = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    result = back.connect(clean_start=False, props=expiry)
    assert result.session_present
    # All of them, in order; one may come twice (QoS 1) if the node was killed between writing
    # it to its journal and acknowledging it to the stream.
    received: list[bytes] = []
    deadline = time.monotonic() + REDELIVERY
    while set(sent) - set(received):
        assert time.monotonic() < deadline, f"missing: {sorted(set(sent) - set(received))}"
        received += [message.payload for message in back.drain()]
        time.sleep(0.02)
    assert list(dict.fromkeys(received)) == sent


def reconnecting_client(node: RunningBroker, client_id: str) -> mqtt.Client:
    """A paho client that keeps its session (MQTT 5, expiry 600 s) and reconnects by itself,
    as devices do, when its node goes away; connected."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(min_delay=0.2, max_delay=1)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect_async(
        node.host,
        node.tcp_port,
        clean_start=False,
        properties=properties(PacketTypes.CONNECT, SessionExpiryInterval=600),
    )
    client.loop_start()
    assert connected.wait(WAIT), f"{client_id} did not connect"
    return client


def test_a_rolling_restart_of_every_node_loses_no_acknowledged_message(
    cluster: ClusterNodes, topic: str
) -> None:
    # Node 1 holds the subscriber's session, node 2 the publisher's; each node is restarted in
    # turn (SIGTERM, then started again) while the publisher goes on, both reconnecting alone.
    received: list[bytes] = []
    subscriber = reconnecting_client(cluster.node(1), f"rolling-sub-{uuid.uuid4().hex[:6]}")
    subscriber.on_message = lambda _client, _userdata, message: received.append(message.payload)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe(f"{topic}/steady", qos=1)
    assert subscribed.wait(WAIT)
    publisher = reconnecting_client(cluster.node(2), f"rolling-pub-{uuid.uuid4().hex[:6]}")
    published: list[tuple[bytes, mqtt.MQTTMessageInfo]] = []
    stop = threading.Event()

    def publish() -> None:
        number = 0
        while not stop.is_set():
            if publisher.is_connected():
                payload = f"steady {number}".encode()
                # In flight when its node goes away: sent again by paho once it is back.
                published.append((payload, publisher.publish(f"{topic}/steady", payload, qos=1)))
                number += 1
            time.sleep(0.02)

    sender = threading.Thread(target=publish)
    sender.start()
    try:
        for number in (1, 2, 3):
            time.sleep(1)
            cluster.restart(number)
        time.sleep(1)
    finally:
        stop.set()
        sender.join()
    try:
        # Those paho refused at once (its node went away between the check and the publish)
        # were never the broker's to keep.
        taken = [(payload, info) for payload, info in published if info.rc == mqtt.MQTT_ERR_SUCCESS]
        for _, info in taken:
            info.wait_for_publish(REDELIVERY)
        acknowledged = [payload for payload, info in taken if info.is_published()]
        assert len(acknowledged) == len(taken) > 100, "paho gave up on some messages"
        deadline = time.monotonic() + REDELIVERY
        while set(acknowledged) - set(received):
            missing = set(acknowledged) - set(received)
            assert time.monotonic() < deadline, (
                f"{len(missing)} of {len(acknowledged)} lost: {sorted(missing)[:5]}"
            )
            time.sleep(0.1)
        # In the order published (a message may come twice, as QoS 1 allows).
        kept = set(acknowledged)
        assert [payload for payload in dict.fromkeys(received) if payload in kept] == acknowledged
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()
