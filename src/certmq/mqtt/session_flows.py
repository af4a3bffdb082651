"""The QoS 1 and 2 exchanges of an MQTT session, both ways, as the server keeps them.

They belong to the session, which outlives a connection (MQTT 4.1): the application keeps them
(:class:`SessionFlows`) and hands them to the connection that carries the session
(certmq.mqtt.server_connection), which keeps their rules. What the server sends is the
application's own delivery type, of which the protocol reads only what
:class:`OutgoingDelivery` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

# A session expiry interval that never ends (MQTT 5.0 3.1.2.11.2); a 3.1.1 session without
# clean session is one.
NEVER_EXPIRES = 0xFFFFFFFF
# Packet ids go from 1 to this (MQTT 2.2.1).
MAX_PACKET_ID = 65535


class ApplicationMessage(Protocol):
    """What a PUBLISH to the client is made of; ``expires_at`` is on the clock ``now`` counts."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def properties(self) -> dict[int, Any]: ...
    @property
    def expires_at(self) -> float | None: ...
    def remaining_expiry(self, now: float) -> int | None: ...


class OutgoingDelivery(Protocol):
    """A message on its way to this client, with the QoS and flags of its subscriptions."""

    @property
    def message(self) -> ApplicationMessage: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...
    @property
    def subscription_ids(self) -> tuple[int, ...]: ...


D = TypeVar("D", bound=OutgoingDelivery)


@dataclass(slots=True)
class OutgoingFlight(Generic[D]):
    """A QoS 1 or 2 delivery sent and not yet fully acknowledged. When it lands (acknowledged to
    the end: PUBACK, PUBCOMP; or refused by the client: PUBREC with an error), it leaves the
    session's flows, its packet id is free again, and next_event returns it."""

    delivery: D
    packet_id: int
    # False: waiting for PUBACK (QoS 1) or PUBREC (QoS 2); True: PUBREL sent, waiting for PUBCOMP.
    released: bool = False


class SessionFlows(Protocol[D]):
    """The QoS 1 and 2 exchanges of a session, both ways, which outlive its connections."""

    # Deliveries sent to the client and not yet acknowledged, by packet id.
    inflight: dict[int, OutgoingFlight[D]]
    # Packet ids of QoS 2 PUBLISHes received and answered with PUBREC, waiting for PUBREL.
    incoming_qos2: set[int]
    # The packet id the next delivery tries first: ids go round, skipping those in flight.
    next_packet_id: int


class NoSession:
    """The flows of a connection whose CONNECT is not accepted yet: none, and none may start."""

    inflight: dict[int, OutgoingFlight[Any]] = {}
    incoming_qos2: frozenset[int] = frozenset()
    next_packet_id = 1


# What a connection holds until its CONNECT is accepted.
NO_SESSION: Any = NoSession()
