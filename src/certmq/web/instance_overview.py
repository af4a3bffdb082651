"""The instance at a glance: what the console's overview and ``GET /api/v1/instance`` show."""

from __future__ import annotations

from dataclasses import dataclass

from certmq.control import ListenerInfo
from certmq.registry.records import RegistryCounts
from certmq.web.context import HttpContext


@dataclass(frozen=True, slots=True)
class InstanceOverview:
    id: str
    mode: str
    listeners: list[ListenerInfo]
    counts: RegistryCounts
    connections: int


async def instance_overview(context: HttpContext) -> InstanceOverview:
    """What the overview of the console and ``GET /instance`` show."""
    control = context.control
    return InstanceOverview(
        id=context.instance_id,
        mode=control.auth_mode(),
        listeners=control.listeners(),
        counts=await context.registry.counts(),
        connections=len(control.connections()),
    )
