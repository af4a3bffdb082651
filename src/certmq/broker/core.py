"""The broker's shared state: sessions, subscriptions, retained messages, wills, and routing.

Connections call into the core; the core reaches a connection only to hand it a delivery or
to tell it that its session was taken over. Everything runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from certmq.auth.connect import AnonymousAuthenticator, Authenticator
from certmq.auth.topics import TopicRules
from certmq.broker.messages import FORWARDED_PROPERTIES, Message
from certmq.broker.retained import MemoryRetainedStore, RetainedStore
from certmq.broker.session import NEVER_EXPIRES, Delivery, Session, SubscriptionEntry
from certmq.broker.stats import BrokerStats
from certmq.broker.subscriptions import SharedGroup, SubscriptionIndex
from certmq.config import MqttSection
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode

if TYPE_CHECKING:
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


class BrokerCore:
    def __init__(
        self,
        settings: MqttSection,
        *,
        authenticator: Authenticator | None = None,
        retained: RetainedStore | None = None,
        topic_rules: TopicRules | None = None,
        subscribe_denied_code: int = ReasonCode.NOT_AUTHORIZED,
    ) -> None:
        self.settings = settings
        self.topic_rules = topic_rules
        # SUBACK code for a subscription the rules deny, on 5.0 (3.1.1 only has 0x80).
        self.subscribe_denied_code = subscribe_denied_code
        self.authenticator: Authenticator = authenticator or AnonymousAuthenticator()
        self.sessions: dict[str, Session] = {}
        self.subscriptions = SubscriptionIndex()
        self.retained: RetainedStore = retained or MemoryRetainedStore()
        self.stats = BrokerStats()
        self.connections: set[MQTTConnection] = set()
        # The journal of what must survive a crash; None with persistence off.
        self.recorder: Recorder | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- sessions -------------------------------------------------------------------------

    def attach(
        self, connection: MQTTConnection, client_id: str, clean_start: bool, expiry_interval: int
    ) -> tuple[Session, bool]:
        """Give a newly accepted connection its session; returns (session, session_present)."""
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
            session = Session(client_id, connection.protocol_version)
            self.sessions[client_id] = session
            present = False
        session.protocol_version = connection.protocol_version
        session.expiry_interval = expiry_interval
        session.connection = connection
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
                self.publish(message_from_will(will, session.client_id, self.loop.time()))
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
            self.publish(message_from_will(will, session.client_id, self.loop.time()))
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(session.client_id, topic_filter)
        session.subscriptions.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            if session.recorder is not None:
                session.recorder.session_ended(session)
        session.recorder = None

    def restore_session(self, session: Session, expires_in: float | None, will_in: float | None) -> None:
        """Take back an offline session saved by an earlier run of the broker, with its timers.

        ``expires_in``: seconds until the session expires (None: never); ``will_in``: seconds until
        its delayed will goes out. A deadline that passed while the broker was down fires as soon
        as the loop runs again, after every saved session is back, so its will reaches them too.
        """
        self.sessions[session.client_id] = session
        for entry in session.subscriptions.values():
            self.subscriptions.add(entry)
        if session.will is not None and will_in is not None:
            session.will_handle = self.loop.call_later(max(0.0, will_in), self._publish_delayed_will, session)
        if expires_in is not None:
            session.expiry_handle = self.loop.call_later(max(0.0, expires_in), self.end_session, session)

    def _publish_delayed_will(self, session: Session) -> None:
        session.will_handle = None
        if session.will is not None and session.connection is None:
            will, session.will = session.will, None
            self.publish(message_from_will(will, session.client_id, self.loop.time()))
            if session.recorder is not None:
                session.recorder.will_cleared(session)

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
            if message.payload:
                self.retained.set(message)
                if recorder is not None:
                    recorder.retained_set(message)
            else:
                self.retained.clear(message.topic)
                if recorder is not None:
                    recorder.retained_cleared(message.topic)
        return self.route(message)

    def _deliver_point_to_point(self, message: Message, client_id: str) -> int:
        """ApsaraMQ point-to-point: `<parent>/p2p/<ClientId>` goes to that client alone, subscribed or not."""
        session = self.sessions.get(client_id)
        if session is None:
            self.stats.messages_dropped += 1
            return 0
        self._deliver(session, Delivery(message, message.qos, False), {})
        self.stats.messages_routed += 1
        return 1

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
                if session is None:
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
            if not session.queue(delivery, self.settings.max_queued_messages):
                self.stats.messages_dropped += 1
        else:
            self.stats.messages_dropped += 1
