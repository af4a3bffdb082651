"""Listening sockets. TLS is started per connection, after the TCP accept, with the context
that is current at that moment, so replacing the server certificate (or the trusted CAs)
applies to the next handshake without rebinding anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from certmq.broker.connection import MQTTConnection

log = logging.getLogger("certmq.listeners")


class TlsListener:
    """Accepts TCP connections and runs each TLS handshake with ``context_source()``."""

    def __init__(
        self,
        make_connection: Callable[[], MQTTConnection],
        context_source: Callable[[], ssl.SSLContext],
        handshake_timeout: float,
        on_handshake_failure: Callable[[str, BaseException], None],
    ) -> None:
        self._make_connection = make_connection
        self._context_source = context_source
        self._handshake_timeout = handshake_timeout
        self._on_handshake_failure = on_handshake_failure
        self._socket: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._socket] if self._socket is not None else []

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listening.bind((host, port))
        except OSError:
            listening.close()
            raise
        listening.listen(1024)
        listening.setblocking(False)
        self._socket = listening
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop(listening))

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(listening)
            except OSError as error:
                # Out of file descriptors and the like: wait a little rather than spin.
                log.warning("accept failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handshake(client, address))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, client: socket.socket, address: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                self._make_connection,
                client,
                ssl=self._context_source(),
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as error:
            client.close()
            peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
            self._on_handshake_failure(peer, error)

    def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
        for task in self._handshakes:
            task.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def wait_closed(self) -> None:
        if self._accept_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
