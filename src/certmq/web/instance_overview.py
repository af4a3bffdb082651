"""The instance at a glance: what the console's overview and ``GET /api/v1/instance`` show."""

from __future__ import annotations

from dataclasses import dataclass

from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.control import ClusterStatus, ListenerInfo
from certmq.registry.records import RegistryCounts
from certmq.web.context import HttpContext

# The counters of each node that the overview shows, and sums over the nodes.
NODE_COUNTERS = ("clients_connected", "sessions", "subscriptions", "messages_received", "messages_sent")


@dataclass(frozen=True, slots=True)
class InstanceOverview:
    id: str
    mode: str
    listeners: list[ListenerInfo]
    counts: RegistryCounts
    cluster: ClusterStatus

    @property
    def connections(self) -> int:
        """Live MQTT connections on every node that answered."""
        return self.cluster.total("clients_connected")

    def connections_by_listener(self) -> dict[str, int]:
        """Live MQTT connections by listener, on every node that answered."""
        return {name: self.cluster.total(f"connections_{name}") for name in MQTT_LISTENERS}


async def instance_overview(context: HttpContext) -> InstanceOverview:
    """What the overview of the console and ``GET /instance`` show."""
    control = context.control
    return InstanceOverview(
        id=context.instance_id,
        mode=control.auth_mode(),
        listeners=control.listeners(),
        counts=await context.registry.counts(),
        cluster=await control.nodes(),
    )
