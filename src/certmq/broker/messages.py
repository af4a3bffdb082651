"""An application message as the broker holds it between receiving and delivering it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from certmq.mqtt.properties import PropertyId

# Publish properties that travel with the message to its subscribers (MQTT 5.0 3.3.2.3);
# Topic Alias and Subscription Identifier are per-connection and are not forwarded.
FORWARDED_PROPERTIES = (
    PropertyId.PAYLOAD_FORMAT_INDICATOR,
    PropertyId.CONTENT_TYPE,
    PropertyId.RESPONSE_TOPIC,
    PropertyId.CORRELATION_DATA,
    PropertyId.USER_PROPERTY,
)

# What holding one user property costs beside its text: a tuple of two str objects and a list
# slot, 160 bytes in CPython. Counting it keeps a message of many tiny user properties from
# weighing next to nothing against the quotas while it takes megabytes to hold.
USER_PROPERTY_OVERHEAD = 160


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    # The forwarded properties only (see FORWARDED_PROPERTIES); never mutated after creation.
    properties: dict[int, Any] = field(default_factory=dict)
    # Monotonic deadline after which the message must not be delivered, from Message Expiry Interval.
    expires_at: float | None = None
    # Client id of the publisher (also of a will's owner), for no-local subscriptions; None for $SYS.
    sender: str | None = None
    # message_size's result once computed (the message does not change), so that each of its
    # deliveries to a session costs an attribute read, not a count.
    size: int = field(default=-1, compare=False, repr=False)
    # Its id in the journal, once its body is recorded there (see certmq.broker.recorder).
    journal_id: int = 0
    # The packet id its publisher sent it with (QoS 1 and 2), to answer it once the cluster has
    # stored it, or refused to (certmq.cluster.stream_writes).
    packet_id: int = field(default=0, compare=False, repr=False)

    def remaining_expiry(self, now: float) -> int | None:
        """Seconds left, as the Message Expiry Interval to send on; None when it never expires."""
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - now + 0.999))

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(slots=True)
class Delivery:
    """A message on its way to one session, with the QoS and flags computed for that session."""

    message: Message
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    # Its id in the journal, once recorded for a session that outlives its connection.
    journal_id: int = 0


def message_size(message: Message) -> int:
    """What ``message`` counts for against the queue and retained quotas (docs/configuration.md,
    "Limits"): its topic, payload and forwarded properties."""
    size = message.size
    if size < 0:
        properties = message.properties
        if properties:
            size = content_size(message.topic, message.payload, properties)
        else:  # most messages: no call
            size = len(message.topic) + len(message.payload)
        message.size = size
    return size


def content_size(topic: str, payload: bytes, properties: dict[int, Any]) -> int:
    """The size of a message (or a will) to be held: topic, payload, and the properties with
    text or bytes, each user property with what holding it costs."""
    size = len(topic) + len(payload)
    if properties:
        for key, value in properties.items():
            if key == PropertyId.USER_PROPERTY:
                for name, text in value:
                    size += len(name) + len(text) + USER_PROPERTY_OVERHEAD
            elif isinstance(value, str | bytes):
                size += len(value)
    return size
