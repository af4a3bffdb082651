"""``$SYS/cluster/...``: the cluster's statistics, published on every node beside its own
``$SYS/broker/...`` (certmq.broker.sys_topics), retained, every ``mqtt.sys_interval`` seconds
(docs/cluster.md, "Managing a cluster"):

- ``$SYS/cluster/nodes``: how many nodes answered (this one included), and
  ``$SYS/cluster/nodes/missing``: how many of the members did not;
- ``$SYS/cluster/clients/connected`` and the other counts below: their sums over the nodes that
  answered;
- ``$SYS/cluster/node/<node>/clients/connected`` …: each node's own; those of a node that left
  the cluster are cleared.

Each node publishes them to its own clients only, as it does its ``$SYS/broker`` topics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from certmq.broker.core import BrokerCore
from certmq.broker.sys_topics import publish_changed
from certmq.control import BrokerControl, ClusterStatus

log = logging.getLogger("certmq.cluster")

PREFIX = "$SYS/cluster"


def node_counts(stats: dict[str, int]) -> dict[str, int]:
    """A node's counts under the names of ``$SYS/broker`` (mosquitto's), from its counters
    (:meth:`certmq.control.BrokerControl.stats`)."""
    sessions, connected = stats.get("sessions", 0), stats.get("clients_connected", 0)
    return {
        "clients/connected": connected,
        "clients/disconnected": sessions - connected,
        "clients/total": sessions,
        "messages/received": stats.get("messages_received", 0),
        "messages/sent": stats.get("messages_sent", 0),
        "messages/dropped": stats.get("messages_dropped", 0),
        "bytes/received": stats.get("bytes_received", 0),
        "bytes/sent": stats.get("bytes_sent", 0),
        "subscriptions/count": stats.get("subscriptions", 0),
    }


def cluster_values(status: ClusterStatus) -> dict[str, str]:
    """The ``$SYS/cluster`` topics and their payloads for ``status``."""
    values = {
        f"{PREFIX}/nodes": str(len(status.nodes)),
        f"{PREFIX}/nodes/missing": str(len(status.missing_nodes)),
    }
    sums: dict[str, int] = {}
    for node in status.nodes:
        for name, count in node_counts(node.stats).items():
            sums[name] = sums.get(name, 0) + count
            values[f"{PREFIX}/node/{node.name}/{name}"] = str(count)
    values.update((f"{PREFIX}/{name}", str(count)) for name, count in sums.items())
    return values


def cleared(last: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    """Empty payloads for the topics of nodes published ``last`` that ``values`` no longer
    has: a retained message cleared for each."""
    node_prefix = f"{PREFIX}/node/"
    return {
        topic: ""
        for topic, value in last.items()
        if value and topic.startswith(node_prefix) and topic not in values
    }


async def publish_cluster_sys_topics(core: BrokerCore[Any], control: BrokerControl, interval: float) -> None:
    last: dict[str, str] = {}
    while True:
        try:
            values = cluster_values(await control.nodes())
        except Exception:
            log.exception("could not gather the cluster's $SYS statistics")
        else:
            publish_changed(core, {**cleared(last, values), **values}, last)
        await asyncio.sleep(interval)
