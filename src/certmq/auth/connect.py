"""The credential check run at every CONNECT, as a pluggable step.

The broker calls :meth:`Authenticator.authenticate` once per CONNECT and answers CONNACK with
its outcome. Implementations must not block the event loop: an outcome known at once is
returned as is, and one that needs to wait (a database write, a remote service) as an awaitable,
e.g. by an ``async def``. Most CONNECTs are decided at once, and the broker then answers them
within the same read, without a task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.mqtt.reason_codes import ReasonCode


@dataclass(slots=True, frozen=True)
class ConnectAttempt:
    """What is known about a client when its CONNECT arrives."""

    listener: str
    peer: str
    client_id: str
    username: str | None
    password: bytes | None
    protocol_version: int
    peer_certificate: bytes | None = None  # DER of the leaf the client presented on TLS, if any
    # The TLS layer's account of which certificate verified the leaf's signature (see decide_device).
    verified_issuer: Callable[[], bytes | None] | None = None


@dataclass(slots=True, frozen=True)
class AuthOutcome:
    allowed: bool
    reason_code: int = ReasonCode.SUCCESS
    reason: str = ""
    # Who the client proved to be (what topic rules may refer to, e.g. ${cert.cn}).
    identity: Identity = ANONYMOUS
    # When the credentials stop being valid (a device certificate's notAfter, or its CA's if
    # sooner): the broker ends the session then. None: they do not expire.
    valid_until: datetime | None = None


ALLOW = AuthOutcome(True)


class Authenticator(Protocol):
    def authenticate(self, attempt: ConnectAttempt) -> AuthOutcome | Awaitable[AuthOutcome]: ...


class AnonymousAuthenticator:
    """Lets every client in: ``auth.anonymous = true``."""

    def authenticate(self, attempt: ConnectAttempt) -> AuthOutcome:
        return ALLOW
