"""Session ownership: which session a client id has, who may take it, and its life from the
CONNECT that attaches it to the end of its expiry.

:class:`SessionOwnership` is what the packet handlers and the core ask of it;
:class:`LocalSessions` keeps the sessions of this process in a table by client id, within the
limits on sessions (certmq.broker.session_limits). Another implementation (several processes or
nodes agreeing on who holds each client id) would take its place behind the same operations,
without the protocol or the handlers changing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.auth.ownership import ANONYMOUS_OWNER, UNKNOWN_OWNER, SessionOwnerPolicy, may_resume
from certmq.auth.topics import ClientPermissions, may_subscribe
from certmq.broker.routing import Router
from certmq.broker.session import Session
from certmq.broker.session_expiry import SessionExpiry
from certmq.broker.session_limits import SessionCounts, SessionRefusal
from certmq.broker.stats import BrokerStats
from certmq.broker.subscriber import Subscriber
from certmq.broker.wills import Wills
from certmq.mqtt.packets import Will

if TYPE_CHECKING:
    from certmq.broker.recorder import Recorder


class SessionOwnership(Protocol):
    """The sessions of client ids, from CONNECT to their end."""

    # Where the changes to durable state are recorded (certmq.broker.recorder); None: nowhere.
    recorder: Recorder | None

    def may_resume(self, client_id: str, owner: str) -> bool:
        """Whether a client whose owner key is ``owner`` may use the session of ``client_id``
        (any there is, online or offline), by ``auth.session_owner``."""
        ...

    def refusal(self, client_id: str, owner: str, clean_start: bool) -> SessionRefusal | None:
        """Why a client of ``owner`` may not connect with ``client_id`` without going beyond
        the limits on sessions; None when it may."""
        ...

    def attach(
        self,
        connection: Subscriber,
        client_id: str,
        clean_start: bool,
        expiry_interval: int,
        *,
        protocol_version: int,
        owner: str = ANONYMOUS_OWNER,
        username: str | None = None,
        identity: Identity = ANONYMOUS,
        permissions: ClientPermissions | None = None,
    ) -> tuple[Session, bool]:
        """Give a newly accepted connection its session (taken over from a connection that has
        it); returns (session, session_present)."""
        ...

    def set_will(self, session: Session, will: Will | None) -> None:
        """The will of the connection just attached to ``session`` (None: none)."""
        ...

    def detach(self, session: Session, publish_will: bool) -> None:
        """The connection carrying ``session`` has closed."""
        ...

    def end(self, session: Session) -> None:
        """Discard a session: its subscriptions, what it queued; a delayed will goes out now."""
        ...

    def restore(self, session: Session, expires_in: float | None, will_in: float | None) -> None:
        """Take back an offline session saved by an earlier run of the broker, with its timers."""
        ...

    def route_through(self, router: Router) -> None:
        """Route the sessions' subscriptions with ``router`` from now on."""
        ...

    def hand_over(self, session: Session) -> None:
        """``session`` (offline) moves to another broker, where its client connects: forget it
        here without ending it (its will is not published, its expiry stops)."""
        ...

    def authorize(self, session: Session, permissions: ClientPermissions | None) -> None:
        """Give ``session`` its topic permissions, and judge its subscriptions by them."""
        ...

    def connection_of(self, client_id: str) -> Subscriber | None:
        """The connection that carries the session of ``client_id``; None when it has none."""
        ...


