"""The MQTT over TLS listener. TLS is started per connection, after the TCP accept, with the
context generation that is current at that moment, so replacing the server certificate, the
trusted CAs or the auth mode applies to the next handshake without rebinding anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from certmq.broker.connection import MQTTConnection
from certmq.tls.connection import TlsServerConnection
from certmq.tls.context import MUTUAL, ServerContexts


async def serve_tls(
    make_connection: Callable[[], MQTTConnection],
    contexts: ServerContexts,
    host: str,
    port: int,
    handshake_timeout: float,
    on_handshake_failure: Callable[[str, BaseException], None],
) -> asyncio.Server:
    """Listen on ``host:port``; each accepted connection handshakes with the newest generation."""

    def accept() -> TlsServerConnection:
        generation = contexts.generation
        return TlsServerConnection(
            generation.mqtt,
            generation.settings.auth_mode == MUTUAL,
            make_connection,
            handshake_timeout,
            on_handshake_failure,
        )

    return await asyncio.get_running_loop().create_server(
        accept, host, port, reuse_address=True, backlog=1024
    )
