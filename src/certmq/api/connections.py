"""``/api/v1/connections``: live MQTT connections on every node of the cluster, and kicking
one off on whichever node it is connected to."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from certmq.api.errors import ApiError, error_responses
from certmq.control import ConnectionInfo, ConnectionQuery
from certmq.web.context import Context
from certmq.web.paging import ConnectionsPageSize, PageNo

router = APIRouter(prefix="/connections", tags=["connections"])

CONNECTION_NOT_FOUND = "ConnectionNotFound"


class Connection(BaseModel):
    client_id: str
    listener: str = Field(description="tcp, tls, ws or wss")
    peer: str = Field(description="the client's address, host:port")
    protocol_version: int = Field(description="4: MQTT 3.1.1, 5: MQTT 5.0")
    connected_at: datetime
    identity: dict[str, str] = Field(
        description='what authentication established: "cert.cn", "cert.sn", "cert.ca_sn", "cert.not_after",'
        ' "access_key_id"'
    )
    node: str = Field(description="the node of the cluster the client is connected to (cluster.node_name)")

    @classmethod
    def of(cls, info: ConnectionInfo) -> Connection:
        return cls(
            client_id=info.client_id,
            listener=info.listener,
            peer=info.peer,
            protocol_version=info.protocol_version,
            connected_at=info.connected_at,
            identity=info.identity.fields(),
            node=info.node,
        )


class ConnectionPage(BaseModel):
    items: list[Connection]
    page_no: int
    page_size: int
    total: int = Field(description="number of live connections that match the filters")
    missing_nodes: list[str] = Field(
        description="nodes of the cluster that did not answer in time: their connections are not listed"
    )


class Kicked(BaseModel):
    client_id: str
    kicked: bool
    node: str = Field(description="the node the client was connected to")


@router.get("", response_model=ConnectionPage, summary="List live connections, by client id")
async def list_connections(
    context: Context,
    listener: Annotated[
        str | None, Query(description="only those on this listener: tcp, tls, ws, wss")
    ] = None,
    page_no: PageNo = 1,
    page_size: ConnectionsPageSize = 100,
) -> ConnectionPage:
    start = (page_no - 1) * page_size
    live = await context.control.connections(
        ConnectionQuery(listener=listener or "", first=start + page_size)
    )
    return ConnectionPage(
        items=[Connection.of(info) for info in live.items[start:]],
        page_no=page_no,
        page_size=page_size,
        total=live.total,
        missing_nodes=live.missing_nodes,
    )


@router.post(
    "/{client_id:path}/kick",
    response_model=Kicked,
    summary="Disconnect a live client (MQTT 5: DISCONNECT 0x98 Administrative action)",
    responses=error_responses(404),
)
async def kick_connection(client_id: str, context: Context) -> Kicked:
    outcome = await context.control.kick(client_id)
    if outcome.node is None:
        raise ApiError(
            404,
            CONNECTION_NOT_FOUND,
            f"no live connection has the client id {client_id!r}{outcome.unanswered()}",
        )
    return Kicked(client_id=client_id, kicked=True, node=outcome.node)
