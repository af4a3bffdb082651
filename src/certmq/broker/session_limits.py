"""How many sessions the broker holds, in all and per identity (docs/configuration.md, "Limits").

Each session may hold up to ``mqtt.max_queued_bytes`` and its subscriptions, so the number of
sessions bounds what clients can make the broker hold. A client creates one with every client id
it sends, so one identity could otherwise multiply its share without end. Sessions are counted
per owner key (certmq.auth.ownership), online and offline alike, as the core adds and removes
them; a CONNECT that would create one beyond a limit is refused with 0x97 Quota exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from certmq.auth.ownership import IdentityKind, identity_kind
from certmq.config import MqttSection

# The audit log's reasons for a CONNECT refused by a session limit.
IDENTITY_SESSION_LIMIT = "identity-session-limit"
BROKER_SESSION_LIMIT = "broker-session-limit"


@dataclass(frozen=True, slots=True)
class SessionRefusal:
    """Why a new session does not fit: the audit log's reason, and the detail told the client."""

    reason: str
    detail: str


# The setting that bounds the sessions of each kind of identity. A session saved before owners were
# recorded has none: the first identity that resumes it adopts it, and it counts for that one then.
_IDENTITY_LIMITS = {
    IdentityKind.CERTIFICATE: "max_sessions_per_certificate",
    IdentityKind.ACCESS_KEY: "max_sessions_per_access_key",
    IdentityKind.ANONYMOUS: "max_anonymous_sessions",
}


def identity_session_limit(owner: str, settings: MqttSection) -> tuple[int, str]:
    """The most sessions the identity with owner key ``owner`` may hold, and the setting that
    says so; 0: no limit of its own (``max_sessions`` still applies)."""
    name = _IDENTITY_LIMITS.get(identity_kind(owner))
    return (0, "") if name is None else (getattr(settings, name), name)


class SessionCounts:
    """The sessions of the core, counted in all and per owner key. The core calls :meth:`added`
    and :meth:`removed` from the one method that puts a session in its table and the one that
    takes it out (a restored session, an adopted one included), so that the counts are exact
    whatever the sessions' history."""

    __slots__ = ("_by_owner", "_settings", "total")

    def __init__(self, settings: MqttSection) -> None:
        self._settings = settings
        # Only owners that hold a session: the table shrinks as their sessions end.
        self._by_owner: dict[str, int] = {}
        self.total = 0

    def of(self, owner: str) -> int:
        """The sessions the identity with owner key ``owner`` holds."""
        return self._by_owner.get(owner, 0)

    def added(self, owner: str) -> None:
        self._by_owner[owner] = self._by_owner.get(owner, 0) + 1
        self.total += 1

    def removed(self, owner: str) -> None:
        left = self._by_owner[owner] - 1
        if left:
            self._by_owner[owner] = left
        else:
            del self._by_owner[owner]
        self.total -= 1

    def refusal(self, owner: str, *, creates_session: bool) -> SessionRefusal | None:
        """Why ``owner`` may not take one more session; None when it may. ``creates_session``:
        the broker would hold one more session (False when the owner takes one the broker
        holds already, of its client id)."""
        settings = self._settings
        limit, setting = identity_session_limit(owner, settings)
        if limit and self.of(owner) >= limit:
            return SessionRefusal(
                IDENTITY_SESSION_LIMIT,
                f"this identity holds {limit} sessions, the most it may (mqtt.{setting})",
            )
        if creates_session and self.total >= settings.max_sessions:
            return SessionRefusal(
                BROKER_SESSION_LIMIT,
                f"the broker holds {settings.max_sessions} sessions, the most it may (mqtt.max_sessions)",
            )
        return None
