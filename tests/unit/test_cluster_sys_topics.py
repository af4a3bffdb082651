"""``$SYS/cluster/...``: what each node publishes of the cluster, summed and node by node
(certmq.cluster.sys_topics), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from certmq.cluster.sys_topics import cleared, cluster_values
from certmq.control import ClusterStatus, NodeStatus

STARTED = datetime(2026, 12, 1, tzinfo=UTC)


def node(name: str, **stats: int) -> NodeStatus:
    return NodeStatus(name, "", STARTED, stats)


def test_the_cluster_counts_are_the_sums_of_the_nodes_that_answered_and_each_node_has_its_own() -> None:
    status = ClusterStatus(
        [
            node("node-1", clients_connected=2, sessions=5, messages_received=10, subscriptions=3),
            node("node-2", clients_connected=1, sessions=1, messages_received=4, bytes_sent=100),
        ],
        ["node-3"],
    )
    values = cluster_values(status)
    assert values["$SYS/cluster/nodes"] == "2"
    assert values["$SYS/cluster/nodes/missing"] == "1"
    assert values["$SYS/cluster/clients/connected"] == "3"
    assert values["$SYS/cluster/clients/disconnected"] == "3"
    assert values["$SYS/cluster/clients/total"] == "6"
    assert values["$SYS/cluster/messages/received"] == "14"
    assert values["$SYS/cluster/subscriptions/count"] == "3"
    assert values["$SYS/cluster/bytes/sent"] == "100"
    assert values["$SYS/cluster/node/node-1/clients/connected"] == "2"
    assert values["$SYS/cluster/node/node-2/messages/received"] == "4"
    assert not any("node-3" in topic for topic in values)


def test_the_topics_of_a_node_that_left_are_cleared_once() -> None:
    both = cluster_values(ClusterStatus([node("node-1", sessions=1), node("node-2", sessions=2)]))
    alone = cluster_values(ClusterStatus([node("node-1", sessions=1)]))
    gone = cleared(both, alone)
    assert gone and set(gone.values()) == {""}
    assert all(topic.startswith("$SYS/cluster/node/node-2/") for topic in gone)
    assert cleared({**both, **gone}, alone) == {}
