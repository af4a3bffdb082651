"""How console pages are made: Jinja2 templates, flash messages, redirects and form parsing.

Pages are rendered on the server; every change is a POST answered with a redirect to a page
(POST-redirect-GET) that shows what happened as a flash message, kept for one page view in a
signed cookie.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from certmq import __version__
from certmq.console.sessions import (
    COOKIE_PATH,
    CSRF_FIELD,
    FLASH_COOKIE,
    ConsoleSession,
    LoginRequired,
    SessionSigner,
    is_https,
)
from certmq.invisible_characters import (
    INVISIBLE,
    character_name,
    escape_invisible,
    escape_sequence,
    holds_invisible,
)
from certmq.web.context import HttpContext, get_context
from certmq.web.security_headers import SECURITY_HEADERS

if TYPE_CHECKING:
    from certmq.console.settings import ConsoleSettings

# Uploaded PEM files and pasted text: certificates and keys are a few kilobytes; a chain with
# its CAs rarely more than 20.
MAX_PEM_SIZE = 256 * 1024
NAVIGATION = [
    ("overview", "Overview", "/console"),
    ("ca", "CA certificates", "/console/ca-certificates"),
    ("devices", "Device certificates", "/console/device-certificates"),
    ("server", "Server certificate", "/console/server-certificate"),
    ("connections", "Connections", "/console/connections"),
    ("decisions", "Decisions", "/console/decisions"),
]


class FormError(Exception):
    """A form field is missing or unreadable; the message says which and what to do."""


@dataclass
class Console:
    """What the console keeps for the life of the application."""

    signer: SessionSigner
    templates: jinja2.Environment
    static_version: str
    # Named where an operator is told what to type: where the admin token is kept, and the CA
    # that clients verify the broker with.
    credentials_file: str = "DATA_DIR/credentials.json"
    server_ca_file: str = "DATA_DIR/server-ca/ca.pem"
    flash_purpose: str = field(default="flash")


def _static_version() -> str:
    """Changes when the stylesheet or the script changes, so browsers fetch the new one."""
    digest = hashlib.sha256(__version__.encode())
    static = resources.files("certmq.console") / "static"
    for name in ("console.css", "console.js"):
        digest.update((static / name).read_bytes())
    return digest.hexdigest()[:12]


def format_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """ "in 3 days", "5 min ago": how far a time is from now, roughly."""
    if moment is None:
        return ""
    now = now or datetime.now(UTC)
    seconds = (moment - now).total_seconds()
    future = seconds >= 0
    seconds = abs(seconds)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = int(seconds // size)
            text = f"{amount} {unit}{'s' if unit == 'day' and amount != 1 else ''}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def days_left(moment: datetime) -> int:
    return int((moment - datetime.now(UTC)).total_seconds() // 86400)


def query(base: str, **parameters: object) -> str:
    """``base`` with the parameters that have a value as its query string."""
    present = {key: str(value) for key, value in parameters.items() if value not in (None, "")}
    return f"{base}?{urlencode(present)}" if present else base


# A page's markup: its tags (whose attribute values are escaped, so hold no ">") and the text
# between them. Titles and options can hold text only; a text area holds what was typed.
_TAG = re.compile(r"(<[^>]*>)")
_TEXT_ONLY = re.compile(r"<(/?)(title|option|textarea)\b", re.IGNORECASE)


def _marked(found: re.Match[str]) -> str:
    character = found.group()
    return (
        f'<span class="invisible-char" title="{character_name(character)}">'
        f"{escape_sequence(character)}</span>"
    )


def show_invisible_characters(html: str) -> str:
    """The page with each invisible character in its text (a bidirectional override in a CN, a
    zero-width space in a client id...) shown as its escape ``\\u202e`` in a style of its own;
    in titles and options, which hold text only, as the bare escape. Every page goes through
    here (:func:`render`), so no certificate-derived string can be shown raw. Attribute values
    and text areas are left as they are: they are data that forms send back."""
    if not holds_invisible(html):
        return html
    parts = _TAG.split(html)
    text_only = ""
    for index, part in enumerate(parts):
        if index % 2:
            # They hold no tags: the next tag, whatever it is, ends them.
            element = _TEXT_ONLY.match(part)
            text_only = element.group(2).lower() if element and not element.group(1) else ""
        elif text_only == "textarea" or INVISIBLE.search(part) is None:
            continue
        elif text_only:
            parts[index] = escape_invisible(part)
        else:
            parts[index] = INVISIBLE.sub(_marked, part)
    return "".join(parts)


def make_console(signer: SessionSigner, settings: ConsoleSettings) -> Console:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("certmq.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["time"] = format_time
    templates.filters["relative"] = relative_time
    templates.filters["days_left"] = days_left
    templates.globals["query"] = query
    templates.globals["navigation"] = NAVIGATION
    templates.globals["version"] = __version__
    console = Console(signer=signer, templates=templates, static_version=_static_version())
    if settings.credentials_file:
        console.credentials_file = settings.credentials_file
    if settings.server_ca_file:
        console.server_ca_file = settings.server_ca_file
    return console


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def current_session(request: Request) -> ConsoleSession:
    """The request's session; the browser is sent to the login page when there is none."""
    session = console_of(request).signer.session_of(request)
    if session is None:
        raise LoginRequired()
    return session


