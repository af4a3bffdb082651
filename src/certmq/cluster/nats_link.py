"""This node's connection to the NATS servers of its cluster: connecting (credentials, TLS),
reconnecting without a restart, and what is known of the link for logs, metrics and /readyz.

nats-py keeps the connection: when a server goes away it moves to another of the cluster's
servers (those configured, and those the servers announce), resubscribes, and buffers what is
published meanwhile. Before the first connection succeeds the node runs alone, trying again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import SlowConsumerError
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from certmq.config import ClusterSection

log = logging.getLogger("certmq.cluster")


def failure_text(error: BaseException) -> str:
    """What went wrong, for a log line: nats-py's timeouts say nothing of themselves."""
    return str(error) or type(error).__name__


# How long messages queued from NATS may hold the event loop before the rest gets a turn.
RECEIVING_SLICE = 0.002


async def key_value_bucket(client: Client, config: KeyValueConfig) -> KeyValue:
    """The key-value bucket ``config`` names, made as it says when it is not there."""
    jetstream = client.jetstream()
    try:
        return await jetstream.key_value(config.bucket)
    except Exception:
        return await jetstream.create_key_value(config)


class LoopShare:
    """Lets the rest of a node run while it works through messages queued from NATS.

    nats-py hands a subscription's queued messages to its callback one after another without
    returning to the event loop in between. A node that falls behind (a burst from the other
    nodes) would route thousands of them before it reads or writes a byte for its clients:
    what it routes would wait in memory meanwhile, and its timers (keep-alives, its heartbeat
    in the cluster) as long. Each callback awaits :meth:`turn` after a message: once messages
    have held the loop for :data:`RECEIVING_SLICE` seconds, the loop gets a turn. One share
    serves every subscription of a node: their tasks take the slices in turn."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.monotonic()

    async def turn(self) -> None:
        # Not the loop's clock: uvloop's reads the time once per turn of the loop.
        if time.monotonic() - self._since >= RECEIVING_SLICE:
            await asyncio.sleep(0)
            self._since = time.monotonic()


# Between two attempts at the first connection; later reconnections are nats-py's.
FIRST_CONNECT_RETRY = 1.0
RECONNECT_WAIT = 0.25
# Between two attempts at a set-up step that failed, doubling up to the second.
SET_UP_RETRY = 0.5
SET_UP_RETRY_MAX = 5.0
# What is published while the servers are out of reach and buffered meanwhile, at most.
PENDING_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class LinkStats:
    """What the metrics show of the link."""

    connected: bool = False
    disconnects: int = 0
    reconnects: int = 0
    # Messages the NATS client dropped because this node did not take them fast enough.
    slow_consumer_drops: int = 0
    errors: int = 0


class NatsLink:
    """One NATS connection; the ``set_up`` steps run after the first connection and after
    every reconnection (to set up what the servers may not have kept), in order."""

    def __init__(
        self,
        settings: ClusterSection,
        servers: list[str],
        node: str,
        *,
        echo: bool = False,
        role: str = "messages",
    ) -> None:
        self.settings = settings
        self.servers = servers
        self.node = node
        # Whether what this connection publishes may come back to its own subscriptions: not
        # for the messages (the node has routed them to its clients), yes for the queue groups
        # of shared subscriptions, which choose among all nodes, this one included.
        self.echo = echo
        self.role = role
        self.stats = LinkStats()
        self.client: Client | None = None
        self.set_up: list[Callable[[], Awaitable[None]]] = []
        self._connecting: asyncio.Task[None] | None = None
        self._setting_up: asyncio.Task[None] | None = None
        # Set once connected and set up for the first time.
        self.ready = asyncio.Event()
        self._closing = False

    @property
    def connected(self) -> bool:
        client = self.client
        return client is not None and client.is_connected

    def start(self) -> None:
        """Connect in the background; the node does not wait for NATS to start serving."""
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        while not self._closing:
            try:
                client = await nats.connect(**self._options())
            except Exception as error:  # nats-py raises several kinds; each is retried alike
                log.warning(
                    "cannot connect to NATS (%s): %s; retrying in %.0f s",
                    ", ".join(self.servers),
                    failure_text(error),
                    FIRST_CONNECT_RETRY,
                )
                await asyncio.sleep(FIRST_CONNECT_RETRY)
                continue
            self.client = client
            self.stats.connected = True
            log.info(
                "connected to NATS (%s) at %s as node %s",
                self.role,
                client.connected_url.netloc if client.connected_url else "?",
                self.node,
            )
            await self._set_up()
            self.ready.set()
            return

    async def _set_up(self) -> None:
        """Run the set-up steps, each until it succeeds while the link is up: a step that fails
        (a stream without a leader for a moment, after a NATS server was lost) is tried again."""
        for step in self.set_up:
            wait = SET_UP_RETRY
            while not self._closing:
                try:
                    await step()
                    break
                except Exception as error:
                    if not self.connected:
                        return  # set up again when the link is back
                    log.warning(
                        "setting up the cluster on NATS (%s) failed: %s; trying again in %.1f s",
                        self.role,
                        failure_text(error),
                        wait,
                    )
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, SET_UP_RETRY_MAX)

    def _options(self) -> dict[str, Any]:
        settings = self.settings
        options: dict[str, Any] = {
            "servers": self.servers,
            "name": f"certmq {self.node} {self.role}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT,
            "connect_timeout": 2,
            "pending_size": PENDING_BYTES,
            "no_echo": not self.echo,
            "error_cb": self._error,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "closed_cb": self._closed,
        }
        if settings.nats_credentials:
            options["user_credentials"] = settings.nats_credentials
        if (
            settings.nats_tls_ca_file
            or settings.nats_tls_cert_file
            or any(url.startswith("tls://") for url in self.servers)
        ):
            context = ssl.create_default_context(cafile=settings.nats_tls_ca_file or None)
            if settings.nats_tls_cert_file:
                context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file or None)
            options["tls"] = context
        return options

    async def confirm(self, timeout: float) -> None:
        """Return once the server has everything sent so far (a PING answered). nats-py writes
        its PING ahead of the commands still in its buffer, so the buffer is written first."""
        client = self.client
        if client is None:
            return
        await client._flush_pending(force_flush=True)
        await client.flush(timeout=max(1, int(timeout)))

    def write_now(self) -> None:
        """Write what the NATS client holds to its connection now. nats-py leaves it to a task
        of its own, which writes one turn of the event loop later: after whatever that turn
        does, such as routing the next few hundred packets of a busy publisher, which the
        other nodes would then wait for. Not while the link is down: nats-py keeps what was
        published then, and sends it on reconnecting."""
        client = self.client
        if client is None or not client.is_connected:
            return
        # nats-py has no public call for this; its own flusher does the same with these.
        pending = getattr(client, "_pending", None)
        transport = getattr(client, "_transport", None)
        if not pending or transport is None:
            return
        transport.writelines(pending)
        client._pending = []
        client._pending_data_size = 0

    async def _error(self, error: Exception) -> None:
        if isinstance(error, SlowConsumerError):
            # Counted, not logged one by one: a burst would flood the log.
            self.stats.slow_consumer_drops += 1
            return
        self.stats.errors += 1
        log.warning("NATS: %s", failure_text(error))

    async def _disconnected(self) -> None:
        if self._closing:
            return
        self.stats.connected = False
        self.stats.disconnects += 1
        log.warning("lost the connection to NATS; reconnecting (messages to other nodes wait meanwhile)")

    async def _reconnected(self) -> None:
        self.stats.connected = True
        self.stats.reconnects += 1
        client = self.client
        url = client.connected_url.netloc if client is not None and client.connected_url else "?"
        log.info("reconnected to NATS at %s", url)
        # In a task of its own: nats-py waits for this callback before it finishes reconnecting.
        if self._setting_up is None or self._setting_up.done():
            self._setting_up = asyncio.get_running_loop().create_task(self._set_up())

    async def _closed(self) -> None:
        self.stats.connected = False

    async def stop(self) -> None:
        self._closing = True
        for task in (self._connecting, self._setting_up):
            if task is not None and not task.done():
                task.cancel()
        client = self.client
        if client is not None and not client.is_closed:
            try:
                await asyncio.wait_for(client.drain(), 5)
            except Exception:
                await client.close()
