"""The HTTP listener: serves the HTTP application (API and console) with uvicorn inside the broker's
event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

log = logging.getLogger("certmq")

STOP_TIMEOUT = 5.0  # seconds for requests in progress to finish when stopping
# Largest request line and headers. Alibaba Cloud's SDKs send every RPC parameter in the query
# string, RegisterCaCertificate's two PEM certificates included: more than h11's 16 KiB default
# allows for large RSA certificates (the RPC API takes values of up to 16 KiB each).
MAX_REQUEST_HEAD = 64 * 1024


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening socket on host:port (port 0: any free port); OSError when it cannot be had.
    ``reuse_port``: shared with the other workers of the node (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted connections inherit it. Without it every reply waits ~40 ms: uvicorn writes the
        # head and the body apart, and Nagle holds the body until the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpListener:
    """Serve an ASGI application on ``host:port`` until :meth:`stop`.

    ``await start()`` returns once the socket is bound and accepting (``port`` is then the bound
    port, also when 0 was asked for) and raises OSError when the address cannot be bound. With
    ``reuse_port`` the port is shared with the other workers of the node (``SO_REUSEPORT``).
    """

    def __init__(self, app: Any, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the HTTP listener is started already")
        sock = _bind(self.host, self.port, self.reuse_port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=int(STOP_TIMEOUT),
            server_header=False,
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        )
        server = self._server = _EmbeddedServer(config)
        # uvicorn says "Started server process" and the like at info level: certmq logs its own line.
        uvicorn_log = logging.getLogger("uvicorn.error")
        if uvicorn_log.level == logging.NOTSET:
            uvicorn_log.setLevel(logging.WARNING)
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # the reason it stopped
                raise OSError(f"the HTTP listener on {self.url} stopped while starting")
            await asyncio.sleep(0.01)
        log.info(
            "listening http on %s (console %s/console, REST API %s/api/v1, metrics %s/metrics)",
            self.url, self.url, self.url, self.url,
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (for up to 5 s), then close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT + 1)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._server = None
