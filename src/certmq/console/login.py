"""``/console/login`` and ``/console/logout``: a session opened with the instance's admin token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from certmq.console.rendering import console_of, redirect, render, text_field
from certmq.console.sessions import CsrfRejected, same_origin
from certmq.web.context import get_context
from certmq.web.secret_failures import SecretRoute, TooManyFailures, source_of

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a console page, never another site."""
    if (
        target
        and (target == "/console" or target.startswith(("/console/", "/console?")))
        and "\\" not in target
    ):
        return target
    return "/console"


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    console = console_of(request)
    if console.signer.session_of(request) is not None:
        return redirect(request, safe_next(next))
    return render(
        request,
        "login.html",
        session=None,
        next=safe_next(next),
        error="",
        credentials=console.credentials_file,
    )


@router.post("/login")
async def login(request: Request) -> Response:
    console = console_of(request)
    # No session yet to hold a CSRF token: a login from another site is refused by its origin.
    origin = request.headers.get("origin")
    if origin is not None and origin != same_origin(request):
        raise CsrfRejected(f"a login was sent from another site ({origin})")
    form = await request.form(max_files=0, max_fields=5)
    target = safe_next(text_field(form, "next"))
    context, source = get_context(request), source_of(request)
    try:
        context.secret_failures.check(source, SecretRoute.CONSOLE_LOGIN)
    except TooManyFailures as error:
        wait = f"Too many wrong tokens from {source}: try again in {error.retry_after} s."
        page = login_refused(request, target, 429, wait)
        page.headers["Retry-After"] = str(error.retry_after)
        return page
    if not console.signer.check_admin_token(text_field(form, "token"), context.admin_token):
        context.secret_failures.failed(source, SecretRoute.CONSOLE_LOGIN)
        return login_refused(request, target, 401, "That is not this instance's admin token.")
    context.secret_failures.succeeded(source)
    response = redirect(request, target)
    console.signer.login(response, request)
    return response


def login_refused(request: Request, target: str, status: int, error: str) -> Response:
    return render(
        request,
        "login.html",
        session=None,
        status_code=status,
        next=target,
        error=error,
        credentials=console_of(request).credentials_file,
    )


@router.post("/logout")
async def logout(request: Request) -> Response:
    console = console_of(request)
    session = console.signer.session_of(request)
    if session is not None:
        form = await request.form(max_files=0, max_fields=5)
        console.signer.check_csrf(request, session, form.get("csrf_token"))
    response = redirect(request, "/console/login")
    await console.signer.logout(response, session)
    return response
