"""The web console (docs/console.md): the certificate system in a browser, at ``/console`` of the HTTP
listener, behind a login with the instance's admin token.

Pages are rendered on the server from Jinja2 templates, with a small stylesheet and script of
our own (``static/``); there is no build step. Every page and action calls the same service
functions as the REST API: the registry service and the broker control of the
:class:`~certmq.web.context.HttpContext`. No rule of the registry or the broker is decided here.
"""

from __future__ import annotations

import inspect
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from certmq.console import (
    ca_certificates,
    connections,
    decisions,
    device_certificates,
    login,
    overview,
    server_certificate,
)
from certmq.console.rendering import console_of, make_console, redirect, render
from certmq.console.sessions import (
    CsrfRejected,
    LoginRequired,
    RevokedSessions,
    SessionSigner,
    derive_session_key,
)
from certmq.console.settings import ConsoleSettings
from certmq.web.validation import describe_validation_errors

__all__ = ["ConsoleSettings", "derive_session_key", "install_console"]

PREFIX = "/console"


async def _revocations_read(request: Request) -> None:
    """Before any console page: the sessions revoked since the last request (by a logout here,
    before a restart, or on another node) are known."""
    await console_of(request).signer.revoked.load()


async def _login_required(request: Request, error: Exception) -> Response:
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = PREFIX
    return redirect(request, f"{PREFIX}/login?next={quote(target, safe='/')}")


async def _csrf_rejected(request: Request, error: Exception) -> Response:
    session = console_of(request).signer.session_of(request)
    return render(request, "refused.html", session=session, status_code=403, message=str(error))


def _answer_invalid_addresses_with_a_page(app: FastAPI) -> None:
    """A console address with a malformed parameter (a page number that is not one, an unknown
    mode) gets a page that says so; every other path keeps the application's JSON answer."""
    answer_others = app.exception_handlers.get(RequestValidationError)

    async def invalid(request: Request, error: Exception) -> Response:
        if request.url.path == PREFIX or request.url.path.startswith(f"{PREFIX}/"):
            assert isinstance(error, RequestValidationError)
            session = console_of(request).signer.session_of(request)
            if session is None:
                return await _login_required(request, error)
            return render(
                request,
                "not_found.html",
                session=session,
                status_code=400,
                title="Not a valid address",
                message=describe_validation_errors(list(error.errors())),
            )
        if answer_others is None:
            raise error
        answer = answer_others(request, error)
        return await answer if inspect.isawaitable(answer) else answer

    app.add_exception_handler(RequestValidationError, invalid)


def install_console(app: FastAPI, admin_token: str, settings: ConsoleSettings | None = None) -> None:
    """Serve the console at ``/console`` of ``app``, whose ``state.context`` is the HttpContext."""
    settings = settings or ConsoleSettings()
    revoked = RevokedSessions(app.state.context.registry)
    app.state.console = make_console(SessionSigner(settings.session_key, admin_token, revoked), settings)
    for module in (
        login,
        overview,
        ca_certificates,
        device_certificates,
        server_certificate,
        connections,
        decisions,
    ):
        app.include_router(
            module.router, prefix=PREFIX, include_in_schema=False, dependencies=[Depends(_revocations_read)]
        )
    app.mount(f"{PREFIX}/static", StaticFiles(packages=[("certmq.console", "static")]), name="console-static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    _answer_invalid_addresses_with_a_page(app)
