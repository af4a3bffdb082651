"""Session state (MQTT 3.1.1 3.1.2.4, 5.0 4.1): what outlives a network connection.

A session holds the client's subscriptions, the QoS 1 and 2 messages in flight in both
directions and the messages queued while the client is offline or its window is full.
It does no I/O: the connection that currently carries it turns deliveries into packets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.broker.messages import Delivery, message_size
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.mqtt.session_flows import NEVER_EXPIRES, OutgoingFlight

if TYPE_CHECKING:
    import asyncio

    from certmq.auth.topics import ClientPermissions
    from certmq.broker.recorder import Recorder
    from certmq.broker.subscriber import Subscriber
    from certmq.mqtt.packets import Will

# Named here too, where they were defined before they found their homes.
__all__ = ["NEVER_EXPIRES", "Delivery", "OutgoingFlight", "Session", "SubscriptionEntry"]


@dataclass(slots=True)
class Session:
    client_id: str
    protocol_version: int
    expiry_interval: int = 0
    # The identity that created the session (its owner key, certmq.auth.ownership); "" when
    # unknown (a session saved by a certmq that did not record it).
    owner: str = ""
    # Who the client connected as last, from which its topic permissions are compiled; kept
    # while it is offline, for its will.
    username: str | None = None
    identity: Identity = ANONYMOUS
    # Its topic permissions; None when no topic rules are configured.
    permissions: ClientPermissions | None = None
    subscriptions: dict[str, SubscriptionEntry] = field(default_factory=dict)
    inflight: dict[int, OutgoingFlight[Delivery]] = field(default_factory=dict)
    pending: deque[Delivery] = field(default_factory=deque)
    # Packet ids of QoS 2 PUBLISHes received and answered with PUBREC, waiting for PUBREL.
    incoming_qos2: set[int] = field(default_factory=set)
    # The connection that carries it; None while the client is away.
    connection: Subscriber | None = None
    will: Will | None = None
    expiry_handle: asyncio.TimerHandle | None = None
    will_handle: asyncio.TimerHandle | None = None
    dropped_messages: int = 0
    # The size (message_size) of the deliveries queued and in flight, held to mqtt.max_queued_bytes.
    held_bytes: int = 0
    # Where changes to the session are recorded: set while its expiry interval is above 0.
    recorder: Recorder | None = None
    # The packet id the next delivery sent to the client tries first (the protocol's to count).
    next_packet_id: int = 1

    def queue(self, delivery: Delivery, limit: int, byte_limit: int) -> bool:
        """Keep a delivery for later; False (and counted as dropped) when the queue is full:
        ``limit`` messages queued, or ``byte_limit`` bytes queued and in flight."""
        if len(self.pending) >= limit or not self.hold(delivery, byte_limit):
            self.dropped_messages += 1
            return False
        self.pending.append(delivery)
        if self.recorder is not None:
            self.recorder.delivery_queued(self, delivery)
        return True

    def hold(self, delivery: Delivery, byte_limit: int) -> bool:
        """Count a delivery the session is to keep (queued or in flight) against ``byte_limit``;
        False, and nothing counted, when it does not fit."""
        # Once per delivery: the size the message keeps saves a call when it has one.
        size = delivery.message.size
        if size < 0:
            size = message_size(delivery.message)
        held = self.held_bytes + size
        if held > byte_limit:
            return False
        self.held_bytes = held
        return True

    def release(self, delivery: Delivery) -> None:
        """A delivery the session held is gone: acknowledged, expired, or not sendable."""
        size = delivery.message.size
        if size < 0:
            size = message_size(delivery.message)
        self.held_bytes -= size

    def count_held_bytes(self) -> None:
        """Count anew what the queue and the messages in flight hold, for a session whose queue
        and flights were set directly (restored from disk)."""
        self.held_bytes = sum(message_size(delivery.message) for delivery in self.pending) + sum(
            message_size(flight.delivery.message) for flight in self.inflight.values()
        )
