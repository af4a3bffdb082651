"""Session expiry (MQTT 5.0 3.1.2.11.2; 3.1.1's clean session): a session whose client is away
ends when its expiry interval has passed, unless the client comes back first. An interval of 0
ends it with its connection; 0xFFFFFFFF (and a 3.1.1 session without clean session) never."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from certmq.broker.session import Session
from certmq.mqtt.session_flows import NEVER_EXPIRES


class SessionExpiry:
    """The expiry timers of the sessions whose clients are away; ``end`` ends a session."""

    def __init__(self, end: Callable[[Session], None]) -> None:
        self._end = end

    def start(self, session: Session) -> None:
        """The client of ``session`` went away (its expiry interval is above 0)."""
        if session.expiry_interval != NEVER_EXPIRES:
            session.expiry_handle = asyncio.get_running_loop().call_later(
                session.expiry_interval, self._end, session
            )

    def restore(self, session: Session, expires_in: float | None) -> None:
        """A session restored from an earlier run ends ``expires_in`` seconds from now (at once,
        when that passed while the broker was down); None: never."""
        if expires_in is not None:
            session.expiry_handle = asyncio.get_running_loop().call_later(
                max(0.0, expires_in), self._end, session
            )

    def cancel(self, session: Session) -> None:
        """The client came back, or the session ends otherwise."""
        if session.expiry_handle is not None:
            session.expiry_handle.cancel()
            session.expiry_handle = None
