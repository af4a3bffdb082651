"""Routing: where a published message goes.

:class:`Router` is what the broker's handlers and its core ask of routing; :class:`LocalRouter`
routes within this process, through the subscriptions' topic tree to the sessions of this
broker. Another router (several processes or nodes sharing a message bus) would take its place
behind the same operations without the protocol or the packet handlers changing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from certmq.auth.topics import may_receive
from certmq.broker.messages import Delivery, Message
from certmq.broker.quotas import retained_fits
from certmq.broker.retained import RetainedStore
from certmq.broker.session import Session
from certmq.broker.stats import BrokerStats
from certmq.broker.subscriptions import SharedGroup, SubscriptionEntry, SubscriptionIndex
from certmq.config import MqttSection

if TYPE_CHECKING:
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


class Router(Protocol):
    """How messages travel between the sessions: subscriptions, retained messages, and queues."""

    # Where the changes to durable state are recorded (certmq.broker.recorder); None: nowhere.
    recorder: Recorder | None

    def publish(self, message: Message) -> int:
        """Keep a retained message and deliver ``message`` to every session it is for; the number
        of deliveries."""
        ...

    def subscribe(self, session: Session, entry: SubscriptionEntry) -> bool:
        """Add or replace a subscription of ``session``; True when it existed."""
        ...

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        """Remove a subscription of ``session``; True when it existed."""
        ...

    def unsubscribe_all(self, session: Session) -> None:
        """The session ends: none of its subscriptions routes any more."""
        ...

    def resubscribe(self, session: Session) -> None:
        """A session restored from an earlier run: its subscriptions route again."""
        ...

    def queue(self, session: Session, delivery: Delivery) -> None:
        """Keep a QoS 1 or 2 delivery in ``session`` for later, or drop it (and count it) when the
        session's queue is full."""
        ...

    def count_queue_full(self) -> None:
        """A delivery was dropped for a full queue."""
        ...

    def retained_fits(self, message: Message) -> bool:
        """Whether retained ``message`` may be kept within the limits on retained messages."""
        ...

    def refuse_retained(self, message: Message) -> None:
        """Retained ``message`` is not kept (it is over the limits)."""
        ...

    def retained_matching(self, topic_filter: str) -> Iterable[Message]:
        """The retained messages whose topics ``topic_filter`` matches, for a new subscription."""
        ...


class LocalRouter:
    """Routes within this process: one topic tree, this broker's sessions."""

    def __init__(
        self,
        settings: MqttSection,
        sessions: dict[str, Session],
        subscriptions: SubscriptionIndex,
        retained: RetainedStore,
        stats: BrokerStats,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.subscriptions = subscriptions
        self.retained = retained
        self.stats = stats
        self.recorder: Recorder | None = None
        # True when another router hands each message of a shared subscription to one member
        # of all the brokers' (a cluster's): route() then leaves shared groups to it, and it
        # calls deliver_shared().
        self.shared_elsewhere = False

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

    def unsubscribe_all(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(session.client_id, topic_filter)
        session.subscriptions.clear()

    def resubscribe(self, session: Session) -> None:
        for entry in session.subscriptions.values():
            self.subscriptions.add(entry)

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

    def retained_matching(self, topic_filter: str) -> Iterable[Message]:
        return self.retained.matching(topic_filter)

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
                    if self.shared_elsewhere:
                        continue
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
                    if self.shared_elsewhere:
                        continue
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

    def deliver_shared(self, message: Message, group: str, topic_filter: str) -> int:
        """Hand ``message`` to one member of ``$share/{group}/{topic_filter}`` here (chosen for
        this broker among all, see ``shared_elsewhere``); the number of deliveries (0 or 1)."""
        shared = self.subscriptions.shared_group(group, topic_filter)
        entry = None if shared is None else shared.pick(self._is_online)
        if entry is None:
            self.stats.messages_dropped += 1
            return 0
        session = self.sessions.get(entry.client_id)
        if session is None or (entry.filtered and not may_receive(session.permissions, message.topic)):
            return 0
        qos = entry.qos if entry.qos < message.qos else message.qos
        sid = entry.subscription_id
        self._deliver(
            session,
            Delivery(
                message, qos, message.retain and entry.retain_as_published, () if sid is None else (sid,)
            ),
            {},
        )
        self.stats.messages_routed += 1
        return 1

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
