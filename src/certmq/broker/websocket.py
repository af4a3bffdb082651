"""MQTT over WebSocket (MQTT 5.0 section 6): binary frames carry the MQTT byte stream.

The ``websockets`` library's sans-io protocol parses the HTTP upgrade and the frames;
:class:`WebSocketConnection` feeds it the bytes of an asyncio transport: plain TCP for ``ws``,
and for ``wss`` the TLS layer of :mod:`certmq.tls.connection`, the very one MQTT over TLS runs
on, so a secure WebSocket that asks for a device certificate verifies it, names its issuer and
records a refused handshake just as the TLS listener does. To the MQTT connection above it, it
is the transport: the same :class:`MQTTConnection` serves TCP, TLS and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from certmq.stacked_transport import StackedTransport

log = logging.getLogger("certmq.websocket")

MQTT_PATH = "/mqtt"
# Seconds a client has to answer our close frame before its connection is cut.
CLOSE_TIMEOUT = 5.0
# Frames may carry several packets, or part of one: one maximal packet plus slack.
FRAME_SLACK = 1024
_SUBPROTOCOLS = [Subprotocol("mqtt")]


class WebSocketConnection(StackedTransport):
    """One WebSocket connection: the lower transport's protocol, the MQTT protocol's transport."""

    def __init__(
        self, make_protocol: Callable[[], asyncio.Protocol], max_packet_size: int, upgrade_timeout: float
    ) -> None:
        super().__init__()
        self._websocket = ServerProtocol(subprotocols=_SUBPROTOCOLS, max_size=max_packet_size + FRAME_SLACK)
        self._make_protocol = make_protocol
        self._upgrade_timeout = upgrade_timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    # --- the lower transport's side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        # Until the upgrade request has come: a connection that sends nothing is cut.
        self._timer = asyncio.get_running_loop().call_later(self._upgrade_timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        websocket = self._websocket
        websocket.receive_data(data)
        for event in websocket.events_received():
            if isinstance(event, Request):
                self._upgrade(event)
            elif not isinstance(event, Frame):
                continue
            elif event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                if self._protocol is not None and event.data:
                    self._protocol.data_received(bytes(event.data))
            elif event.opcode is Opcode.TEXT:
                # MQTT 5.0 6.0: text frames are not MQTT; close the connection.
                websocket.fail(CloseCode.UNSUPPORTED_DATA, "MQTT is carried in binary frames")
                break
            # Ping, pong and close frames: the sans-io protocol has answered them already.
        self._send()

    def _upgrade(self, request: Request) -> None:
        websocket = self._websocket
        if request.path.split("?", 1)[0] != MQTT_PATH:
            response = websocket.reject(HTTPStatus.NOT_FOUND, f"MQTT is served at {MQTT_PATH}\n")
        else:
            response = websocket.accept(request)
        websocket.send_response(response)
        if websocket.state is State.OPEN:
            self._cancel_timer()
            self._protocol = self._make_protocol()
            self._protocol.connection_made(self)

    def _send(self) -> None:
        """Write what the WebSocket protocol has to send; at its end of stream, close."""
        transport = self._transport
        if transport is None:
            return
        for data in self._websocket.data_to_send():
            if data:
                transport.write(data)
            else:
                # A server closes the TCP connection first (RFC 6455 7.1.1).
                transport.close()
        if self._websocket.close_expected() and self._timer is None and not transport.is_closing():
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def eof_received(self) -> bool:
        self._websocket.receive_eof()
        self._send()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost()
        self._cancel_timer()
        self._closing = True
        self._transport = None
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(exc)

    def _below(self) -> asyncio.Transport | None:
        return self._transport

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- the MQTT side --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._websocket.state is not State.OPEN:
            return
        self._websocket.send_binary(data)
        self._send()

    def is_closing(self) -> bool:
        return self._closing or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        """Send a close frame; the connection ends when the client answers it (or does not in time)."""
        if self._closing:
            return
        self._closing = True
        if self._websocket.state is State.OPEN:
            self._websocket.send_close(CloseCode.NORMAL_CLOSURE)
        self._send()

    def abort(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # The peer's address and, on wss, its TLS details and device certificate.
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)
