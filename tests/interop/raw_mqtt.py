"""A deliberately small MQTT client that speaks plain bytes over a socket.

The interoperability tests use it where a library client hides what the broker sent (topic
aliases, the exact packets in flight, DISCONNECT reason codes) or where the test must misbehave
(send a malformed packet, never send CONNECT, stop sending PINGREQ). It is written from the
MQTT 3.1.1 and 5.0 specifications and shares no code with the broker under test.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Any

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# MQTT 5.0 property identifiers and their wire types.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILL_DELAY_INTERVAL = 0x18

_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _BYTE,
    0x02: _FOUR,
    0x03: _STRING,
    0x08: _STRING,
    0x09: _BINARY,
    0x0B: _VARINT,
    0x11: _FOUR,
    0x12: _STRING,
    0x13: _TWO,
    0x15: _STRING,
    0x16: _BINARY,
    0x17: _BYTE,
    0x18: _FOUR,
    0x19: _BYTE,
    0x1A: _STRING,
    0x1C: _STRING,
    0x1F: _STRING,
    0x21: _TWO,
    0x22: _TWO,
    0x23: _TWO,
    0x24: _BYTE,
    0x25: _BYTE,
    0x26: _PAIR,
    0x27: _FOUR,
    0x28: _BYTE,
    0x29: _BYTE,
    0x2A: _BYTE,
}
# Properties that may appear more than once; decoded as lists.
REPEATABLE = {USER_PROPERTY, SUBSCRIPTION_IDENTIFIER}


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        digit, value = value % 128, value // 128
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def encode_properties(properties: dict[int, Any] | None) -> bytes:
    body = bytearray()
    for identifier, value in (properties or {}).items():
        values = value if identifier in REPEATABLE and isinstance(value, list) else [value]
        for item in values:
            kind = PROPERTY_TYPES[identifier]
            body += encode_varint(identifier)
            if kind == _BYTE:
                body.append(item)
            elif kind == _TWO:
                body += struct.pack("!H", item)
            elif kind == _FOUR:
                body += struct.pack("!I", item)
            elif kind == _VARINT:
                body += encode_varint(item)
            elif kind in (_STRING, _BINARY):
                body += encode_string(item)
            else:
                body += encode_string(item[0]) + encode_string(item[1])
    return encode_varint(len(body)) + bytes(body)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int) -> bytes:
        if count > self.remaining():
            raise ValueError("packet shorter than its fields")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def two(self) -> int:
        return int(struct.unpack("!H", self.take(2))[0])

    def four(self) -> int:
        return int(struct.unpack("!I", self.take(4))[0])

    def varint(self) -> int:
        value, multiplier = 0, 1
        for _ in range(4):
            digit = self.byte()
            value += (digit & 0x7F) * multiplier
            if not digit & 0x80:
                return value
            multiplier *= 128
        raise ValueError("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self.take(self.two())

    def string(self) -> str:
        return self.binary().decode()

    def properties(self) -> dict[int, Any]:
        end = self.varint() + self.offset
        found: dict[int, Any] = {}
        while self.offset < end:
            identifier = self.varint()
            kind = PROPERTY_TYPES[identifier]
            value: Any
            if kind == _BYTE:
                value = self.byte()
            elif kind == _TWO:
                value = self.two()
            elif kind == _FOUR:
                value = self.four()
            elif kind == _VARINT:
                value = self.varint()
            elif kind == _STRING:
                value = self.string()
            elif kind == _BINARY:
                value = self.binary()
            else:
                value = (self.string(), self.string())
            if identifier in REPEATABLE:
                found.setdefault(identifier, []).append(value)
            else:
                found[identifier] = value
        return found


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes
    size: int  # the whole packet on the wire, fixed header included
    # Decoded fields, filled for the packet kinds the tests read.
    packet_id: int | None = None
    reason_code: int | None = None
    reason_codes: list[int] = field(default_factory=list)
    session_present: bool = False
    properties: dict[int, Any] = field(default_factory=dict)
    topic: str = ""
    payload: bytes = b""

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.kind, f"type {self.kind}")

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def retain(self) -> bool:
        return bool(self.flags & 1)

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    def __repr__(self) -> str:
        details = [self.name]
        if self.kind == PUBLISH:
            details.append(
                f"topic={self.topic!r} qos={self.qos} retain={self.retain} payload={self.payload[:40]!r}"
            )
        if self.packet_id is not None:
            details.append(f"id={self.packet_id}")
        if self.reason_code is not None:
            details.append(f"reason=0x{self.reason_code:02X}")
        if self.properties:
            details.append(f"properties={self.properties}")
        return "<" + " ".join(details) + ">"


class ConnectionClosed(Exception):
    """The broker closed the connection."""


class RawClient:
    def __init__(
        self,
        host: str,
        port: int,
        version: int = 5,
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str = "localhost",
    ) -> None:
        self.version = version
        self.timeout = timeout
        plain = socket.create_connection((host, port), timeout=timeout)
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls.wrap_socket(plain, server_hostname=server_hostname) if tls else plain
        self._buffer = b""
        self._next_id = 0
        self.closed = False
        self.skipped: list[Packet] = []

    # ---- sending -------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_packet(self, kind: int, flags: int, body: bytes) -> None:
        self.send_raw(bytes([(kind << 4) | flags]) + encode_varint(len(body)) + body)

    def next_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def send_connect(
        self,
        client_id: str,
        keep_alive: int = 60,
        clean: bool = True,
        properties: dict[int, Any] | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: dict[int, Any] | None = None,
    ) -> None:
        flags = 0x02 if clean else 0
        if will is not None:
            _, _, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        body = encode_string("MQTT") + bytes([self.version, flags]) + struct.pack("!H", keep_alive)
        if self.version == 5:
            body += encode_properties(properties)
        body += encode_string(client_id)
        if will is not None:
            if self.version == 5:
                body += encode_properties(will_properties)
            body += encode_string(will[0]) + encode_string(will[1])
        self.send_packet(CONNECT, 0, body)

    def connect(self, client_id: str, **options: Any) -> Packet:
        self.send_connect(client_id, **options)
        connack = self.read_packet()
        assert connack.kind == CONNACK, f"expected CONNACK, got {connack!r}"
        return connack

    def subscribe(self, filters: list[tuple[str, int]], properties: dict[int, Any] | None = None) -> Packet:
        """Subscribe and wait for SUBACK; each filter comes with its options byte (QoS and, on 5.0,
        no-local 0x04, retain-as-published 0x08, retain handling << 4)."""
        packet_id = self.next_packet_id()
        body = struct.pack("!H", packet_id)
        if self.version == 5:
            body += encode_properties(properties)
        for topic_filter, options in filters:
            body += encode_string(topic_filter) + bytes([options])
        self.send_packet(SUBSCRIBE, 0x02, body)
        suback = self.read_until(SUBACK)
        assert suback.packet_id == packet_id
        return suback

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
        packet_id: int | None = None,
    ) -> int | None:
        body = encode_string(topic)
        if qos:
            packet_id = packet_id or self.next_packet_id()
            body += struct.pack("!H", packet_id)
        if self.version == 5:
            body += encode_properties(properties)
        body += payload
        self.send_packet(PUBLISH, (qos << 1) | (1 if retain else 0), body)
        return packet_id

    def acknowledge(self, packet: Packet) -> None:
        """Send what the receiver of ``packet`` must send: PUBACK, PUBREC or PUBCOMP."""
        assert packet.packet_id is not None
        if packet.kind == PUBLISH and packet.qos == 1:
            self.send_packet(PUBACK, 0, struct.pack("!H", packet.packet_id))
        elif packet.kind == PUBLISH and packet.qos == 2:
            self.send_packet(PUBREC, 0, struct.pack("!H", packet.packet_id))
        elif packet.kind == PUBREL:
            self.send_packet(PUBCOMP, 0, struct.pack("!H", packet.packet_id))
        elif packet.kind == PUBREC:
            self.send_packet(PUBREL, 0x02, struct.pack("!H", packet.packet_id))

    def disconnect(self, reason_code: int = 0, properties: dict[int, Any] | None = None) -> None:
        body = b""
        if self.version == 5 and (reason_code or properties):
            body = bytes([reason_code]) + encode_properties(properties)
        self.send_packet(DISCONNECT, 0, body)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    # ---- receiving -----------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet from the broker in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no packet from the broker in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed("the broker closed the connection")
        self._buffer += chunk

    def read_packet(self, timeout: float | None = None) -> Packet:
        """The next packet; raises TimeoutError, or ConnectionClosed at end of stream."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            header = self._complete_packet()
            if header is not None:
                return header
            self._fill(deadline)

    def _complete_packet(self) -> Packet | None:
        if len(self._buffer) < 2:
            return None
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(self._buffer):
                return None
            digit = self._buffer[index]
            length += (digit & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not digit & 0x80:
                break
        if len(self._buffer) < index + length:
            return None
        first = self._buffer[0]
        body = self._buffer[index : index + length]
        self._buffer = self._buffer[index + length :]
        return self._decode(first >> 4, first & 0x0F, body, index + length)

    def _decode(self, kind: int, flags: int, body: bytes, size: int) -> Packet:
        packet = Packet(kind, flags, body, size)
        reader = Reader(body)
        v5 = self.version == 5
        if kind == CONNACK:
            packet.session_present = bool(reader.byte() & 1)
            packet.reason_code = reader.byte()
            if v5 and reader.remaining():
                packet.properties = reader.properties()
        elif kind == PUBLISH:
            packet.topic = reader.string()
            if packet.qos:
                packet.packet_id = reader.two()
            if v5:
                packet.properties = reader.properties()
            packet.payload = reader.take(reader.remaining())
        elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            packet.packet_id = reader.two()
            if kind == SUBACK:
                if v5:
                    packet.properties = reader.properties()
                packet.reason_codes = list(reader.take(reader.remaining()))
            elif kind == UNSUBACK and v5:
                packet.properties = reader.properties()
                packet.reason_codes = list(reader.take(reader.remaining()))
            elif v5 and reader.remaining():
                packet.reason_code = reader.byte()
                if reader.remaining():
                    packet.properties = reader.properties()
        elif kind == DISCONNECT and v5:
            packet.reason_code = reader.byte() if reader.remaining() else 0
            if reader.remaining():
                packet.properties = reader.properties()
        return packet

    def read_until(self, kind: int, timeout: float | None = None) -> Packet:
        """Read packets until one of ``kind``; the others read on the way are kept, unanswered,
        in ``skipped`` for the caller to inspect."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            packet = self.read_packet(max(0.0, deadline - time.monotonic()))
            if packet.kind == kind:
                return packet
            self.skipped.append(packet)

    def read_publishes(
        self, count: int, timeout: float | None = None, acknowledge: bool = True
    ) -> list[Packet]:
        """Read ``count`` PUBLISH packets (acknowledging QoS 1 and 2 unless told not to),
        completing QoS 2 flows as PUBREL arrives."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        received: list[Packet] = []
        while len(received) < count:
            packet = self.read_packet(max(0.0, deadline - time.monotonic()))
            if packet.kind == PUBLISH:
                received.append(packet)
                if acknowledge and packet.qos:
                    self.acknowledge(packet)
            elif packet.kind == PUBREL:
                self.acknowledge(packet)
            else:
                self.skipped.append(packet)
        return received

    def wait_closed(self, timeout: float) -> list[Packet]:
        """Read until the broker closes the connection; returns the packets read on the way.
        Raises TimeoutError if it is still open after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        packets: list[Packet] = []
        while True:
            try:
                packets.append(self.read_packet(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                return packets
