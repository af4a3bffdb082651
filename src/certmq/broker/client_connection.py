"""What a packet handler may use of the client connection it serves.

The handlers (connect.py, publish.py, subscribe.py, disconnect.py, delivery.py) take their
connection as :class:`ClientConnection`, which :class:`certmq.broker.connection.MQTTConnection`
implements over asyncio: the state the broker keeps per connection, its protocol state machine,
and the few things only the transport can do (the time, closing, waiting for a decision).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from certmq.broker.subscriber import LiveConnection

if TYPE_CHECKING:
    from certmq.auth.identity import Identity
    from certmq.broker.core import BrokerCore
    from certmq.broker.messages import Delivery
    from certmq.broker.session import Session
    from certmq.config import MqttSection
    from certmq.mqtt.server_connection import ServerConnection


# What a CONNECT waits for before it is concluded: an authentication outcome, a claim.
T = TypeVar("T")


class Listener:
    """What a connection needs to know about the listener that accepted it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class ClientConnection(LiveConnection, Protocol):
    core: BrokerCore[Any]
    settings: MqttSection
    # The MQTT rules of this connection: what was negotiated, its flows, what it queued to send.
    protocol: ServerConnection[Delivery]
    listener: Listener
    # The client's certificate (DER) and a way to its verified issuer, on mutual TLS.
    peer_certificate: bytes | None
    verified_issuer: Callable[[], bytes | None] | None
    # From the CONNECT on.
    username: str | None
    identity: Identity
    # From when the CONNECT is accepted.
    session: Session | None
    connected_at: datetime

    def now(self) -> float:
        """The time on the clock the protocol's deadlines and message expiry count on."""
        ...

    def refuse(self, reason_code: int, reason: str) -> None:
        """Refuse the CONNECT with ``reason_code`` and close."""
        ...

    def decide_later(self, pending: Awaitable[T], conclude: Callable[[T], None]) -> None:
        """The CONNECT is decided by ``pending``: read nothing more until then, then
        ``conclude`` with its outcome (unless the connection closed meanwhile)."""
        ...

    def deadline_changed(self) -> None:
        """The protocol's next deadline moved (the CONNECT was accepted): wake for it."""
        ...
