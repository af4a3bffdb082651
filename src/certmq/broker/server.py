"""The broker process: its core and its listeners, started and stopped together."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certmq.auth.admission import ListenerPolicy
from certmq.auth.connect import Authenticator
from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.auth.mode import AuthMode
from certmq.auth.ownership import SessionOwnerPolicy
from certmq.auth.topics import TopicRules, TopicRulesError
from certmq.broker.checkpoint_store import STATE_FILE_NAME, SqliteStateStore
from certmq.broker.client_connection import Listener
from certmq.broker.connection import MQTTConnection
from certmq.broker.core import BrokerCore
from certmq.broker.durable_storage import DurableStorage, LocalStorage
from certmq.broker.journal_log import JOURNAL_DIRECTORY
from certmq.broker.listeners import tls_accepting
from certmq.broker.state_keeper import StateKeeper
from certmq.broker.sys_topics import publish_sys_topics
from certmq.broker.topic_rules_file import CHECK_INTERVAL, TopicRulesFile
from certmq.broker.websocket import WebSocketConnection
from certmq.broker.worker_balance import ConnectionBalance
from certmq.config import Config, parse_address
from certmq.mqtt.reason_codes import ReasonCode
from certmq.tls.context import ServerContexts

if TYPE_CHECKING:
    pass

log = logging.getLogger("certmq")


# The URL scheme of each MQTT listener, and the path of the WebSocket ones.
SCHEMES = {"tcp": "mqtt", "tls": "mqtts", "ws": "ws", "wss": "wss"}
WEBSOCKET_PATH = "/mqtt"


@dataclass(frozen=True, slots=True)
class BoundListener:
    name: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """Where clients connect: ``mqtts://127.0.0.1:8883``, ``ws://127.0.0.1:8083/mqtt``."""
        path = WEBSOCKET_PATH if self.name in ("ws", "wss") else ""
        return f"{SCHEMES[self.name]}://{self.host}:{self.port}{path}"


