"""The broker's core: what its connections share, put together.

The sessions and their ownership (sessions.py, with wills.py and session_expiry.py), routing
and retained messages (routing.py), the topic rules in force, the live connections, the
counters. The packet handlers reach routing and the sessions through the core's operations,
which are those of its :class:`Router` and its :class:`SessionOwnership`: replacing the
in-process ones (LocalRouter, LocalSessions) is done here, and changes no handler. The core
reaches a connection only through :class:`Subscriber` (deliver, take over, close). Everything
runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from certmq.auth.connect import AnonymousAuthenticator, Authenticator
from certmq.auth.identity import Identity
from certmq.auth.ownership import SessionOwnerPolicy
from certmq.auth.topics import ClientPermissions, TopicRules
from certmq.broker.certificate_expiry import CertificateExpiry
from certmq.broker.client_id_claims import ClientIdClaims
from certmq.broker.commit_gate import CommitGate, CommitSource
from certmq.broker.quotas import longest_unchecked_topic, topic_within_limits
from certmq.broker.retained import MemoryRetainedStore, RetainedStore
from certmq.broker.routing import LocalRouter, Router
from certmq.broker.session import Session
from certmq.broker.session_limits import SessionCounts
from certmq.broker.sessions import LocalSessions, SessionOwnership
from certmq.broker.stats import BrokerStats
from certmq.broker.subscriber import LiveConnection
from certmq.broker.subscriptions import SubscriptionIndex
from certmq.broker.wills import Wills
from certmq.config import MqttSection
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_connection import ServerLimits

if TYPE_CHECKING:
    from certmq.auth.authenticator import AuditSink
    from certmq.broker.recorder import Recorder

log = logging.getLogger("certmq.broker")


def server_limits(settings: MqttSection) -> ServerLimits:
    """What the broker's connections allow and announce, from its settings."""
    return ServerLimits(
        max_packet_size=settings.max_packet_size,
        receive_maximum=settings.receive_maximum,
        max_inflight=settings.max_inflight,
        topic_alias_maximum=settings.topic_alias_maximum,
        retain_available=settings.retain_available,
        server_keep_alive=settings.server_keep_alive,
        max_session_expiry=settings.max_session_expiry,
        connect_timeout=settings.connect_timeout,
    )


# The live connections' type, as the server makes them: the core only asks what LiveConnection says.
C = TypeVar("C", bound=LiveConnection)


