"""What the clients of a cluster see when one of the parts it stands on goes away."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cluster_nodes import ClusterNodes
from nats_servers import NatsCluster

from mqtt_clients import Clients
from paho_client import WAIT

# How long a node may take to find another NATS server when the one it used is gone.
RECONNECTION = 3 * WAIT


@pytest.fixture
def cluster(start_cluster: Callable[..., ClusterNodes]) -> ClusterNodes:
    return start_cluster()


@pytest.mark.nodes(1, 2)
def test_messages_keep_crossing_between_nodes_when_the_nats_server_they_use_most_is_killed(
    cluster: ClusterNodes, clients: Clients, nats_cluster: NatsCluster, topic: str
) -> None:
    subscriber = clients.for_broker(cluster.node(2)).connected()
    subscriber.subscribe(topic, qos=1)
    publisher = clients.for_broker(cluster.node(1)).connected()
    publisher.publish(topic, b"before", qos=1)
    assert subscriber.expect_message().payload == b"before"

    busiest = max(
        range(len(nats_cluster.servers)),
        key=lambda index: nats_cluster.servers[index].monitor("/varz")["connections"],
    )
    nats_cluster.kill(busiest)
    try:
        nats_cluster.wait_until_formed()
        sent = [f"after {number}".encode() for number in range(20)]
        acknowledgements = [publisher.publish(topic, payload, qos=1, wait=False) for payload in sent]
        for acknowledgement in acknowledgements:
            acknowledgement.wait_for_publish(RECONNECTION)
            assert acknowledgement.is_published()
        received = [
            message.payload for message in subscriber.expect_messages(len(sent), timeout=RECONNECTION)
        ]
        assert received == sent
    finally:
        nats_cluster.restart(busiest)


@pytest.mark.nodes(1, 2)
def test_retained_messages_survive_a_killed_node_and_the_nats_server_that_led_their_stream(
    cluster: ClusterNodes, clients: Clients, nats_cluster: NatsCluster, topic: str
) -> None:
    publisher = clients.for_broker(cluster.node(1)).connected()
    publisher.publish(f"{topic}/qos1", b"retained at qos 1", qos=1, retain=True)
    publisher.publish(f"{topic}/qos0", b"retained at qos 0", qos=0, retain=True)
    expected = {f"{topic}/qos1": b"retained at qos 1", f"{topic}/qos0": b"retained at qos 0"}
    # Node 2 has them (routed to its subscriber): they have left node 1.
    witness = clients.for_broker(cluster.node(2)).connected()
    witness.subscribe(f"{topic}/#", qos=1)
    assert {message.topic: message.payload for message in witness.expect_messages(2)} == expected

    cluster.kill(1)
    leader = nats_cluster.stream_leader(f"{cluster.subject_prefix.upper()}_RETAINED")
    nats_cluster.kill(leader)
    try:
        nats_cluster.wait_until_formed()
        # The node that is left still has them, and a node started now reads them from what is
        # left of the stream: two NATS servers of three.
        cluster.add(3)
        for number in (2, 3):
            subscriber = clients.for_broker(cluster.node(number)).connected()
            subscriber.subscribe(f"{topic}/#", qos=1)
            got = {
                message.topic: (message.payload, message.retain) for message in subscriber.expect_messages(2)
            }
            assert got == {name: (payload, True) for name, payload in expected.items()}, number
    finally:
        nats_cluster.restart(leader)
