"""What happens on SUBSCRIBE and UNSUBSCRIBE: each filter against the topic limits, the
client's number of subscriptions and the topic rules; the subscription added (a shared one to
its group); the retained messages it matches sent, as its Retain Handling asks."""

from __future__ import annotations

import logging

from certmq.auth.topics import may_receive, may_subscribe
from certmq.broker.client_connection import ClientConnection
from certmq.broker.messages import Delivery
from certmq.broker.session import Session
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.mqtt.packets import Subscribe, Unsubscribe
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.topics import parse_shared_subscription

log = logging.getLogger("certmq.connection")


def handle_subscribe(connection: ClientConnection, packet: Subscribe) -> None:
    session = connection.session
    assert session is not None
    core = connection.core
    subscription_ids = packet.properties.get(PropertyId.SUBSCRIPTION_IDENTIFIER)
    subscription_id = subscription_ids[0] if subscription_ids else None
    codes: list[int] = []
    retained: list[Delivery] = []
    for subscription in packet.subscriptions:
        group, topic_filter = parse_shared_subscription(subscription.topic_filter)
        refused = _over_limits(connection, session, subscription.topic_filter)
        if refused is not None:
            codes.append(refused)
            continue
        if not may_subscribe(session.permissions, subscription.topic_filter):
            log.info("%s may not subscribe to %s", connection.client_id, subscription.topic_filter)
            codes.append(core.subscribe_denied_code)
            continue
        entry = SubscriptionEntry(
            client_id=connection.client_id,
            topic_filter=subscription.topic_filter,
            qos=subscription.qos,
            no_local=subscription.no_local,
            retain_as_published=subscription.retain_as_published,
            retain_handling=subscription.retain_handling,
            subscription_id=subscription_id,
        )
        existed = core.subscribe(session, entry)
        codes.append(subscription.qos)
        send_retained = subscription.retain_handling == 0 or (
            subscription.retain_handling == 1 and not existed
        )
        if group is None and send_retained:
            ids = () if subscription_id is None else (subscription_id,)
            now = connection.now()
            permissions = session.permissions
            for message in core.retained_matching(topic_filter):
                if not message.expired(now) and may_receive(permissions, message.topic):
                    qos = min(message.qos, subscription.qos)
                    retained.append(Delivery(message, qos, True, ids))
    connection.protocol.send_suback(packet.packet_id, codes)
    for delivery in retained:
        connection.deliver(delivery)


def handle_unsubscribe(connection: ClientConnection, packet: Unsubscribe) -> None:
    session = connection.session
    assert session is not None
    core = connection.core
    codes: list[int] = [
        ReasonCode.SUCCESS if core.unsubscribe(session, topic_filter) else ReasonCode.NO_SUBSCRIPTION_EXISTED
        for topic_filter in packet.topic_filters
    ]
    connection.protocol.send_unsuback(packet.packet_id, codes)


def _over_limits(connection: ClientConnection, session: Session, topic_filter: str) -> int | None:
    """The SUBACK code refusing a filter over the topic limits (0x8F) or a new subscription
    beyond the client's (0x97); None when it is within them."""
    core = connection.core
    if not core.topic_within_limits(topic_filter):
        log.debug("%s subscribed to a filter over the topic limits", connection.client_id)
        return ReasonCode.TOPIC_FILTER_INVALID
    if (
        len(session.subscriptions) >= connection.settings.max_subscriptions_per_client
        and topic_filter not in session.subscriptions
    ):
        log.debug(
            "%s has %d subscriptions, the most a client may have",
            connection.client_id,
            len(session.subscriptions),
        )
        core.stats.subscriptions_over_limit += 1
        return ReasonCode.QUOTA_EXCEEDED
    return None