def render(
    request: Request,
    template: str,
    *,
    session: ConsoleSession | None,
    section: str = "",
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    console = console_of(request)
    context: HttpContext = get_context(request)
    flashes = _read_flashes(request)
    html = console.templates.get_template(template).render(
        request_path=request.url.path,
        section=section,
        session=session,
        csrf_field=CSRF_FIELD,
        csrf_token=session.csrf_token if session else "",
        instance_id=context.instance_id,
        auth_mode=context.control.auth_mode() if session else "",
        static_version=console.static_version,
        flashes=flashes,
        **values,
    )
    response = HTMLResponse(
        show_invisible_characters(html), status_code=status_code, headers=SECURITY_HEADERS
    )
    if flashes:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


def redirect(request: Request, location: str, *, success: str = "", error: str = "") -> RedirectResponse:
    """303 to ``location`` (a console path), with a message for the page it leads to."""
    response = RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)
    messages = [
        {"kind": kind, "text": text} for kind, text in (("success", success), ("error", error)) if text
    ]
    if messages:
        console = console_of(request)
        response.set_cookie(
            FLASH_COOKIE,
            console.signer.sign(console.flash_purpose, messages),
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=is_https(request),
        )
    return response


def _read_flashes(request: Request) -> list[dict[str, str]]:
    console = console_of(request)
    value = console.signer.unsign(console.flash_purpose, request.cookies.get(FLASH_COOKIE))
    if not isinstance(value, list):
        return []
    return [
        {"kind": str(item.get("kind", "")), "text": str(item.get("text", ""))}
        for item in value
        if isinstance(item, dict)
    ]


async def checked_form(request: Request, session: ConsoleSession) -> FormData:
    """The form of a POST, once its CSRF token is found right."""
    form = await request.form(max_files=4, max_fields=20, max_part_size=MAX_PEM_SIZE)
    console_of(request).signer.check_csrf(request, session, form.get(CSRF_FIELD))
    return form


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def pem_field(form: FormData, file_field: str, text_field_name: str, what: str) -> str:
    """PEM text from an uploaded file, or else from the text area next to it."""
    upload = form.get(file_field)
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read(MAX_PEM_SIZE + 1)
        if len(data) > MAX_PEM_SIZE:
            raise FormError(
                f"the {what} file is larger than {MAX_PEM_SIZE // 1024} KiB: it is not a PEM file"
            )
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise FormError(
                f"the {what} file {upload.filename!r} is not PEM text (a DER file? convert it with "
                "openssl x509 -inform der -in FILE -out FILE.pem)"
            ) from None
    pasted = text_field(form, text_field_name)
    if not pasted:
        raise FormError(f"choose the {what} file, or paste its PEM text")
    return pasted


def failure(error: Exception) -> str:
    """What went wrong, for the operator: the error code when there is one, and the
    message, which says what to do."""
    code = getattr(error, "code", "")
    return f"{code}: {error}" if code else str(error)
