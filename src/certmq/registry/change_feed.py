"""The changes other nodes commit to a shared PostgreSQL registry, as they reach this node
(docs/registry.md, "Several nodes").

Every change is committed with a notice on the channel ``certmq_registry``
(:meth:`certmq.registry.database.Database.announce`). :class:`ChangeFeed` holds a connection of
its own that ``LISTEN``\\ s on that channel and hands the event of each notice from another node
to the service (``apply_change``), one after the other, in commit order. Its own notices it
ignores: the service applied those when it committed them.

PostgreSQL keeps no notice for a listener that is not connected. So when the connection is lost
the feed logs it, connects again (after 0.2 s, then twice as long each time up to 10 s), listens,
and only then has the service catch up (``catch_up``: read everything again and emit an event for
each difference, :mod:`certmq.registry.missed_changes`): whatever was committed before it listened
again is in what it reads, whatever after is in a notice. A change may then arrive twice, as a
difference and as a notice; applying it again changes nothing.

A notice that cannot be read (anyone who may connect to the database may send on the channel) is
logged, counted and skipped. A notice whose change cannot be applied (the store unreachable) is
treated as a lost connection: the catch-up that follows brings the index back in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from certmq.registry.events import CHANGE_CHANNEL, RegistryEvent, notice_from_json

log = logging.getLogger("certmq.registry")

RECONNECT_FIRST_DELAY = 0.2
RECONNECT_MAX_DELAY = 10.0
CONNECT_TIMEOUT = 10
# A server that vanished without closing the connection (a network partition, a host powered off)
# is noticed by TCP keepalives after about 10 + 3 × 5 seconds; without them, never.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# Characters of a malformed notice that the log shows.
MALFORMED_SHOWN = 200

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


class ChangeTarget(Protocol):
    """What the feed drives: :class:`certmq.registry.service.RegistryService`."""

    async def apply_change(self, event: RegistryEvent) -> None: ...

    async def catch_up(self) -> int: ...


@dataclass(slots=True)
class ChangeFeedState:
    """What the feed has done, for metrics and readiness. ``last_lag`` is the time in seconds
    from a notice's sending (the writer's clock, just before its commit) to its change applied
    here (this node's clock), for the last one applied."""

    connected: bool = False
    applied: int = 0  # notices of other nodes, applied
    own: int = 0  # this node's own notices, ignored
    malformed: int = 0  # notices that could not be read, ignored
    reconnects: int = 0  # connections made again after one was lost
    caught_up: int = 0  # events emitted by catching up after a reconnection
    last_lag: float | None = None


class ChangeFeed:
    """The listening connection of one node and the task that reads it.

    ``connect`` opens the connection (by default to ``conninfo`` with keepalives and an
    application name that shows in ``pg_stat_activity``); the delays between attempts to connect
    again are ``first_retry_delay`` and ``max_retry_delay``."""

    def __init__(
        self,
        target: ChangeTarget,
        conninfo: str,
        *,
        node_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = ChangeFeedState()
        self.node_id = node_id
        self.connect: Connect = self._connect_to_registry
        self.first_retry_delay = RECONNECT_FIRST_DELAY
        self.max_retry_delay = RECONNECT_MAX_DELAY
        self._target = target
        self._conninfo = conninfo
        self._clock = clock
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"ChangeFeed({self.node_id!r}, {self.state})"

    @property
    def application_name(self) -> str:
        """The listening connection's name in ``pg_stat_activity``."""
        return f"certmq-changes-{self.node_id}"[:63]

    async def _connect_to_registry(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            application_name=self.application_name,
            connect_timeout=CONNECT_TIMEOUT,
            **KEEPALIVES,
        )

    async def listen(self) -> None:
        """Connect and ``LISTEN``: every change committed from now on reaches this node. Raises
        what connecting raised."""
        connection = await self.connect()
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANGE_CHANNEL)))
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self.state.connected = True

    def start(self) -> None:
        """Read the notices in a task of their own, from the connection :meth:`listen` opened."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="certmq-registry-changes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    async def _disconnect(self) -> None:
        self.state.connected = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _run(self) -> None:
        while True:
            if self._connection is None:
                await self._reconnect()
            connection = self._connection
            assert connection is not None
            try:
                async with contextlib.aclosing(connection.notifies()) as notices:
                    async for notify in notices:
                        await self._receive(notify.payload)
                raise psycopg.OperationalError("the notices stopped")
            except Exception as error:
                log.warning("registry change feed: lost its connection (%s); connecting again", error)
                await self._disconnect()

    async def _reconnect(self) -> None:
        """Connect, listen and catch up, trying again with growing delays until it works."""
        delay = self.first_retry_delay
        while True:
            try:
                await self.listen()
                caught_up = await self._target.catch_up()
            except Exception as error:
                await self._disconnect()
                wait = delay * random.uniform(0.5, 1.0)  # nodes that lost the server together spread out
                log.warning(
                    "registry change feed: could not listen again (%s); next try in %.1f s", error, wait
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            self.state.reconnects += 1
            self.state.caught_up += caught_up
            log.info("registry change feed: listening again; %d missed changes caught up", caught_up)
            return

    async def _receive(self, payload: str) -> None:
        try:
            notice = notice_from_json(payload)
        except ValueError:
            self.state.malformed += 1
            log.warning(
                "registry change feed: ignored a notice that is not a registry change: %r",
                payload[:MALFORMED_SHOWN],
            )
            return
        if notice.origin == self.node_id:
            self.state.own += 1
            return
        await self._target.apply_change(notice.event)
        self.state.applied += 1
        self.state.last_lag = max(0.0, self._clock() - notice.sent_at)
