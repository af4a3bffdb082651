"""MQTT over WebSocket (MQTT 5.0 section 6): binary frames carry the MQTT byte stream.

The WebSocket library owns the HTTP upgrade and framing; :class:`WebSocketTransport` makes a
WebSocket connection look like an asyncio transport, so the same :class:`MQTTConnection`
serves TCP, TLS and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from certmq.broker.connection import MQTTConnection

log = logging.getLogger("certmq.websocket")

MQTT_PATH = "/mqtt"


class WebSocketTransport(asyncio.Transport):
    def __init__(self, websocket: ServerConnection) -> None:
        super().__init__()
        self._websocket = websocket
        self._queue: deque[bytes] = deque()
        self._size = 0
        self._closing = False
        self._wakeup = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._queue.append(bytes(data))
        self._size += len(data)
        self._wakeup.set()

    def get_write_buffer_size(self) -> int:
        return self._size

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    def abort(self) -> None:
        self._closing = True
        self._queue.clear()
        self._writer.cancel()
        self._websocket.transport.abort()

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_reading(self) -> bool:
        return self.reading.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._websocket.remote_address
        return self._websocket.transport.get_extra_info(name, default)

    async def _write_loop(self) -> None:
        websocket = self._websocket
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    data = b"".join(self._queue)
                    self._queue.clear()
                    self._size = 0
                    await websocket.send(data)
                if self._closing:
                    await websocket.close()
                    return
        except ConnectionClosed:
            return


def _only_mqtt_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != MQTT_PATH:
        return connection.respond(HTTPStatus.NOT_FOUND, f"MQTT is served at {MQTT_PATH}\n")
    return None


async def serve_websocket(
    make_connection: Callable[[], MQTTConnection],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    max_packet_size: int,
) -> Server:
    async def handle(websocket: ServerConnection) -> None:
        connection = make_connection()
        transport = WebSocketTransport(websocket)
        connection.connection_made(transport)
        try:
            async for frame in websocket:
                if isinstance(frame, str):
                    # MQTT 5.0 6.0: text frames are not MQTT; close the connection.
                    connection.close(None, publish_will=True)
                    break
                if not transport.reading.is_set():
                    await transport.reading.wait()
                connection.data_received(frame)
                if transport.is_closing():
                    break
        except ConnectionClosed:
            pass
        finally:
            connection.connection_lost(None)
            with contextlib.suppress(Exception):
                await websocket.wait_closed()

    return await serve(
        handle,
        host,
        port,
        ssl=ssl_context,
        subprotocols=["mqtt"],  # type: ignore[list-item]
        process_request=_only_mqtt_path,
        # Frames may carry several packets; allow one maximal packet plus slack.
        max_size=max_packet_size + 1024,
        compression=None,
    )
