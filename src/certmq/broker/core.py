"""The broker's shared state: sessions, subscriptions, retained messages, wills, and routing.

Connections call into the core; the core reaches a connection only to hand it a delivery or
to tell it that its session was taken over. Everything runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from certmq.auth.connect import AnonymousAuthenticator, Authenticator
from certmq.auth.identity import ANONYMOUS, Identity
from certmq.auth.ownership import ANONYMOUS_OWNER, UNKNOWN_OWNER, SessionOwnerPolicy, may_resume
from certmq.auth.topics import ClientPermissions, TopicRules, may_publish, may_receive, may_subscribe
from certmq.broker.certificate_expiry import CertificateExpiry
from certmq.broker.messages import FORWARDED_PROPERTIES, Message
from certmq.broker.quotas import longest_unchecked_topic, retained_fits
from certmq.broker.retained import MemoryRetainedStore, RetainedStore
from certmq.broker.session import NEVER_EXPIRES, Delivery, Session, SubscriptionEntry
from certmq.broker.session_limits import SessionCounts, SessionRefusal
from certmq.broker.stats import BrokerStats
from certmq.broker.subscriptions import SharedGroup, SubscriptionIndex
from certmq.config import MqttSection
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode

if TYPE_CHECKING:
    from certmq.auth.authenticator import AuditSink
    from certmq.broker.connection import MQTTConnection
    from certmq.broker.recorder import Recorder

log = logging.getLogger("certmq.broker")

# Retained `$SYS` topics are statistics of the running broker, published again after a start.
NOT_KEPT_PREFIX = "$SYS/"


P2P_MARKER = "/p2p/"


def p2p_target(topic: str) -> str | None:
    """The client id a point-to-point topic `<parent>/p2p/<ClientId>` addresses, or None."""
    parent, marker, client_id = topic.partition(P2P_MARKER)
    if not marker or not parent or "/" in parent or not client_id:
        return None
    return client_id


def message_from_will(will: Will, client_id: str, now: float) -> Message:
    properties: dict[int, Any] = {
        key: will.properties[key] for key in FORWARDED_PROPERTIES if key in will.properties
    }
    expiry = will.properties.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
    return Message(
        topic=will.topic,
        payload=will.payload,
        qos=will.qos,
        retain=will.retain,
        properties=properties,
        expires_at=None if expiry is None else now + expiry,
        sender=client_id,
    )


def _always_valid(session: Session) -> bool:
    return True


class BrokerCore:
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
        # Whether the identity a session's client authenticated with is still valid (its
        # certificate registered, active and not expired...), asked before its will goes out,
        # which may be long after the client left. The application sets it.
        self.identity_valid: Callable[[Session], bool] = _always_valid
        # Where CONNECT refusals the broker decides (a will the rules deny, a session of another
        # identity) are recorded, with the fields of the audit log; the application sets it.
        self.audit: AuditSink | None = None
        # SUBACK code for a subscription the rules deny, on 5.0 (3.1.1 only has 0x80).
        self.subscribe_denied_code = subscribe_denied_code
        self.authenticator: Authenticator = authenticator or AnonymousAuthenticator()
        self.sessions: dict[str, Session] = {}
        # Kept by _keep_session and _forget_session, the only ways in and out of self.sessions.
        self.session_counts = SessionCounts(settings)
        self.subscriptions = SubscriptionIndex()
        self.retained: RetainedStore = retained or MemoryRetainedStore()
        self.stats = BrokerStats()
        self.longest_unchecked_topic = longest_unchecked_topic(settings)
        self.connections: set[MQTTConnection] = set()
        self.certificate_expiry = CertificateExpiry(self.connections)
        # The journal of what must survive a crash; None with persistence off.
        self.recorder: Recorder | None = None

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
            self._authorize(
                session, self.permissions_for(session.client_id, session.username, session.identity)
            )

    def _authorize(self, session: Session, permissions: ClientPermissions | None) -> None:
        """Give ``session`` its permissions; a subscription they do not wholly allow any more
        (the rules or the client changed since it was made) has each message checked."""
        if permissions is None and session.permissions is None:
            return  # no rules before, none now: no subscription is filtered
        session.permissions = permissions
        for entry in list(session.subscriptions.values()):
            filtered = not may_subscribe(permissions, entry.topic_filter)
            if filtered != entry.filtered:
                # Replaced, not changed in place: a snapshot being saved may hold the old entry.
                self.subscribe(session, replace(entry, filtered=filtered))

    # -- sessions -------------------------------------------------------------------------

    def may_resume(self, client_id: str, owner: str) -> bool:
        """Whether a client whose owner key is ``owner`` may use the session of ``client_id``
        (any there is, online or offline), by ``auth.session_owner``."""
        existing = self.sessions.get(client_id)
        return existing is None or may_resume(existing.owner, owner, self.session_owner)

    def session_refusal(self, client_id: str, owner: str, clean_start: bool) -> SessionRefusal | None:
        """Why a client of ``owner`` may not connect with ``client_id`` without going beyond the
        limits on sessions (docs/configuration.md, "Limits"); None when it may. Resuming, or
        starting afresh, a session the owner holds takes no new place. A session that becomes
        the owner's (adopted when saved without an owner; or, with ``session_owner = "any"``,
        another's replaced by a clean start or by taking over its clean session's connection)
        takes a place of the owner's, not of the broker's."""
        existing = self.sessions.get(client_id)
        if existing is None:
            return self.session_counts.refusal(owner, creates_session=True)
        if existing.owner == owner:
            return None
        replaced = clean_start or (existing.connection is not None and existing.expiry_interval == 0)
        if existing.owner != UNKNOWN_OWNER and not replaced:
            return None  # resumed, it stays its owner's
        return self.session_counts.refusal(owner, creates_session=False)

    def attach(
        self,
        connection: MQTTConnection,
        client_id: str,
        clean_start: bool,
        expiry_interval: int,
        *,
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
            self.end_session(existing)
            existing = None
        if existing is not None:
            # Reconnected in time: the delayed will is not sent (MQTT 5.0 3.1.3.2.2).
            self._cancel_timers(existing)
            existing.will = None
            session, present = existing, True
        else:
            session = Session(client_id, connection.protocol_version, owner=owner)
            self._keep_session(session)
            present = False
        if session.owner == UNKNOWN_OWNER:
            # Adopted: it counts for its new owner from now on.
            self._forget_session(session)
            session.owner = owner
            self._keep_session(session)
        session.protocol_version = connection.protocol_version
        session.expiry_interval = expiry_interval
        session.connection = connection
        session.username = username
        session.identity = identity
        self._authorize(session, permissions)
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
        """The connection carrying ``session`` has closed."""
        if session.connection is None:
            return
        session.connection = None
        self.stats.clients_connected -= 1
        will, session.will = session.will, None
        if will is not None and publish_will:
            delay = will.properties.get(PropertyId.WILL_DELAY_INTERVAL, 0)
            if delay > 0 and session.expiry_interval > 0:
                session.will = will
                session.will_handle = self.loop.call_later(delay, self._publish_delayed_will, session)
            else:
                self._publish_will(session, will)
        if session.expiry_interval == 0:
            self.end_session(session)
            return
        if session.recorder is not None:
            session.recorder.session_offline(session)
        if session.expiry_interval != NEVER_EXPIRES:
            session.expiry_handle = self.loop.call_later(session.expiry_interval, self.end_session, session)

    def end_session(self, session: Session) -> None:
        """Discard a session: its subscriptions, queued messages; a delayed will goes out now."""
        self._cancel_timers(session)
        if session.will is not None:
            will, session.will = session.will, None
            self._publish_will(session, will)
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(session.client_id, topic_filter)
        session.subscriptions.clear()
        if self.sessions.get(session.client_id) is session and session.recorder is not None:
            session.recorder.session_ended(session)
        session.recorder = None
        self._forget_session(session)

    def restore_session(self, session: Session, expires_in: float | None, will_in: float | None) -> None:
        """Take back an offline session saved by an earlier run of the broker, with its timers.

        ``expires_in``: seconds until the session expires (None: never); ``will_in``: seconds until
        its delayed will goes out. A deadline that passed while the broker was down fires as soon
        as the loop runs again, after every saved session is back, so its will reaches them too.
        """
        self._keep_session(session)
        session.count_held_bytes()
        for entry in session.subscriptions.values():
            self.subscriptions.add(entry)
        self._authorize(session, self.permissions_for(session.client_id, session.username, session.identity))
        if session.will is not None and will_in is not None:
            session.will_handle = self.loop.call_later(max(0.0, will_in), self._publish_delayed_will, session)
        if expires_in is not None:
            session.expiry_handle = self.loop.call_later(max(0.0, expires_in), self.end_session, session)

    def _keep_session(self, session: Session) -> None:
        """Hold ``session`` under its client id, counted for the limits on sessions."""
        replaced = self.sessions.get(session.client_id)
        if replaced is not None:
            self.session_counts.removed(replaced.owner)
        self.sessions[session.client_id] = session
        self.session_counts.added(session.owner)

    def _forget_session(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self.session_counts.removed(session.owner)

    def _publish_delayed_will(self, session: Session) -> None:
        session.will_handle = None
        if session.will is not None and session.connection is None:
            will, session.will = session.will, None
            self._publish_will(session, will)
            if session.recorder is not None:
                session.recorder.will_cleared(session)

    def _publish_will(self, session: Session, will: Will) -> None:
        """Publish a will, if its client may still: the will was allowed at CONNECT, but the
        rules in force now and the client's identity as it stands now decide."""
        if not self.identity_valid(session):
            why = "its identity is no longer valid"
        elif not may_publish(session.permissions, will.topic):
            why = "the topic rules do not allow its topic"
        else:
            self.publish(message_from_will(will, session.client_id, self.loop.time()))
            return
        self.stats.wills_dropped += 1
        log.info("dropped the will of %s to %s: %s", session.client_id, will.topic, why)

    @staticmethod
    def _cancel_timers(session: Session) -> None:
        for handle in (session.expiry_handle, session.will_handle):
            if handle is not None:
                handle.cancel()
        session.expiry_handle = session.will_handle = None

    def disconnect_where(self, matches: Callable[[MQTTConnection], bool], reason: str) -> int:
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

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(self, session: Session, entry: SubscriptionEntry) -> bool:
        """Add or replace a subscription; True when it already existed."""
        existed = entry.topic_filter in session.subscriptions
        session.subscriptions[entry.topic_filter] = entry
        self.subscriptions.add(entry)
        if session.recorder is not None:
            session.recorder.subscribed(session, entry)
        return existed

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self.subscriptions.remove(session.client_id, topic_filter)
        if session.recorder is not None:
            session.recorder.unsubscribed(session, topic_filter)
        return True

    # -- routing --------------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Store a retained message and deliver ``message`` to every matching session."""
        if self.settings.p2p_topics and P2P_MARKER in message.topic:
            target = p2p_target(message.topic)
            if target is not None:
                return self._deliver_point_to_point(message, target)
        if message.retain and self.settings.retain_available:
            recorder = self.recorder
            if recorder is not None and message.topic.startswith(NOT_KEPT_PREFIX):
                recorder = None
            if not message.payload:
                self.retained.clear(message.topic)
                if recorder is not None:
                    recorder.retained_cleared(message.topic)
            elif self.retained_fits(message):
                self.retained.set(message)
                if recorder is not None:
                    recorder.retained_set(message)
            else:
                # Delivered to the subscribers of now, not kept for later ones.
                self.refuse_retained(message)
        return self.route(message)

    def retained_fits(self, message: Message) -> bool:
        """Whether publishing retained ``message`` keeps the retained messages within their
        limits (docs/configuration.md, "Limits"). What is not stored always fits: an empty
        payload (it clears the topic), a point-to-point message; so do the broker's own `$SYS`
        messages."""
        if message.sender is None or not message.payload:
            return True
        if self.settings.p2p_topics and p2p_target(message.topic) is not None:
            return True
        return retained_fits(self.retained, message, self.settings)

    def refuse_retained(self, message: Message) -> None:
        # Counted in the metrics; a line each would let one client flood the log.
        log.debug(
            "retained message on %s from %s not stored: the retained limits are reached (%d messages, %d bytes)",
            message.topic,
            message.sender,
            len(self.retained),
            self.retained.size,
        )
        self.stats.retained_refused += 1

    def _deliver_point_to_point(self, message: Message, client_id: str) -> int:
        """ApsaraMQ point-to-point: `<parent>/p2p/<ClientId>` goes to that client alone, subscribed or not."""
        session = self.sessions.get(client_id)
        if session is None or not may_receive(session.permissions, message.topic):
            self.stats.messages_dropped += 1
            return 0
        self._deliver(session, Delivery(message, message.qos, False), {})
        self.stats.messages_routed += 1
        return 1

    def _may_receive(self, client_id: str, topic: str) -> bool:
        session = self.sessions.get(client_id)
        return session is not None and may_receive(session.permissions, topic)

    def _is_online(self, client_id: str) -> bool:
        session = self.sessions.get(client_id)
        return session is not None and session.connection is not None

    def route(self, message: Message) -> int:
        """Deliver to every session with a matching subscription; returns the number of deliveries."""
        matches = self.subscriptions.tree.match(message.topic)
        if not matches:
            return 0
        # Encoded QoS 0 PUBLISH bytes shared between subscribers that get the same packet.
        cache: dict[Any, bytes] = {}
        sessions = self.sessions
        sender = message.sender
        message_qos = message.qos
        delivered = 0
        if len(matches) == 1:
            # One node: every client appears at most once (shared groups aside); no merging needed.
            for candidate in matches[0].values():
                if isinstance(candidate, SharedGroup):
                    picked = candidate.pick(self._is_online)
                    if picked is None:
                        continue
                    entry = picked
                elif candidate.no_local and candidate.client_id == sender:
                    continue
                else:
                    entry = candidate
                session = sessions.get(entry.client_id)
                if session is None or (
                    entry.filtered and not may_receive(session.permissions, message.topic)
                ):
                    continue
                qos = entry.qos if entry.qos < message_qos else message_qos
                sid = entry.subscription_id
                self._deliver(
                    session,
                    Delivery(
                        message,
                        qos,
                        message.retain and entry.retain_as_published,
                        () if sid is None else (sid,),
                    ),
                    cache,
                )
                delivered += 1
            self.stats.messages_routed += delivered
            return delivered
        # Several nodes match: a client with overlapping subscriptions gets one message with
        # the highest QoS and every subscription identifier (MQTT 5.0 3.3.4).
        merged: dict[str, list[Any]] = {}
        for subscribers in matches:
            for candidate in subscribers.values():
                if isinstance(candidate, SharedGroup):
                    picked = candidate.pick(self._is_online)
                    if picked is None:
                        continue
                    entry = picked
                elif candidate.no_local and candidate.client_id == sender:
                    continue
                else:
                    entry = candidate
                if entry.filtered and not self._may_receive(entry.client_id, message.topic):
                    continue
                qos = entry.qos if entry.qos < message_qos else message_qos
                retain = message.retain and entry.retain_as_published
                target = merged.get(entry.client_id)
                if target is None:
                    target = merged[entry.client_id] = [qos, retain, []]
                else:
                    target[0] = max(target[0], qos)
                    target[1] = target[1] or retain
                if entry.subscription_id is not None:
                    target[2].append(entry.subscription_id)
        for client_id, (qos, retain, subscription_ids) in merged.items():
            session = sessions.get(client_id)
            if session is None:
                continue
            self._deliver(session, Delivery(message, qos, retain, tuple(subscription_ids)), cache)
            delivered += 1
        self.stats.messages_routed += delivered
        return delivered

    def _deliver(self, session: Session, delivery: Delivery, cache: dict[Any, bytes]) -> None:
        connection = session.connection
        if connection is not None:
            connection.deliver(delivery, cache)
        elif delivery.qos > 0:
            # Offline persistent session: keep QoS 1 and 2 messages (MQTT 3.1.2.4); QoS 0 is dropped.
            self.queue(session, delivery)
        else:
            self.stats.messages_dropped += 1

    def queue(self, session: Session, delivery: Delivery) -> None:
        """Keep a QoS 1 or 2 delivery in ``session`` for later; when its queue is full (messages
        or bytes, docs/configuration.md "Limits") the delivery is dropped and counted."""
        settings = self.settings
        if not session.queue(delivery, settings.max_queued_messages, settings.max_queued_bytes):
            self.count_queue_full()

    def count_queue_full(self) -> None:
        self.stats.messages_dropped += 1
        self.stats.messages_dropped_queue_full += 1