class Broker:
    def __init__(
        self,
        config: Config,
        authenticator: Authenticator,
        contexts: ServerContexts,
        policy: ListenerPolicy,
        *,
        on_handshake_failure: Callable[[str, str, BaseException], None] | None = None,
        state_directory: Path | None = None,
        reuse_port: bool = False,
    ) -> None:
        """The broker of one instance, as :class:`certmq.app.Application` composes it: its
        ``authenticator`` decides every CONNECT, its TLS listeners serve ``contexts``, and
        ``policy`` says which listeners ask for device certificates. Its sessions are kept in
        ``state_directory`` (default: the data directory); with ``reuse_port`` its listeners
        share their ports with other processes (``SO_REUSEPORT``: the workers of one node)."""
        self.config = config
        self.reuse_port = reuse_port
        self.contexts = contexts
        # (listener, peer, error) of a TLS handshake that failed.
        self.on_handshake_failure = on_handshake_failure
        self.policy = policy
        denied = config.auth.subscribe_denied
        # Read again on SIGHUP and when it changes on disk (see reload_topic_rules).
        self.rules_file = TopicRulesFile.from_config(config)
        self.core: BrokerCore[MQTTConnection] = BrokerCore(
            config.mqtt,
            authenticator=authenticator,
            topic_rules=None if self.rules_file is None else self.rules_file.load(),
            subscribe_denied_code=ReasonCode.NOT_AUTHORIZED
            if denied == "not-authorized"
            else ReasonCode.UNSPECIFIED_ERROR,
            session_owner=SessionOwnerPolicy(config.auth.session_owner),
        )
        self.state: StateKeeper | None = None
        if config.mqtt.persistence:
            state_directory = state_directory or config.data_dir
            storage = LocalStorage(
                SqliteStateStore(state_directory / STATE_FILE_NAME),
                state_directory / JOURNAL_DIRECTORY,
                sync=config.mqtt.durability == "power-loss",
            )
            self.state = StateKeeper(self.core, storage, checkpoint_bytes=config.mqtt.checkpoint_bytes)
        self.listeners: list[BoundListener] = []
        self._servers: dict[str, Any] = {}
        # A worker of `certmq serve --workers N` hands connections over to less loaded workers.
        self.balance: ConnectionBalance | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def keep_state_in(self, storage: DurableStorage) -> None:
        """Keep the checkpoints and the journal in ``storage`` (before :meth:`start`), not in the
        data directory; nothing when ``mqtt.persistence`` is off."""
        if self.state is not None:
            self.state = StateKeeper(self.core, storage, checkpoint_bytes=self.config.mqtt.checkpoint_bytes)

    def reload_topic_rules(self, rules_file: TopicRulesFile | None) -> None:
        """Read the topic rules from ``rules_file`` (the one the configuration names now; None:
        no rules) and apply them to every live connection. A file that does not load is refused
        with a log line, and the rules in use stay."""
        self.rules_file = rules_file
        before = self.core.topic_rules
        if rules_file is None:
            if before is not None:
                self.core.reload_topic_rules(None)
            log.info(
                "topic rules: none (auth.acl_file is empty): every client may publish and subscribe anywhere"
            )
            return
        try:
            rules = rules_file.load()
        except TopicRulesError as error:
            log.error("topic rules not reloaded, the rules in use stay: %s", error)
            return
        if before is not None and _same_rules(before, rules):
            log.info("topic rules in %s: unchanged (%d rules)", rules_file.path, len(rules.rules))
            return
        self.core.reload_topic_rules(rules)
        log.info(
            "topic rules reloaded from %s: %d rules (before: %s), default %s; applied to %d live connections",
            rules_file.path,
            len(rules.rules),
            "none" if before is None else len(before.rules),
            "allow" if rules.default_allow else "deny",
            len(self.core.connections),
        )

    async def _watch_topic_rules(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            rules_file = self.rules_file
            if rules_file is not None and rules_file.changed():
                log.info("topic rules file %s changed on disk", rules_file.path)
                self.reload_topic_rules(rules_file)

    async def start(
        self,
        skip: frozenset[str] = frozenset(),
        *,
        before_listening: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Restore the saved state, await ``before_listening`` (a cluster's state joined to it),
        then open every configured listener but those in ``skip``.

        Raises StateStoreError when the saved state cannot be read.
        """
        loop = asyncio.get_running_loop()
        if self.state is not None:
            await self.state.restore()
        if before_listening is not None:
            await before_listening()
        listeners = self.config.listeners
        self.contexts.watch()
        if self.balance is not None:
            self.balance.start()
        for name in MQTT_LISTENERS:
            if getattr(listeners, name) and name not in skip:
                await self.open_listener(name)
        if self.config.mqtt.sys_interval > 0:
            self._tasks.append(loop.create_task(publish_sys_topics(self.core, self.config.mqtt.sys_interval)))
        self._tasks.append(loop.create_task(self._watch_topic_rules()))
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

        loop = asyncio.get_running_loop()
        settings = self.config.mqtt

        def make_websocket() -> WebSocketConnection:
            return WebSocketConnection(make_connection, settings.max_packet_size, settings.connect_timeout)

        make_protocol: Callable[[], asyncio.Protocol] = (
            make_websocket if name in ("ws", "wss") else make_connection
        )

        accept = make_protocol
        if name in ("tls", "wss"):
            accept = tls_accepting(
                make_protocol,
                self.contexts,
                settings.connect_timeout,
                functools.partial(self._handshake_failed, name),
                asks_for_certificate=self.policy.asks_for_certificate(name, AuthMode.MUTUAL),
            )
        if self.balance is not None:
            accept = self.balance.arriving(name, accept)
        server = await loop.create_server(
            accept, host, port, reuse_address=True, reuse_port=self.reuse_port, backlog=1024
        )
        sockets = list(server.sockets)
        self._servers[name] = server
        bound_port = sockets[0].getsockname()[1] if sockets else port
        bound = BoundListener(name, host, bound_port)
        self.listeners.append(bound)
        log.info("listening %s on %s", name, bound.url)

    async def close_listener(self, name: str) -> None:
        """Stop accepting connections on listener ``name``; its live connections stay."""
        server = self._servers.pop(name, None)
        if server is None:
            return
        server.close()
        self.listeners = [bound for bound in self.listeners if bound.name != name]
        log.info("closed listener %s", name)

    def _handshake_failed(self, listener: str, peer: str, error: BaseException) -> None:
        self.core.stats.tls_handshake_failures += 1
        log.info("TLS handshake with %s on %s failed: %s", peer, listener, error)
        if self.on_handshake_failure is not None:
            self.on_handshake_failure(listener, peer, error)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for server in self._servers.values():
            server.close()
        if self.balance is not None:
            self.balance.stop()
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
        self.contexts.close()
        await asyncio.sleep(0)


def _same_rules(first: TopicRules, second: TopicRules) -> bool:
    return first.rules == second.rules and first.default_allow == second.default_allow
