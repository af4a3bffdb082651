"""Console sessions: a signed cookie after a login with the admin token, and a CSRF token.

The cookie holds ``v1.<payload>.<mac>``: a base64url JSON payload (session id, CSRF token,
expiry, a fingerprint of the admin token) and its HMAC-SHA256 under a key derived from the
instance key (HKDF), so sessions survive a restart of the instance and end when the admin token
changes. It is HttpOnly, SameSite=Strict, limited to ``/console``, and Secure when the console is
reached over https. Logging out revokes the session id for the rest of its lifetime, in the
registry's settings (:class:`RevokedSessions`): a logout lasts across restarts and holds on every
node that shares the registry.

Every change the console makes is a POST whose form carries the session's CSRF token; a POST
without it, with another session's, or from another origin, changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import Response

from certmq.registry.events import RegistryEvent, SettingChanged

if TYPE_CHECKING:
    from certmq.registry.service import RegistryService

SESSION_COOKIE = "certmq_console"
FLASH_COOKIE = "certmq_console_flash"
COOKIE_PATH = "/console"
SESSION_LIFETIME = 12 * 3600  # seconds
CSRF_FIELD = "csrf_token"
_VERSION = "v1"
_KEY_INFO = b"certmq console session cookie"
# The registry setting that keeps the revoked sessions: {"sessions": {id: expiry}, "ended_before": t}.
REVOKED_SESSIONS_SETTING = "console_revoked_sessions"
# Revoked sessions remembered one by one; past this, the oldest are refused together (see below).
MAX_REVOKED_SESSIONS = 1000


class LoginRequired(Exception):
    """The request has no valid session: the browser is sent to the login page."""


class CsrfRejected(Exception):
    """A change was asked without this session's CSRF token, or from another site."""


