"""What a node's sessions survive when the node is killed: each node keeps them in JetStream
(cluster.state_storage = "nats"), not in its data directory."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from cluster_nodes import ClusterNodes
from paho.mqtt.packettypes import PacketTypes

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
    cluster.start(1)

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
