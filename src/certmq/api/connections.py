"""``/api/v1/connections``: live MQTT connections, and kicking one off."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from certmq.api.errors import ApiError, error_responses
from certmq.control import ConnectionInfo
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

    @classmethod
    def of(cls, info: ConnectionInfo) -> Connection:
        return cls(
            client_id=info.client_id,
            listener=info.listener,
            peer=info.peer,
            protocol_version=info.protocol_version,
            connected_at=info.connected_at,
            identity=info.identity.fields(),
        )


class ConnectionPage(BaseModel):
    items: list[Connection]
    page_no: int
    page_size: int
    total: int = Field(description="number of live connections that match the filters")


class Kicked(BaseModel):
    client_id: str
    kicked: bool


@router.get("", response_model=ConnectionPage, summary="List live connections, by client id")
async def list_connections(
    context: Context,
    listener: Annotated[
        str | None, Query(description="only those on this listener: tcp, tls, ws, wss")
    ] = None,
    page_no: PageNo = 1,
    page_size: ConnectionsPageSize = 100,
) -> ConnectionPage:
    connections = context.control.connections()
    if listener is not None:
        connections = [connection for connection in connections if connection.listener == listener]
    connections.sort(key=lambda connection: connection.client_id)
    start = (page_no - 1) * page_size
    return ConnectionPage(
        items=[Connection.of(info) for info in connections[start : start + page_size]],
        page_no=page_no,
        page_size=page_size,
        total=len(connections),
    )


@router.post(
    "/{client_id:path}/kick",
    response_model=Kicked,
    summary="Disconnect a live client (MQTT 5: DISCONNECT 0x98 Administrative action)",
    responses=error_responses(404),
)
async def kick_connection(client_id: str, context: Context) -> Kicked:
    if not context.control.kick(client_id):
        raise ApiError(404, CONNECTION_NOT_FOUND, f"no live connection has the client id {client_id!r}")
    return Kicked(client_id=client_id, kicked=True)
