"""A small MQTT 5.0 client on a blocking socket, for timing what one connection sees: its
CONNACK, and the moment the broker ends it (a DISCONNECT and its reason code, or the
connection closed). bench/cluster.py times revocations and takeovers with it, and
bench/cluster_adoption.py the sessions of a node that died.

It speaks only what those measurements need (CONNECT, CONNACK, DISCONNECT; SUBSCRIBE and QoS 1
PUBLISH), written from the MQTT 5.0 specification, and shares no code with the broker under
test.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PUBLISH, CONNACK, PUBACK, SUBACK, DISCONNECT = 3, 2, 4, 9, 14
TIMEOUT = 30.0


class ProbeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Identity:
    """A device certificate and its key (PEM files) for mutual TLS, and the CA of the server."""

    cert_file: Path
    key_file: Path
    server_ca_file: Path


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (128 if value else 0))
        if not value:
            return bytes(out)


def connect_packet(
    client_id: str, keep_alive: int = 300, *, clean_start: bool = True, expiry: int = 0
) -> bytes:
    """CONNECT, MQTT 5.0, no credentials; ``expiry``: the Session Expiry Interval (0: none)."""
    identifier = client_id.encode()
    properties = b"\x11" + struct.pack("!I", expiry) if expiry else b""
    body = (
        b"\x00\x04MQTT\x05"
        + bytes([0x02 if clean_start else 0x00])
        + struct.pack("!H", keep_alive)
        + _varint(len(properties))
        + properties
        + struct.pack("!H", len(identifier))
        + identifier
    )
    return bytes([0x10]) + _varint(len(body)) + body


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class Probe:
    """One MQTT connection. ``open`` connects the socket (and completes the TLS handshake);
    ``connect`` sends CONNECT and returns the CONNACK's reason code; ``watch_end`` starts a
    thread that records when the broker ends the connection."""

    def __init__(self, port: int, identity: Identity | None = None) -> None:
        self.port = port
        self.identity = identity
        self.sock: socket.socket | ssl.SSLSocket | None = None
        self._buffer = b""
        self.ended_at: float | None = None
        self.end_reason: int | None = None  # a DISCONNECT's reason code; None: closed without one
        self._watcher: threading.Thread | None = None
        self.session_present = False
        self._packet_id = 0

    def open(self) -> Probe:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.identity is None:
            self.sock = raw
            return self
        context = ssl.create_default_context(cafile=str(self.identity.server_ca_file))
        context.load_cert_chain(str(self.identity.cert_file), str(self.identity.key_file))
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        return self

    def send_connect(self, client_id: str, *, clean_start: bool = True, expiry: int = 0) -> None:
        assert self.sock is not None
        self.sock.sendall(connect_packet(client_id, clean_start=clean_start, expiry=expiry))

    def connack(self) -> int:
        """The reason code of the CONNACK that answers the CONNECT sent."""
        kind, body = self._read_packet()
        if kind != CONNACK or len(body) < 2:
            raise ProbeError(f"expected CONNACK, got packet type {kind}")
        self.session_present = bool(body[0] & 1)
        return body[1]

    def connect(self, client_id: str, *, clean_start: bool = True, expiry: int = 0) -> int:
        self.send_connect(client_id, clean_start=clean_start, expiry=expiry)
        return self.connack()

    def _next_id(self) -> bytes:
        self._packet_id = self._packet_id % 65535 + 1
        return struct.pack("!H", self._packet_id)

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """SUBSCRIBE one filter; the SUBACK's reason code."""
        assert self.sock is not None
        body = self._next_id() + b"\x00" + _string(topic_filter) + bytes([qos])
        self.sock.sendall(bytes([0x82]) + _varint(len(body)) + body)
        kind, answer = self._read_packet()
        if kind != SUBACK:
            raise ProbeError(f"expected SUBACK, got packet type {kind}")
        return answer[-1]

    def publish(self, topic: str, payload: bytes) -> int:
        """PUBLISH at QoS 1; the PUBACK's reason code."""
        assert self.sock is not None
        body = _string(topic) + self._next_id() + b"\x00" + payload
        self.sock.sendall(bytes([0x32]) + _varint(len(body)) + body)
        kind, answer = self._read_packet()
        if kind != PUBACK:
            raise ProbeError(f"expected PUBACK, got packet type {kind}")
        return answer[2] if len(answer) > 2 else 0

    def receive(self, count: int, timeout: float) -> int:
        """Take up to ``count`` PUBLISHes (acknowledging those of QoS 1) within ``timeout``;
        how many came."""
        assert self.sock is not None
        received = 0
        deadline = time.monotonic() + timeout
        while received < count and time.monotonic() < deadline:
            try:
                kind, body = self._read_packet(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if kind != PUBLISH:
                continue
            received += 1
            (length,) = struct.unpack_from("!H", body)
            packet_id = body[2 + length : 4 + length]
            self.sock.sendall(bytes([0x40, 0x02]) + packet_id)
        return received

    def watch_end(self) -> None:
        """Record, in a thread, when the broker sends DISCONNECT or closes the connection."""
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def wait_end(self, timeout: float) -> float | None:
        """When the connection ended (time.monotonic()), or None if it had not within timeout."""
        assert self._watcher is not None
        self._watcher.join(timeout)
        return self.ended_at

    def _watch(self) -> None:
        try:
            while True:
                kind, body = self._read_packet(timeout=None)
                if kind == DISCONNECT:
                    self.ended_at = time.monotonic()
                    self.end_reason = body[0] if body else 0
                    return
        except (OSError, ProbeError):
            self.ended_at = time.monotonic()

    def _read_packet(self, timeout: float | None = TIMEOUT) -> tuple[int, bytes]:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        header = self._read(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._read(1)[0]
            length |= (byte & 127) << shift
            shift += 7
            if not byte & 128:
                break
        return header >> 4, self._read(length)

    def _read(self, count: int) -> bytes:
        assert self.sock is not None
        while len(self._buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ProbeError("connection closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
