"""How the broker's core sees the connections that carry sessions.

The core hands a session's connection the messages routed to it, tells it when another
connection takes its session over, and closes it (a revocation, an expired certificate):
:class:`Subscriber` is all it asks; :class:`LiveConnection` adds what it reads of a live
connection. The asyncio connection (certmq.broker.connection) implements both; the core
imports neither it nor its handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from certmq.broker.messages import Delivery
    from certmq.mqtt.server_events import ConnectionState


class Subscriber(Protocol):
    """The connection that carries a session, as the core reaches it."""

    def deliver(self, delivery: Delivery, cache: dict[Any, bytes] | None = None) -> None:
        """Send ``delivery`` to the client, or keep it in its session for later. ``cache`` holds
        packets encoded for the other subscribers of the same message, which may serve again."""
        ...

    def take_over(self, clean_start: bool) -> None:
        """Another connection has claimed this client id: close (MQTT 5.0 3.1.4-3)."""
        ...

    def close(self, reason_code: int | None, reason: str = "", *, publish_will: bool) -> None:
        """Close; a connected 5.0 client is told ``reason_code`` (and ``reason``) first."""
        ...

    def withdraw_acceptance(self, packet_id: int, reason_code: int) -> bool:
        """Refuse with ``reason_code`` the PUBLISH ``packet_id`` whose acknowledgement is held
        still; False when the client cannot be told so (3.1.1)."""
        ...


class LiveConnection(Subscriber, Protocol):
    """A live connection, as the core lists, revokes and times out (certificate expiry) them."""

    client_id: str  # "" until its CONNECT
    peer: str  # "address:port"

    @property
    def state(self) -> ConnectionState: ...
