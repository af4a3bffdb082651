"""The TLS listeners (MQTT over TLS, secure WebSocket). TLS is started per connection, after the
TCP accept, with the context generation that is current at that moment, so replacing the server
certificate, the trusted CAs or the auth mode applies to the next handshake without rebinding
anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from certmq.auth.decision import certificate_size_failure
from certmq.tls.connection import TlsServerConnection
from certmq.tls.context import MUTUAL, ServerContexts


def _in_mutual_mode(mode: str) -> bool:
    return mode == MUTUAL


async def serve_tls(
    make_protocol: Callable[[], asyncio.Protocol],
    contexts: ServerContexts,
    host: str,
    port: int,
    handshake_timeout: float,
    on_handshake_failure: Callable[[str, BaseException], None],
    asks_for_certificate: Callable[[str], bool] = _in_mutual_mode,
) -> asyncio.Server:
    """Listen on ``host:port``; each accepted connection handshakes with the newest generation,
    asking for a device certificate when ``asks_for_certificate`` says so of its auth mode."""

    def accept() -> TlsServerConnection:
        generation = contexts.generation
        asks = asks_for_certificate(generation.settings.auth_mode)
        return TlsServerConnection(
            generation.context(asks),
            asks,
            make_protocol,
            handshake_timeout,
            on_handshake_failure,
            certificate_size_failure,
        )

    return await asyncio.get_running_loop().create_server(
        accept, host, port, reuse_address=True, backlog=1024
    )
