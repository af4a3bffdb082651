"""``/console/server-certificate``: the broker's TLS certificate, shown and replaced at run time,
and the auth mode, switched after a confirmation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from certmq.auth.mode import AuthMode, AuthModeName
from certmq.console import live
from certmq.console.rendering import (
    FormError,
    checked_form,
    current_session,
    failure,
    pem_field,
    redirect,
    render,
    text_field,
)
from certmq.console.sessions import ConsoleSession
from certmq.control import ServerCertificateRejected
from certmq.pki import PkiError
from certmq.web.context import Context

router = APIRouter(prefix="/server-certificate")

Session = Annotated[ConsoleSession, Depends(current_session)]
MODES: dict[str, str] = {
    AuthMode.ONE_WAY: "One-way authentication",
    AuthMode.MUTUAL: "Mutual authentication",
}


@router.get("")
async def server_certificate(request: Request, session: Session, context: Context) -> Response:
    return render(
        request,
        "server_certificate.html",
        session=session,
        section="server",
        server=context.control.server_certificate(),
        mode=context.control.auth_mode(),
        modes=MODES,
        error="",
        listeners={listener.name: listener for listener in context.control.listeners()},
        admission=context.control.describe_listeners(context.control.auth_mode()),
    )


@router.post("")
async def replace(request: Request, session: Session, context: Context) -> Response:
    form = await checked_form(request, session)
    try:
        chain_pem = await pem_field(form, "chain_file", "chain_pem", "certificate chain")
        key_pem = await pem_field(form, "key_file", "key_pem", "private key")
        info = await context.control.replace_server_certificate(chain_pem, key_pem)
    except (FormError, ServerCertificateRejected, PkiError, ValueError) as error:
        return render(
            request,
            "server_certificate.html",
            session=session,
            section="server",
            status_code=400,
            server=context.control.server_certificate(),
            mode=context.control.auth_mode(),
            modes=MODES,
            error=failure(error),
            listeners={listener.name: listener for listener in context.control.listeners()},
            admission=context.control.describe_listeners(context.control.auth_mode()),
        )
    return redirect(
        request,
        "/console/server-certificate",
        success=f"Server certificate replaced: new handshakes present {info.subject} (Sn {info.serial}); "
        "live connections were kept.",
    )


@router.get("/auth-mode")
async def confirm_mode(request: Request, session: Session, context: Context, mode: AuthModeName) -> Response:
    live_now = await context.control.connections()
    return render(
        request,
        "auth_mode.html",
        session=session,
        section="server",
        mode=mode,
        current=context.control.auth_mode(),
        modes=MODES,
        kinds=live.identity_kinds(live_now.items),
        refused=await context.control.nonconforming(mode),
        admission=context.control.describe_listeners(mode),
    )


@router.post("/auth-mode")
async def set_mode(request: Request, session: Session, context: Context) -> Response:
    form = await checked_form(request, session)
    mode = text_field(form, "mode")
    if mode not in MODES:
        return redirect(request, "/console/server-certificate", error=f"unknown auth mode {mode!r}")
    disconnect = text_field(form, "disconnect_nonconforming") == "yes"
    try:
        disconnected = await context.control.set_auth_mode(mode, disconnect_nonconforming=disconnect)
    except ValueError as error:
        return redirect(request, "/console/server-certificate", error=failure(error))
    kept = "" if disconnect else "; live sessions were kept"
    return redirect(
        request,
        "/console/server-certificate",
        success=f"{MODES[mode]} is on: new handshakes follow it{kept}"
        + (f"; {disconnected} non-conforming session(s) disconnected" if disconnect else "")
        + f". Listeners: {context.control.describe_listeners(mode)}.",
    )
