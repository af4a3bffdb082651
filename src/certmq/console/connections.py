"""``/console/connections``: the live MQTT connections with their identity and listener, and
kicking one off after a confirmation."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from certmq.console.rendering import checked_form, current_session, query, redirect, render
from certmq.console.sessions import ConsoleSession
from certmq.control import ConnectionQuery
from certmq.web.context import Context
from certmq.web.paging import PageNo

router = APIRouter(prefix="/connections")

Session = Annotated[ConsoleSession, Depends(current_session)]
PAGE_SIZE = 100
PROTOCOLS = {3: "MQTT 3.1", 4: "MQTT 3.1.1", 5: "MQTT 5.0"}


@router.get("")
async def connection_list(
    request: Request,
    session: Session,
    context: Context,
    listener: str = "",
    client_id: str = "",
    page_no: PageNo = 1,
) -> Response:
    query = ConnectionQuery(listener=listener, client_id_contains=client_id)
    live = await context.control.connections(replace(query, first=page_no * PAGE_SIZE))
    pages = max(1, -(-live.total // PAGE_SIZE))
    if page_no > pages:  # fewer connections than when the link was made: the last page
        live = await context.control.connections(replace(query, first=pages * PAGE_SIZE))
    start = (min(page_no, pages) - 1) * PAGE_SIZE
    return render(
        request,
        "connections.html",
        session=session,
        section="connections",
        connections=live.items[start:],
        total=live.total,
        missing_nodes=live.missing_nodes,
        page_no=min(page_no, pages),
        pages=pages,
        listeners=[item.name for item in context.control.listeners() if item.name != "http"],
        filters={"listener": listener, "client_id": client_id},
        protocols=PROTOCOLS,
    )


@router.get("/kick")
async def confirm_kick(request: Request, session: Session, context: Context, client_id: str) -> Response:
    found = (await context.control.connections(ConnectionQuery(client_id=client_id))).items
    if not found:
        return redirect(request, "/console/connections", error=f"{client_id!r} is not connected any more.")
    return render(
        request,
        "confirm.html",
        session=session,
        section="connections",
        title=f"Disconnect {client_id}?",
        subject=f"client {client_id} on the {found[0].listener} listener of node {found[0].node}, "
        f"from {found[0].peer}",
        consequence="The broker closes its connection (MQTT 5: DISCONNECT 0x98 Administrative action). "
        "Its certificate or credentials stay valid: the client may connect again. "
        "To keep a device out, inactivate its certificate.",
        disconnected=len(found),
        action="/console/connections/kick",
        button="Disconnect",
        cancel="/console/connections",
        hidden={"client_id": client_id},
    )


@router.post("/kick")
async def kick(request: Request, session: Session, context: Context) -> Response:
    form = await checked_form(request, session)
    client_id = form.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        return redirect(request, "/console/connections", error="no client id was given")
    outcome = await context.control.kick(client_id)
    if outcome.node is None:
        return redirect(
            request,
            "/console/connections",
            error=f"{client_id!r} is not connected any more{outcome.unanswered()}.",
        )
    return redirect(
        request, query("/console/connections"), success=f"Disconnected {client_id} from node {outcome.node}."
    )
