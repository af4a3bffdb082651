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
    # Its id in the journal, once its body is recorded there (see certmq.broker.recorder).
    journal_id: int = 0

    def remaining_expiry(self, now: float) -> int | None:
        """Seconds left, as the Message Expiry Interval to send on; None when it never expires."""
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - now + 0.999))

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at
