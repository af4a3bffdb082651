"""Errors raised by the sans-io layer. Each carries the MQTT 5.0 reason code to answer with."""

from __future__ import annotations

from certmq.mqtt.packets import Packet
from certmq.mqtt.reason_codes import ReasonCode


class MQTTError(Exception):
    """Base class. ``reason_code`` is what a 5.0 peer is told in DISCONNECT or CONNACK.

    When :class:`certmq.mqtt.decoding.PacketDecoder` raises, ``packets`` holds the good packets
    that came before the bad one in the same ``feed`` call: the connection handles those
    first, then closes.
    """

    reason_code: int = ReasonCode.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code
        self.packets: list[Packet] = []


class MalformedPacket(MQTTError):
    """The bytes are not a valid packet (spec 1.5 data representation, 2.x packet format)."""

    reason_code = ReasonCode.MALFORMED_PACKET


class ProtocolError(MQTTError):
    """The packet parses but breaks a protocol rule (a property where it may not be, a second CONNECT...)."""

    reason_code = ReasonCode.PROTOCOL_ERROR


class PacketTooLarge(MQTTError):
    """The packet is larger than the Maximum Packet Size in force."""

    reason_code = ReasonCode.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(MQTTError):
    """CONNECT names a protocol level this broker does not speak (answered with CONNACK, then close).

    ``protocol_version`` is the level the client asked for, so the broker can pick the
    CONNACK format the client is most likely to understand.
    """

    reason_code = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(
        self, message: str, reason_code: int | None = None, *, protocol_version: int | None = None
    ) -> None:
        super().__init__(message, reason_code)
        self.protocol_version = protocol_version
