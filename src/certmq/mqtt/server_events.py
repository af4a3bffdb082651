"""What the server side of an MQTT connection tells the application
(certmq.mqtt.server_connection): its state, and the events next_event returns besides the
packets the application acts on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NewType, TypeAlias

from certmq.mqtt.packets import Connect, Disconnect, Publish, Subscribe, Unsubscribe
from certmq.mqtt.session_flows import OutgoingFlight

# A connection's state is compared on every packet and every delivery: a NewType of int is an
# exact int at run time, which the interpreter compares faster than an IntEnum's members.
ConnectionState = NewType("ConnectionState", int)

AWAITING_CONNECT = ConnectionState(0)
# CONNECT received: the application decides (accept or refuse); packets after it wait.
AUTHENTICATING = ConnectionState(1)
CONNECTED = ConnectionState(2)
CLOSED = ConnectionState(3)


# -- events ------------------------------------------------------------------------------------
# Besides these, next_event returns the packets the application acts on: Connect (the state
# is AUTHENTICATING until it calls accept or refuse), Publish (its topic resolved from its
# alias), Subscribe, Unsubscribe, and Disconnect (session_expiry_interval updated); and each
# OutgoingFlight that lands.


@dataclass(slots=True)
class FlightReleased:
    """The client received a QoS 2 delivery (PUBREC); PUBREL is queued."""

    packet_id: int


@dataclass(slots=True)
class IncomingReleased:
    """The client released a QoS 2 PUBLISH it sent (PUBREL); PUBCOMP is queued."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    """The protocol itself refused the CONNECT (CONNACK queued); the connection is closed."""

    reason_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The client broke the protocol; the connection is closed (a 5.0 client that was connected
    is sent DISCONNECT with ``reason_code``). ``malformed``: its bytes did not decode into valid
    packets (the decoder's verdict), as opposed to a valid packet breaking a rule.
    ``packet_type``: the packet that broke a rule, when one did."""

    reason_code: int
    reason: str
    malformed: bool
    packet_type: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectTimeout:
    """No CONNECT accepted within the connect timeout; the connection is closed."""


@dataclass(frozen=True, slots=True)
class KeepAliveTimeout:
    """No packet within one and a half keep-alive periods; the connection is closed."""


Event: TypeAlias = (
    Connect
    | Publish
    | Subscribe
    | Unsubscribe
    | Disconnect
    | OutgoingFlight[Any]
    | FlightReleased
    | IncomingReleased
    | ConnectRefused
    | ProtocolViolation
)
