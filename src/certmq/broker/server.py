"""The broker process: its core and its listeners, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certmq.auth.connect import AnonymousAuthenticator, Authenticator, DenyWithoutCredentials
from certmq.auth.topics import TopicRules
from certmq.broker.connection import Listener, MQTTConnection
from certmq.broker.core import BrokerCore
from certmq.broker.durability import StateKeeper
from certmq.broker.journal_log import JOURNAL_DIRECTORY
from certmq.broker.listeners import serve_tls
from certmq.broker.persistence import STATE_FILE_NAME, SqliteStateStore
from certmq.broker.sys_topics import publish_sys_topics
from certmq.broker.websocket import serve_websocket
from certmq.config import Config, parse_address
from certmq.mqtt.reason_codes import ReasonCode
from certmq.tls.context import ServerContexts, TrustSettings, build_server_context

if TYPE_CHECKING:
    from certmq.instance import Instance

log = logging.getLogger("certmq")


@dataclass(frozen=True, slots=True)
class BoundListener:
    name: str
    host: str
    port: int


def _front_context(contexts: ServerContexts) -> ssl.SSLContext:
    """A context whose handshakes switch to the newest generation (for servers built once)."""
    settings = contexts.generation.settings
    front = build_server_context(settings.cert_file, settings.key_file)

    def use_newest(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ssl_object.context = contexts.current_one_way()

    front.sni_callback = use_newest
    return front


class Broker:
    def __init__(
        self,
        config: Config,
        instance: Instance | None = None,
        authenticator: Authenticator | None = None,
        *,
        contexts: ServerContexts | None = None,
        on_handshake_failure: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self.instance = instance
        self.contexts = contexts
        self.on_handshake_failure = on_handshake_failure
        if authenticator is None:
            authenticator = self._default_authenticator()
        denied = config.auth.subscribe_denied
        self.core = BrokerCore(
            config.mqtt,
            authenticator=authenticator,
            topic_rules=self._topic_rules(),
            subscribe_denied_code=ReasonCode.NOT_AUTHORIZED
            if denied == "not-authorized"
            else ReasonCode.UNSPECIFIED_ERROR,
        )
        self.state: StateKeeper | None = None
        if config.mqtt.persistence:
            store = SqliteStateStore(config.data_dir / STATE_FILE_NAME)
            self.state = StateKeeper(
                self.core,
                store,
                config.data_dir / JOURNAL_DIRECTORY,
                sync=config.mqtt.durability == "power-loss",
                checkpoint_bytes=config.mqtt.checkpoint_bytes,
            )
        self.listeners: list[BoundListener] = []
        self._servers: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def _default_authenticator(self) -> Authenticator:
        if self.config.auth.anonymous:
            return AnonymousAuthenticator()
        if self.instance is not None:
            from certmq.auth.credentials import SignatureAuthenticator

            return SignatureAuthenticator(self.instance.id, self.instance.access_keys)
        return DenyWithoutCredentials()

    def _topic_rules(self) -> TopicRules | None:
        auth = self.config.auth
        if not auth.acl_file:
            return None
        path = Path(auth.acl_file)
        if not path.is_absolute():
            path = self.config.data_dir / path
        return TopicRules.load(path, default_allow=auth.acl_default == "allow")

    def _certificate_files(self) -> tuple[Path, Path]:
        tls = self.config.tls
        if tls.cert_file:
            return Path(tls.cert_file), Path(tls.key_file or tls.cert_file)
        if self.instance is None:
            raise RuntimeError("no server certificate: set tls.cert_file or run `certmq init`")
        return self.instance.server_cert_file, self.instance.server_key_file

    async def start(self, skip: frozenset[str] = frozenset()) -> None:
        """Restore the saved state, then open every configured listener but those in ``skip``.

        Raises StateStoreError when the saved state cannot be read.
        """
        loop = asyncio.get_running_loop()
        if self.state is not None:
            await self.state.restore()
        listeners = self.config.listeners
        if self.contexts is None and (listeners.tls or listeners.wss):
            cert_file, key_file = self._certificate_files()
            self.contexts = ServerContexts(TrustSettings(cert_file, key_file, self.config.instance.auth_mode))
        if self.contexts is not None:
            self.contexts.watch()
        for name in ("tcp", "tls", "ws", "wss"):
            if getattr(listeners, name) and name not in skip:
                await self.open_listener(name)
        if self.config.mqtt.sys_interval > 0:
            self._tasks.append(loop.create_task(publish_sys_topics(self.core, self.config.mqtt.sys_interval)))
        if self.state is not None:
            self.state.start()

    async def open_listener(self, name: str) -> None:
        """Start listening on the configured address of listener ``name`` (no-op if open)."""
        if name in self._servers:
            return
        host, port = parse_address(getattr(self.config.listeners, name))
        listener = Listener(name)
        core = self.core

        def make_connection() -> MQTTConnection:
            return MQTTConnection(core, listener)

        server: Any
        if name == "tcp":
            server = await asyncio.get_running_loop().create_server(
                make_connection, host, port, reuse_address=True, backlog=1024
            )
            sockets = list(server.sockets)
        elif name == "tls":
            assert self.contexts is not None
            server = await serve_tls(
                make_connection,
                self.contexts,
                host,
                port,
                self.config.mqtt.connect_timeout,
                self._handshake_failed,
            )
            sockets = list(server.sockets)
        else:
            front = _front_context(self.contexts) if name == "wss" and self.contexts else None
            server = await serve_websocket(
                make_connection, host, port, front, self.config.mqtt.max_packet_size
            )
            sockets = list(server.sockets)
        self._servers[name] = server
        bound_port = sockets[0].getsockname()[1] if sockets else port
        self.listeners.append(BoundListener(name, host, bound_port))
        scheme = {"tcp": "mqtt", "tls": "mqtts", "ws": "ws", "wss": "wss"}[name]
        suffix = "/mqtt" if name in ("ws", "wss") else ""
        log.info("listening %s on %s://%s:%d%s", name, scheme, host, bound_port, suffix)

    async def close_listener(self, name: str) -> None:
        """Stop accepting connections on listener ``name``; its live connections stay."""
        server = self._servers.pop(name, None)
        if server is None:
            return
        server.close()
        self.listeners = [bound for bound in self.listeners if bound.name != name]
        log.info("closed listener %s", name)

    def _handshake_failed(self, peer: str, error: BaseException) -> None:
        self.core.stats.tls_handshake_failures += 1
        log.info("TLS handshake with %s failed: %s", peer, error)
        if self.on_handshake_failure is not None:
            self.on_handshake_failure(peer, error)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for server in self._servers.values():
            server.close()
        if self.state is not None:
            # Acknowledgements waiting for the journal go out before the connections close.
            try:
                await asyncio.wait_for(self.state.flush(), 10)
            except TimeoutError:
                log.warning("the journal took too long to write; acknowledgements still waiting are not sent")
        for connection in list(self.core.connections):
            connection.close(
                ReasonCode.SERVER_SHUTTING_DOWN, "the broker is shutting down", publish_will=True
            )
        for server in self._servers.values():
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                log.warning("a listener took too long to close")
        # Every connection is closed now, so every session is checkpointed as offline.
        if self.state is not None:
            await self.state.close()
        if self.contexts is not None:
            self.contexts.close()
        await asyncio.sleep(0)