class LocalSessions:
    """The sessions of this process, in a table by client id."""

    def __init__(
        self,
        sessions: dict[str, Session],
        counts: SessionCounts,
        router: Router,
        wills: Wills,
        stats: BrokerStats,
        *,
        owner_policy: SessionOwnerPolicy,
        permissions_for: Callable[[str, str | None, Identity], ClientPermissions | None],
    ) -> None:
        self.sessions = sessions
        # Kept by _keep and _forget, the only ways in and out of self.sessions.
        self.counts = counts
        self.router = router
        self.wills = wills
        self.expiry = SessionExpiry(self.end)
        self.stats = stats
        self.owner_policy = owner_policy
        self.permissions_for = permissions_for
        self.recorder: Recorder | None = None

    def may_resume(self, client_id: str, owner: str) -> bool:
        existing = self.sessions.get(client_id)
        return existing is None or may_resume(existing.owner, owner, self.owner_policy)

    def refusal(self, client_id: str, owner: str, clean_start: bool) -> SessionRefusal | None:
        """Why a client of ``owner`` may not connect with ``client_id`` without going beyond the
        limits on sessions (docs/configuration.md, "Limits"); None when it may. Resuming, or
        starting afresh, a session the owner holds takes no new place. A session that becomes
        the owner's (adopted when saved without an owner; or, with ``session_owner = "any"``,
        another's replaced by a clean start or by taking over its clean session's connection)
        takes a place of the owner's, not of the broker's."""
        existing = self.sessions.get(client_id)
        if existing is None:
            return self.counts.refusal(owner, creates_session=True)
        if existing.owner == owner:
            return None
        replaced = clean_start or (existing.connection is not None and existing.expiry_interval == 0)
        if existing.owner != UNKNOWN_OWNER and not replaced:
            return None  # resumed, it stays its owner's
        return self.counts.refusal(owner, creates_session=False)

    def attach(
        self,
        connection: Subscriber,
        client_id: str,
        clean_start: bool,
        expiry_interval: int,
        *,
        protocol_version: int,
        owner: str = ANONYMOUS_OWNER,
        username: str | None = None,
        identity: Identity = ANONYMOUS,
        permissions: ClientPermissions | None = None,
    ) -> tuple[Session, bool]:
        """Give a newly accepted connection its session; returns (session, session_present).

        ``owner`` is the owner key of the client's identity (see :meth:`may_resume`), and
        ``permissions`` its topic permissions, compiled from ``username`` and ``identity``."""
        existing = self.sessions.get(client_id)
        if existing is not None and existing.connection is not None:
            existing.connection.take_over(clean_start)
            existing = self.sessions.get(client_id)
        if existing is not None and clean_start:
            self.end(existing)
            existing = None
        if existing is not None:
            # Reconnected in time: the delayed will is not sent (MQTT 5.0 3.1.3.2.2).
            self.expiry.cancel(existing)
            self.wills.cancel(existing)
            session, present = existing, True
        else:
            session = Session(client_id, protocol_version, owner=owner)
            self._keep(session)
            present = False
        if session.owner == UNKNOWN_OWNER:
            # Adopted: it counts for its new owner from now on.
            self._forget(session)
            session.owner = owner
            self._keep(session)
        session.protocol_version = protocol_version
        session.expiry_interval = expiry_interval
        session.connection = connection
        session.username = username
        session.identity = identity
        self.authorize(session, permissions)
        self.stats.clients_connected += 1
        recorder = self.recorder
        if recorder is not None:
            if expiry_interval > 0:
                # Recorded from here on: the session itself once its will is set (set_will).
                session.recorder = recorder
            elif session.recorder is not None:
                # Resumed with expiry 0: it ends with this connection, and with a crash.
                session.recorder.session_ended(session)
                session.recorder = None
        return session, present

    def set_will(self, session: Session, will: Will | None) -> None:
        """The will of the connection just attached to ``session`` (None: none); a session kept
        across restarts is recorded, with it, from now on."""
        session.will = will
        if session.recorder is not None:
            session.recorder.session_connected(session)

    def detach(self, session: Session, publish_will: bool) -> None:
        if session.connection is None:
            return
        session.connection = None
        self.stats.clients_connected -= 1
        if session.will is not None:
            self.wills.connection_closed(session, publish_will)
        if session.expiry_interval == 0:
            self.end(session)
            return
        if session.recorder is not None:
            session.recorder.session_offline(session)
        self.expiry.start(session)

    def end(self, session: Session) -> None:
        # The tests before the calls spare them for the many sessions that end with their
        # connection, with no will and no subscription.
        if session.expiry_handle is not None:
            self.expiry.cancel(session)
        if session.will is not None or session.will_handle is not None:
            self.wills.session_ended(session)
        if session.subscriptions:
            self.router.unsubscribe_all(session)
        if self.sessions.get(session.client_id) is session and session.recorder is not None:
            session.recorder.session_ended(session)
        session.recorder = None
        self._forget(session)

    def route_through(self, router: Router) -> None:
        self.router = router

    def hand_over(self, session: Session) -> None:
        if session.connection is not None or self.sessions.get(session.client_id) is not session:
            return
        self.expiry.cancel(session)
        self.wills.cancel(session)
        session.will = None
        if session.subscriptions:
            self.router.unsubscribe_all(session)
        if session.recorder is not None:
            session.recorder.session_ended(session)
        session.recorder = None
        self._forget(session)

    def restore(self, session: Session, expires_in: float | None, will_in: float | None) -> None:
        """``expires_in``: seconds until the session expires (None: never); ``will_in``: seconds
        until its delayed will goes out. A deadline that passed while the broker was down fires
        as soon as the loop runs again, after every saved session is back, so its will reaches
        them too."""
        self._keep(session)
        session.count_held_bytes()
        self.router.resubscribe(session)
        self.authorize(session, self.permissions_for(session.client_id, session.username, session.identity))
        self.wills.restore(session, will_in)
        self.expiry.restore(session, expires_in)

    def authorize(self, session: Session, permissions: ClientPermissions | None) -> None:
        """A subscription the permissions do not wholly allow any more (the rules or the client
        changed since it was made) has each message checked."""
        if permissions is None and session.permissions is None:
            return  # no rules before, none now: no subscription is filtered
        session.permissions = permissions
        for entry in list(session.subscriptions.values()):
            filtered = not may_subscribe(permissions, entry.topic_filter)
            if filtered != entry.filtered:
                # Replaced, not changed in place: a snapshot being saved may hold the old entry.
                self.router.subscribe(session, replace(entry, filtered=filtered))

    def connection_of(self, client_id: str) -> Subscriber | None:
        session = self.sessions.get(client_id)
        return None if session is None else session.connection

    def _keep(self, session: Session) -> None:
        """Hold ``session`` under its client id, counted for the limits on sessions."""
        replaced = self.sessions.get(session.client_id)
        if replaced is not None:
            self.counts.removed(replaced.owner)
        self.sessions[session.client_id] = session
        self.counts.added(session.owner)

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self.counts.removed(session.owner)