class BrokerCore(Generic[C]):
    def __init__(
        self,
        settings: MqttSection,
        *,
        authenticator: Authenticator | None = None,
        retained: RetainedStore | None = None,
        topic_rules: TopicRules | None = None,
        subscribe_denied_code: int = ReasonCode.NOT_AUTHORIZED,
        session_owner: SessionOwnerPolicy = SessionOwnerPolicy.IDENTITY,
    ) -> None:
        self.settings = settings
        self.topic_rules = topic_rules
        self.session_owner = session_owner
        # Where CONNECT refusals the broker decides (a will the rules deny, a session of another
        # identity) are recorded, with the fields of the audit log; the application sets it.
        self.audit: AuditSink | None = None
        # SUBACK code for a subscription the rules deny, on 5.0 (3.1.1 only has 0x80).
        self.subscribe_denied_code = subscribe_denied_code
        self.authenticator: Authenticator = authenticator or AnonymousAuthenticator()
        self.stats = BrokerStats()
        self.longest_unchecked_topic = longest_unchecked_topic(settings)
        self.limits = server_limits(settings)
        self.connections: set[C] = set()
        self.certificate_expiry: CertificateExpiry[C] = CertificateExpiry(self.connections)
        # The sessions of this broker by client id, the subscriptions and retained messages.
        self.sessions: dict[str, Session] = {}
        self.subscriptions = SubscriptionIndex()
        self.retained: RetainedStore = retained or MemoryRetainedStore()
        self.router: Router = LocalRouter(
            settings, self.sessions, self.subscriptions, self.retained, self.stats
        )
        self.wills = Wills(self.router.publish, self.stats)
        self.session_counts = SessionCounts(settings)
        self.ownership: SessionOwnership = LocalSessions(
            self.sessions,
            self.session_counts,
            self.router,
            self.wills,
            self.stats,
            owner_policy=session_owner,
            permissions_for=self.permissions_for,
        )
        self._bind_router()
        self.may_resume = self.ownership.may_resume
        self.session_refusal = self.ownership.refusal
        self.attach = self.ownership.attach
        self.set_will = self.ownership.set_will
        self.detach = self.ownership.detach
        self.end_session = self.ownership.end
        self.restore_session = self.ownership.restore
        # The journal of what must survive a crash; None with persistence off (see record_to).
        self.recorder: Recorder | None = None
        # Where a client id is claimed from before a CONNECT is accepted: None on a single broker.
        self.client_id_claims: ClientIdClaims | None = None
        # What replies wait for (the journal's writes, the cluster's); None: nothing.
        self.commit_gate: CommitGate | None = None
        self._commit_sources: list[CommitSource] = []

    def _bind_router(self) -> None:
        """The core's operations are its router's (and, below, its session ownership's)."""
        router = self.router
        self.publish = router.publish
        self.subscribe = router.subscribe
        self.unsubscribe = router.unsubscribe
        self.queue = router.queue
        self.count_queue_full = router.count_queue_full
        self.retained_fits = router.retained_fits
        self.refuse_retained = router.refuse_retained
        self.retained_matching = router.retained_matching

    def route_through(self, router: Router) -> None:
        """Route with ``router`` from now on (a cluster's, which wraps the local one), before
        the listeners open: the handlers, the wills and the sessions all reach it."""
        router.recorder = self.recorder
        self.router = router
        self._bind_router()
        self.wills.route_to(router.publish)
        self.ownership.route_through(router)

    def record_to(self, recorder: Recorder | None) -> None:
        """Record what must survive a crash in ``recorder`` from now on (None: nowhere)."""
        if self.recorder is not None:
            self._commit_sources.remove(self.recorder)
        self.recorder = self.router.recorder = self.ownership.recorder = recorder
        if recorder is not None:
            self._commit_sources.append(recorder)
        self._gate_sources()

    def wait_for_commits(self, source: CommitSource) -> None:
        """From now on replies that acknowledge work appended to ``source`` also wait for it to
        be committed (certmq.broker.commit_gate)."""
        self._commit_sources.append(source)
        self._gate_sources()

    def _gate_sources(self) -> None:
        sources = self._commit_sources
        self.commit_gate = CommitGate(sources) if sources else None

    @property
    def identity_valid(self) -> Callable[[Session], bool]:
        """Whether the identity a session's client authenticated with is still valid, asked
        before its will goes out; the application sets it (certmq.broker.wills)."""
        return self.wills.identity_valid

    @identity_valid.setter
    def identity_valid(self, identity_valid: Callable[[Session], bool]) -> None:
        self.wills.identity_valid = identity_valid

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- topic permissions ----------------------------------------------------------------

    def permissions_for(
        self, client_id: str, username: str | None, identity: Identity
    ) -> ClientPermissions | None:
        """The topic rules in force, compiled for one client; None when there are none."""
        rules = self.topic_rules
        return None if rules is None else rules.for_client(client_id, username, identity)

    def reload_topic_rules(self, rules: TopicRules | None) -> None:
        """Put other topic rules in force: every session, online or offline, gets its
        permissions compiled again, and its subscriptions judged again."""
        self.topic_rules = rules
        for session in self.sessions.values():
            self.ownership.authorize(
                session, self.permissions_for(session.client_id, session.username, session.identity)
            )

    def topic_within_limits(self, topic: str) -> bool:
        """Whether a topic name or filter is within ``max_topic_length`` and ``max_topic_levels``;
        one that is not is counted."""
        if len(topic) <= self.longest_unchecked_topic or topic_within_limits(topic, self.settings):
            return True
        self.stats.topics_over_limit += 1
        return False

    # -- live connections -----------------------------------------------------------------

    def disconnect_where(self, matches: Callable[[C], bool], reason: str) -> int:
        """Disconnect every live connection ``matches`` selects, as an operator's revocation:
        5.0 clients get DISCONNECT 0x87 with ``reason``, and no will is published."""
        chosen = [connection for connection in self.connections if matches(connection)]
        for connection in chosen:
            log.info("disconnecting %s: %s", connection.client_id or connection.peer, reason)
            connection.close(ReasonCode.NOT_AUTHORIZED, reason, publish_will=False)
        return len(chosen)

    def holdings(self) -> dict[str, int]:
        """What the broker holds now, the quantities its limits bound (for the metrics)."""
        sessions = self.sessions.values()
        return {
            "retained_messages": len(self.retained),
            "retained_bytes": self.retained.size,
            "sessions": self.session_counts.total,
            "subscriptions": len(self.subscriptions),
            "queued_messages": sum(len(session.pending) for session in sessions),
            # Queued and in flight: what mqtt.max_queued_bytes bounds per session.
            "queued_bytes": sum(session.held_bytes for session in sessions),
        }
