"""``/api/v1/instance``: the instance at a glance (the console's overview), and ``/api/v1/healthz``."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from certmq.web.context import Context
from certmq.web.instance_overview import instance_overview

router = APIRouter(tags=["instance"])
health_router = APIRouter(tags=["instance"])


class Listener(BaseModel):
    name: str = Field(description="tcp, tls, ws, wss or http")
    host: str
    port: int


class Counts(BaseModel):
    ca_certificates: int
    ca_certificates_active: int
    ca_certificates_inactive: int
    ca_certificates_expiring: int = Field(description="valid now, expired within expiring_within_days")
    device_certificates: int
    device_certificates_active: int
    device_certificates_inactive: int
    device_certificates_expiring: int = Field(description="valid now, expired within expiring_within_days")
    expiring_within_days: int
    connections: int = Field(description="live MQTT connections, on every node that answered")


class Node(BaseModel):
    name: str = Field(description="the node's name (cluster.node_name)")
    http: str = Field(description='its HTTP listener, host:port ("" when it has none)')
    started_at: datetime
    connections: int = Field(description="live MQTT connections on this node")
    sessions: int = Field(description="sessions it holds, online and offline")
    subscriptions: int
    messages_received: int = Field(description="PUBLISH packets received from its clients")
    messages_sent: int = Field(description="PUBLISH packets sent to its clients")


class Instance(BaseModel):
    id: str = Field(description="MqttInstanceId")
    mode: str = Field(description="auth mode: one-way or mutual")
    listeners: list[Listener] = Field(description="this node's listeners")
    counts: Counts
    nodes: list[Node] = Field(
        description="the nodes of the cluster that answered, this one first (one alone)"
    )
    missing_nodes: list[str] = Field(
        description="nodes of the cluster that did not answer in time: not counted in counts.connections"
    )


class Health(BaseModel):
    status: str


@router.get("/instance", response_model=Instance, summary="The instance: id, auth mode, listeners, counts")
async def get_instance(context: Context) -> Instance:
    overview = await instance_overview(context)
    counts = overview.counts
    return Instance(
        id=overview.id,
        mode=overview.mode,
        listeners=[Listener(name=item.name, host=item.host, port=item.port) for item in overview.listeners],
        counts=Counts(
            ca_certificates=counts.cas,
            ca_certificates_active=counts.cas_active,
            ca_certificates_inactive=counts.cas_inactive,
            ca_certificates_expiring=counts.cas_expiring,
            device_certificates=counts.devices,
            device_certificates_active=counts.devices_active,
            device_certificates_inactive=counts.devices_inactive,
            device_certificates_expiring=counts.devices_expiring,
            expiring_within_days=counts.expiring_within.days,
            connections=overview.connections,
        ),
        nodes=[
            Node(
                name=node.name,
                http=node.http,
                started_at=node.started_at,
                connections=node.stats.get("clients_connected", 0),
                sessions=node.stats.get("sessions", 0),
                subscriptions=node.stats.get("subscriptions", 0),
                messages_received=node.stats.get("messages_received", 0),
                messages_sent=node.stats.get("messages_sent", 0),
            )
            for node in overview.cluster.nodes
        ],
        missing_nodes=overview.cluster.missing_nodes,
    )


@health_router.get("/healthz", response_model=Health, summary="Liveness check (no token needed)")
async def healthz() -> Health:
    return Health(status="ok")
