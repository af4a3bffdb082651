"""What happens on PUBLISH from a client: the topic limits and rules, the retained quota, then
the message routed and acknowledged (PUBACK; PUBREC, and PUBCOMP once the client releases it).

The protocol has resolved the topic alias and checked the negotiated rules before the handler
sees the packet (certmq.mqtt.server_connection).
"""

from __future__ import annotations

import logging
from typing import Any

from certmq.auth.topics import may_publish
from certmq.broker.client_connection import ClientConnection
from certmq.broker.messages import FORWARDED_PROPERTIES, Message
from certmq.mqtt.errors import MQTTError
from certmq.mqtt.packets import Publish
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_events import IncomingReleased

log = logging.getLogger("certmq.connection")


def handle_publish(connection: ClientConnection, packet: Publish) -> None:
    session = connection.session
    assert session is not None
    core = connection.core
    core.stats.messages_received += 1
    topic = packet.topic
    properties = packet.properties
    expires_at = None
    forwarded: dict[int, Any] = {}
    if properties:
        expiry = properties.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
        if expiry is not None:
            expires_at = connection.now() + expiry
        for key in FORWARDED_PROPERTIES:
            value = properties.get(key)
            if value is not None:
                forwarded[key] = value
    if len(topic) > core.longest_unchecked_topic and not core.topic_within_limits(topic):
        log.debug("%s published to a topic over the topic limits", connection.client_id)
        _answer_refused(connection, packet, ReasonCode.TOPIC_NAME_INVALID)
        return
    qos = packet.qos
    permissions = session.permissions
    # The test before the call spares it on the common path: no rules, an ordinary topic.
    if (permissions is not None or topic[0] == "$") and not may_publish(permissions, topic):
        log.info("%s may not publish to %s", connection.client_id, topic)
        core.stats.publishes_denied += 1
        _answer_refused(connection, packet, ReasonCode.NOT_AUTHORIZED)
        return
    message = Message(topic, packet.payload, qos, packet.retain, forwarded, expires_at, connection.client_id)
    protocol = connection.protocol
    if packet.retain and qos and protocol.protocol_version == 5 and not core.retained_fits(message):
        # A publisher that can be told is refused outright, so that it knows to try again;
        # otherwise the message is delivered and not kept (LocalRouter.publish).
        core.refuse_retained(message)
        _answer_refused(connection, packet, ReasonCode.QUOTA_EXCEEDED)
        return
    if qos == 0:
        core.publish(message)
    elif qos == 1:
        message.packet_id = packet.packet_id  # type: ignore[assignment]
        core.publish(message)
        protocol.send_puback(packet.packet_id)  # type: ignore[arg-type]
    else:
        packet_id = message.packet_id = packet.packet_id  # type: ignore[assignment]
        assert packet_id is not None
        try:
            new = protocol.start_incoming_qos2(packet_id)
        except MQTTError as error:
            connection.close(error.reason_code, str(error), publish_will=True)
            return
        if new:
            core.publish(message)
            if session.recorder is not None:
                # After the message: a log cut between the two must not keep the id alone,
                # which would drop the client's retry as a duplicate.
                session.recorder.incoming_qos2_added(session, packet_id)
        protocol.send_pubrec(packet_id)


def _answer_refused(connection: ClientConnection, packet: Publish, reason_code: int) -> None:
    """Drop a refused publish: 5.0 clients are told ``reason_code`` in PUBACK / PUBREC."""
    if connection.protocol.refuse_publish(packet, reason_code):
        session = connection.session
        assert session is not None and packet.packet_id is not None
        if session.recorder is not None:
            session.recorder.incoming_qos2_added(session, packet.packet_id)


def incoming_released(connection: ClientConnection, event: IncomingReleased) -> None:
    """The client released a QoS 2 PUBLISH (PUBREL): its packet id is free again."""
    session = connection.session
    assert session is not None
    if session.recorder is not None:
        session.recorder.incoming_qos2_removed(session, event.packet_id)