def derive_session_key(instance_key: bytes) -> bytes:
    """The key that signs console cookies, derived from the instance key (never the key itself)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(instance_key)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id: str
    csrf_token: str
    expires_at: int  # epoch seconds


class RevokedSessions:
    """The console sessions ended before their expiry, each kept until it would have expired.

    They are kept in the registry's settings, so a logout survives a restart and reaches every
    node of the registry (through its SettingChanged events). Revocations are never undone, so
    what is read is merged with what is known. At most ``limit`` sessions are kept one by one;
    when more are revoked, those that expire first leave the list and ``ended_before`` rises to
    their expiry: every session that expires no later (opened no later) is refused with them.
    Without a registry (an application built without an instance) revocations last as long as
    the process."""

    def __init__(self, registry: RegistryService | None = None, limit: int = MAX_REVOKED_SESSIONS) -> None:
        self._registry = registry
        self._limit = limit
        self._sessions: dict[str, int] = {}
        self._ended_before = 0
        self._stale = registry is not None
        if registry is not None:
            registry.events.subscribe(self._changed)

    def _changed(self, event: RegistryEvent) -> None:
        if isinstance(event, SettingChanged) and event.key == REVOKED_SESSIONS_SETTING:
            self._stale = True

    async def load(self) -> None:
        """Read what the registry keeps, when it changed since the last read (cheap otherwise)."""
        if not self._stale or self._registry is None:
            return
        self._stale = False
        stored: Any = await self._registry.get_setting(REVOKED_SESSIONS_SETTING)
        if not isinstance(stored, dict):
            return
        sessions = stored.get("sessions")
        if isinstance(sessions, dict):
            for session_id, expires_at in sessions.items():
                if isinstance(session_id, str) and isinstance(expires_at, int):
                    self._sessions[session_id] = max(expires_at, self._sessions.get(session_id, 0))
        ended_before = stored.get("ended_before")
        if isinstance(ended_before, int):
            self._ended_before = max(self._ended_before, ended_before)

    def refuses(self, session_id: str, expires_at: int) -> bool:
        return expires_at <= self._ended_before or session_id in self._sessions

    async def revoke(self, session: ConsoleSession) -> None:
        """Refuse ``session`` from now on, here at once and durably once this returns."""
        await self.load()
        now = int(time.time())
        sessions = {sid: until for sid, until in self._sessions.items() if until > now}
        sessions[session.id] = session.expires_at
        if len(sessions) > self._limit:
            by_expiry = sorted(sessions.items(), key=lambda item: item[1])
            dropped = len(sessions) - self._limit
            self._ended_before = max(self._ended_before, by_expiry[dropped - 1][1])
            sessions = dict(by_expiry[dropped:])
        self._sessions = sessions
        if self._registry is not None:
            await self._registry.set_setting(
                REVOKED_SESSIONS_SETTING, {"sessions": sessions, "ended_before": self._ended_before}
            )

    def __len__(self) -> int:
        return len(self._sessions)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


class SessionSigner:
    """Issues, reads and revokes console sessions for one instance."""

    def __init__(self, key: bytes | None, admin_token: str, revoked: RevokedSessions | None = None) -> None:
        # Without a key (an application built without an instance, as in tests) sessions last
        # as long as the process.
        self._key = key if key else os.urandom(32)
        self._token_fingerprint = self._mac(b"admin token " + admin_token.encode())[:16]
        self.revoked = revoked if revoked is not None else RevokedSessions()

    def _mac(self, data: bytes) -> str:
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    # -- signed values -------------------------------------------------------------------

    def sign(self, purpose: str, value: object) -> str:
        payload = _b64(json.dumps(value, separators=(",", ":")).encode())
        return f"{_VERSION}.{payload}.{self._mac(f'{purpose}.{payload}'.encode())}"

    def unsign(self, purpose: str, signed: str | None) -> object | None:
        """The value of a cookie that :meth:`sign` made for ``purpose``; None if it is not one."""
        if not signed:
            return None
        version, _, rest = signed.partition(".")
        payload, _, mac = rest.partition(".")
        if version != _VERSION or not payload or not mac:
            return None
        if not hmac.compare_digest(mac, self._mac(f"{purpose}.{payload}".encode())):
            return None
        try:
            value: object = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None
        return value

    # -- sessions ------------------------------------------------------------------------

    def new_session(self) -> ConsoleSession:
        return ConsoleSession(
            id=secrets.token_urlsafe(16),
            csrf_token=secrets.token_urlsafe(32),
            expires_at=int(time.time()) + SESSION_LIFETIME,
        )

    def login(self, response: Response, request: Request) -> ConsoleSession:
        session = self.new_session()
        value = {"sid": session.id, "csrf": session.csrf_token, "exp": session.expires_at}
        value["tok"] = self._token_fingerprint
        response.set_cookie(
            SESSION_COOKIE,
            self.sign("session", value),
            max_age=SESSION_LIFETIME,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=is_https(request),
        )
        return session

    def session_of(self, request: Request) -> ConsoleSession | None:
        value = self.unsign("session", request.cookies.get(SESSION_COOKIE))
        if not isinstance(value, dict):
            return None
        session_id, csrf_token, expires_at = value.get("sid"), value.get("csrf"), value.get("exp")
        if not (isinstance(session_id, str) and isinstance(csrf_token, str) and isinstance(expires_at, int)):
            return None
        if expires_at <= time.time() or self.revoked.refuses(session_id, expires_at):
            return None
        # A session opened with a former admin token ends when the token changes.
        if not hmac.compare_digest(str(value.get("tok", "")), self._token_fingerprint):
            return None
        return ConsoleSession(session_id, csrf_token, expires_at)

    async def logout(self, response: Response, session: ConsoleSession | None) -> None:
        if session is not None:
            await self.revoked.revoke(session)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")

    def check_admin_token(self, given: str, admin_token: str) -> bool:
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(given.strip().encode(), admin_token.encode())

    # -- CSRF ----------------------------------------------------------------------------

    def check_csrf(self, request: Request, session: ConsoleSession, submitted: object) -> None:
        """Raise :class:`CsrfRejected` unless the form carried this session's token and the
        request, when the browser names its origin, comes from this site."""
        origin = request.headers.get("origin")
        if origin is not None and origin != same_origin(request):
            raise CsrfRejected(f"a change was sent from another site ({origin})")
        if not isinstance(submitted, str) or not hmac.compare_digest(
            submitted.encode(), session.csrf_token.encode()
        ):
            raise CsrfRejected(
                "the form did not carry this session's CSRF token; reload the page and try again"
            )


def same_origin(request: Request) -> str:
    url = request.url
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = "" if url.port in (None, default_port) else f":{url.port}"
    return f"{url.scheme}://{host}{port}"
