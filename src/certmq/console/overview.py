"""``/console``: the instance at a glance: id, auth mode, listeners, what is registered,
who is connected, what expires soon, and how many decisions the broker is taking."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from certmq.console.rendering import current_session, render
from certmq.console.sessions import ConsoleSession
from certmq.registry.log_query import MAX_LOG_SEARCH, DecisionQuery
from certmq.web.context import Context
from certmq.web.instance_overview import NODE_COUNTERS, instance_overview

router = APIRouter()

Session = Annotated[ConsoleSession, Depends(current_session)]

LISTENER_PURPOSES = {
    "tcp": "MQTT over TCP",
    "tls": "MQTT over TLS (device certificates in mutual mode)",
    "ws": "MQTT over WebSocket, path /mqtt",
    "wss": "MQTT over secure WebSocket, path /mqtt",
    "http": "REST API, RPC API, console, /metrics",
}


@dataclass(frozen=True, slots=True)
class DecisionRate:
    """Decisions recorded in a recent window, by result. ``capped``: there were at least as
    many as one search returns, so the numbers are lower bounds."""

    window: str
    allowed: int
    denied: int
    capped: bool

    @property
    def total(self) -> int:
        return self.allowed + self.denied


async def decision_rates(context: Context, now: datetime) -> list[DecisionRate]:
    """From the decision log: the last minute and the last hour, in one bounded search."""
    await context.registry.flush_decisions()
    hour_ago = now - timedelta(hours=1)
    records = await context.registry.search_decisions(DecisionQuery(since=hour_ago, limit=MAX_LOG_SEARCH))
    capped = len(records) >= MAX_LOG_SEARCH
    rates = []
    for window, since in (("last minute", now - timedelta(minutes=1)), ("last hour", hour_ago)):
        recent = [record for record in records if record.time >= since]
        allowed = sum(1 for record in recent if record.result == "allow")
        # A folded row stands for its count of refusals (counted in the window of its last one).
        denied = sum(record.count for record in recent if record.result != "allow")
        # The oldest rows of a capped search are the hour's; the last minute is complete
        # unless every row returned falls within it.
        window_capped = capped and (window == "last hour" or len(recent) == len(records))
        rates.append(DecisionRate(window, allowed, denied, window_capped))
    return rates


@router.get("")
async def overview(request: Request, session: Session, context: Context) -> Response:
    now = datetime.now(UTC)
    summary = await instance_overview(context)
    by_listener: dict[str, int] = {listener.name: 0 for listener in summary.listeners}
    for name, count in summary.connections_by_listener().items():
        if count or name in by_listener:
            by_listener[name] = count
    return render(
        request,
        "overview.html",
        session=session,
        section="overview",
        overview=summary,
        counts=summary.counts,
        purposes=LISTENER_PURPOSES,
        connections_by_listener=by_listener,
        node_counters=NODE_COUNTERS,
        rates=await decision_rates(context, now),
        server=context.control.server_certificate(),
        http_address=f"{request.url.hostname}:{request.url.port or 80}",
    )
