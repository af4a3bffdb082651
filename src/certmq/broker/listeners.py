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
from certmq.tls.context import ServerContexts


def tls_accepting(
    make_protocol: Callable[[], asyncio.Protocol],
    contexts: ServerContexts,
    handshake_timeout: float,
    on_handshake_failure: Callable[[str, BaseException], None],
    asks_for_certificate: bool = True,
) -> Callable[[], TlsServerConnection]:
    """The protocol factory of a TLS listener: each accepted connection handshakes with the
    newest generation, asking for a device certificate when the generation verifies them
    (mutual mode) and the listener asks for one in mutual mode (``asks_for_certificate``)."""

    def accept() -> TlsServerConnection:
        generation = contexts.generation
        asks = asks_for_certificate and generation.verifies_client_certificates
        return TlsServerConnection(
            generation.context(asks),
            asks,
            make_protocol,
            handshake_timeout,
            on_handshake_failure,
            certificate_size_failure,
        )

    return accept


async def serve_tls(
    make_protocol: Callable[[], asyncio.Protocol],
    contexts: ServerContexts,
    host: str,
    port: int,
    handshake_timeout: float,
    on_handshake_failure: Callable[[str, BaseException], None],
    asks_for_certificate: bool = True,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on ``host:port`` with :func:`tls_accepting`'s protocols. ``reuse_port``: the port
    is shared with the other workers of the node (``SO_REUSEPORT``)."""
    accept = tls_accepting(
        make_protocol, contexts, handshake_timeout, on_handshake_failure, asks_for_certificate
    )
    return await asyncio.get_running_loop().create_server(
        accept, host, port, reuse_address=True, reuse_port=reuse_port, backlog=1024
    )
