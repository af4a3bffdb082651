"""``/console/decisions``: the audit log of authentication decisions, searched by
device, CA, client, result, reason and time, newest first. Each row names the step of the
decision procedure that decided."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from certmq.console.rendering import current_session, failure, render
from certmq.console.sessions import ConsoleSession
from certmq.registry.errors import RegistryError
from certmq.registry.log_query import DecisionQuery
from certmq.web.context import Context
from certmq.web.paging import Offset

router = APIRouter(prefix="/decisions")

Session = Annotated[ConsoleSession, Depends(current_session)]
PAGE_SIZE = 50
# For people: what each step of the decision procedure looks at.
STEPS = {
    0: "TLS handshake or CONNECT credentials",
    1: "1 · read the device certificate",
    2: "2 · is the device registered?",
    3: "3 · find the issuing CA",
    4: "4 · is the CA active?",
    5: "5 · validate against the CA",
    6: "6 · allow (and register)",
}
# Offered in the reason field; any other text may be typed.
KNOWN_REASONS = [
    "new-device",
    "registered-device",
    "device-inactive",
    "ca-inactive",
    "ca-not-registered",
    "serial-collision",
    "certificate-expired",
    "certificate-not-yet-valid",
    "ca-expired",
    "ca-not-yet-valid",
    "bad-signature",
    "issuer-not-a-ca",
    "wrong-key-usage",
    "device-revoked",
    "certificate-invalid",
    "no-client-certificate",
    "unreadable-certificate",
    "certificate-too-large",
    "certificate-is-a-ca",
    "unsupported-critical-extension",
    "weak-key",
    "weak-signature",
    "signature",
    "anonymous",
    "no-credentials",
    "bad-credentials",
    "client-id-not-bound",
    "listener-closed",
]


def parse_time(text: str) -> datetime | None:
    """A time typed in the form (``datetime-local``, UTC); ValueError when it is not one."""
    text = text.strip()
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@router.get("")
async def decision_list(
    request: Request,
    session: Session,
    context: Context,
    device_sn: str = "",
    ca_sn: str = "",
    client_id: str = "",
    result: Literal["", "allow", "deny"] = "",
    reason: str = "",
    since: str = "",
    until: str = "",
    offset: Offset = 0,
) -> Response:
    filters = {
        "device_sn": device_sn.strip(),
        "ca_sn": ca_sn.strip(),
        "client_id": client_id.strip(),
        "result": result,
        "reason": reason.strip(),
        "since": since.strip(),
        "until": until.strip(),
    }
    error = ""
    records = []
    try:
        since_time, until_time = parse_time(since), parse_time(until)
    except ValueError:
        error = "since and until must be times such as 2025-01-31T13:45 (UTC)"
    else:
        # Decisions are written in batches: write the queued ones, so the attempt just made shows.
        await context.registry.flush_decisions()
        try:
            query = DecisionQuery(
                device_sn=filters["device_sn"] or None,
                ca_sn=filters["ca_sn"] or None,
                client_id=filters["client_id"] or None,
                result=result or None,
                reason=filters["reason"] or None,
                since=since_time,
                until=until_time,
                limit=PAGE_SIZE + 1,
                offset=offset,
            )
            records = await context.registry.search_decisions(query)
        except RegistryError as failed:
            error = failure(failed)
    return render(
        request,
        "decisions.html",
        session=session,
        section="decisions",
        decisions=records[:PAGE_SIZE],
        older=len(records) > PAGE_SIZE,
        offset=offset,
        page_size=PAGE_SIZE,
        filters=filters,
        steps=STEPS,
        reasons=KNOWN_REASONS,
        error=error,
    )
