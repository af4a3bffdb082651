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
