"""`$SYS/broker/...` statistics, published retained every ``mqtt.sys_interval`` seconds.

Names follow mosquitto's, so existing dashboards work unchanged. They are this node's; a node of
a cluster also publishes the cluster's, under ``$SYS/cluster/`` (certmq.cluster.sys_topics).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from certmq import __version__
from certmq.broker.core import BrokerCore
from certmq.broker.messages import Message


def sys_values(core: BrokerCore[Any], started: float) -> dict[str, str]:
    stats = core.stats
    connected = stats.clients_connected
    return {
        "$SYS/broker/version": f"certmq {__version__}",
        "$SYS/broker/uptime": f"{int(time.monotonic() - started)} seconds",
        "$SYS/broker/clients/connected": str(connected),
        "$SYS/broker/clients/disconnected": str(len(core.sessions) - connected),
        "$SYS/broker/clients/total": str(len(core.sessions)),
        "$SYS/broker/messages/received": str(stats.messages_received),
        "$SYS/broker/messages/sent": str(stats.messages_sent),
        "$SYS/broker/messages/dropped": str(stats.messages_dropped),
        "$SYS/broker/bytes/received": str(stats.bytes_received),
        "$SYS/broker/bytes/sent": str(stats.bytes_sent),
        "$SYS/broker/subscriptions/count": str(len(core.subscriptions)),
        "$SYS/broker/retained messages/count": str(len(core.retained)),
    }


def publish_changed(core: BrokerCore[Any], values: dict[str, str], last: dict[str, str]) -> None:
    """Publish each of ``values`` (topic: payload) retained, unless it is what ``last`` says
    was published on its topic last; ``last`` is brought up to date. An empty payload clears
    its topic's retained message."""
    for topic, value in values.items():
        if last.get(topic) != value:
            last[topic] = value
            core.publish(Message(topic, value.encode(), qos=0, retain=True))


async def publish_sys_topics(core: BrokerCore[Any], interval: float) -> None:
    started = time.monotonic()
    last: dict[str, str] = {}
    while True:
        publish_changed(core, sys_values(core, started), last)
        await asyncio.sleep(interval)
