"""The sessions of a node that is gone, adopted by another (docs/cluster.md, "When a node is
gone").

A node keeps its sessions in JetStream (certmq.cluster.stream_storage). When it is gone, killed
or stopped and not back, another node adopts them: takes the lease on its state
(certmq.cluster.state_leases), reads its checkpoint and journal as the node itself would at
start, and keeps the sessions as its own, their queued and in-flight messages, wills and
expiry timers included. A node adopts when a client claims a client id the gone node held
(certmq.cluster.client_ids: the claim waits for it), or by itself once a node has been gone for
``cluster.adoption_grace`` seconds (10), so that wills and session expiry are kept when no client
comes back.

Step by step, each step safe to repeat should the adopting node stop midway (a node that finds
a lease it holds without adopting, or held by a node that is gone, adopts again):

1. The sessions are read and put into this node's core, except those whose client id it holds
   already; each is recorded whole in this node's journal, under ids of its own.
2. The messages of the cluster's stream that the gone node had not acknowledged (after its
   consumer's acknowledgement floor), up to the last this node has routed, are routed to the
   adopted sessions only; the stream's later messages wait meanwhile, and then reach them as
   they reach every session here.
3. The bucket of client ids names this node for the adopted sessions; a session whose client
   id another node holds since (its client connected there) is dropped.
4. Once this node's journal has all of it, the gone node's checkpoint, journal and consumer are
   deleted, and the lease is released: the node, started again, starts empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from certmq.broker.core import BrokerCore
from certmq.broker.recovery import Recovery
from certmq.broker.retained import MemoryRetainedStore
from certmq.broker.routing import LocalRouter
from certmq.broker.session import Session
from certmq.broker.state_keeper import read_state
from certmq.broker.stats import BrokerStats
from certmq.cluster.client_ids import ClusterClientIds
from certmq.cluster.nats_link import failure_text
from certmq.cluster.router import ClusterRouter
from certmq.cluster.state_leases import WAIT_PAUSE, Lease, StateLeases
from certmq.cluster.stream_storage import CALL_TIMEOUT, StreamStorage

log = logging.getLogger("certmq.cluster")

# How often the leases are looked at for nodes that are gone.
SCAN_INTERVAL = 2.0


class Adoption:
    """Adopts the sessions of nodes that are gone into ``core`` (see the module's text)."""

    def __init__(
        self,
        core: BrokerCore[Any],
        router: ClusterRouter,
        client_ids: ClusterClientIds,
        leases: StateLeases,
        *,
        client: Client,
        prefix: str,
        replicas: int,
        grace: float,
    ) -> None:
        self.core = core
        self.router = router
        self.client_ids = client_ids
        self.leases = leases
        self.client = client
        self.prefix = prefix
        self.replicas = replicas
        # A node gone this long has its sessions adopted even when none of its clients comes back.
        self.grace = grace
        self.node = leases.node
        self._adopting: dict[str, asyncio.Task[None]] = {}
        # When each node was first seen gone, by this node's clock.
        self._gone_since: dict[str, float] = {}
        self._scan: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._scan = asyncio.get_running_loop().create_task(self._scan_leases())

    async def stop(self) -> None:
        tasks = [task for task in (self._scan, *self._adopting.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self, node: str) -> None:
        """Return once the sessions of ``node`` (which did not answer a claim) are adopted: by
        this node, now, or by the node adopting them already; at once when ``node`` has no
        state in JetStream, or is running after all."""
        while True:
            adopting = self._adopting.get(node)
            if adopting is not None:
                await asyncio.shield(adopting)
                return
            lease = await self.leases.lease(node)
            if lease is None:
                return
            if lease.holder == node and await self.leases.running(node):
                return
            if lease.holder not in (node, self.node) and await self.leases.running(lease.holder):
                await asyncio.sleep(WAIT_PAUSE)  # another node is adopting them
                continue
            taken = lease if lease.holder == self.node else await self.leases.take(node)
            if taken is not None:
                self._begin(taken)

    def _begin(self, lease: Lease) -> asyncio.Task[None]:
        task = self._adopting.get(lease.node)
        if task is None:
            task = self._adopting[lease.node] = asyncio.get_running_loop().create_task(self._adopt(lease))
            task.add_done_callback(lambda _: self._adopting.pop(lease.node, None))
        return task

    async def _scan_leases(self) -> None:
        while True:
            await asyncio.sleep(SCAN_INTERVAL)
            if not self.router.link.connected:
                continue
            try:
                await self._look()
            except Exception as error:
                log.warning("could not look for nodes that are gone: %s", failure_text(error))

    async def _look(self) -> None:
        now = time.monotonic()
        for lease in await self.leases.leases():
            node = lease.node
            if node == self.node or node in self._adopting:
                continue
            if lease.holder == self.node:
                self._begin(lease)  # an adoption this node did not finish (it stopped)
                continue
            if await self.leases.running(lease.holder):
                self._gone_since.pop(node, None)
                continue
            gone_since = self._gone_since.setdefault(node, now)
            if now - gone_since < self.grace:
                continue
            taken = await self.leases.take(node)
            if taken is not None:
                self._gone_since.pop(node, None)
                self._begin(taken)

    async def _adopt(self, lease: Lease) -> None:
        node = lease.node
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        storage = StreamStorage(self.client, prefix=self.prefix, node=node, replicas=self.replicas)
        await storage.set_up()
        recovery = Recovery(time.time(), loop.time())
        _, contents = await asyncio.to_thread(read_state, storage, recovery)
        floor = await self._acknowledged_floor(node)
        crashed_at = max(recovery.latest_time, contents.last_write)
        resume = self.router.hold_stored()
        try:
            last = self.router.last_stored
            sessions = recovery.adopt(self.core, self.core.recorder, crashed_at, time.time())
            routed = 0
            if sessions and floor is not None and last > floor:
                routed = await self._route_unacknowledged(node, floor, last, sessions)
        finally:
            resume()
        elsewhere = await self.client_ids.reassign([session.client_id for session in sessions], node)
        for client_id in elsewhere:
            session = self.core.sessions.get(client_id)
            if session is not None:
                self.core.ownership.hand_over(session)
        recorder = self.core.recorder
        if recorder is not None:
            await recorder.all_committed()
        await storage.delete_all()
        await self._forget_consumer(node)
        await self.leases.release(lease)
        self.router.stats.sessions_adopted += len(sessions) - len(elsewhere)
        log.info(
            "node %s adopted %d sessions of node %s, which is gone (%d messages it had not "
            "acknowledged routed to them, %d sessions held elsewhere since), in %.0f ms",
            self.node,
            len(sessions) - len(elsewhere),
            node,
            routed,
            len(elsewhere),
            (time.perf_counter() - started) * 1000,
        )

    async def _acknowledged_floor(self, node: str) -> int | None:
        """The last message of the stream ``node`` acknowledged with all before it; None when
        its consumer is gone (then what it had not taken is not known)."""
        try:
            info = await self.client.jetstream().consumer_info(self.router.stream, node)
        except NotFoundError:
            return None
        return info.ack_floor.stream_seq if info.ack_floor is not None else 0

    async def _forget_consumer(self, node: str) -> None:
        try:
            await self.client.jetstream().delete_consumer(self.router.stream, node)
        except NotFoundError:
            pass

    async def _route_unacknowledged(self, node: str, floor: int, last: int, sessions: list[Session]) -> int:
        """Route the messages of the stream after ``floor`` up to ``last`` to ``sessions``
        alone (the gone node's own messages reached its sessions when published)."""
        only = LocalRouter(
            self.core.settings,
            {session.client_id: session for session in sessions},
            self.core.subscriptions,
            MemoryRetainedStore(),
            BrokerStats(),
        )
        only.shared_elsewhere = True
        routed = 0
        subscription = await self.client.jetstream().subscribe(
            self.router.stored_subjects,
            stream=self.router.stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1),
        )
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=CALL_TIMEOUT)
                except NatsTimeoutError:
                    log.warning(
                        "the stream %s stopped sending the messages node %s had not taken",
                        self.router.stream,
                        node,
                    )
                    break
                metadata = msg.metadata
                if metadata.sequence.stream > last:
                    break
                received = self.router.open_stored(msg)
                if received is not None and received.origin != node:
                    for message in received.messages:
                        routed += 1
                        only.publish(message)
                if metadata.sequence.stream >= last or not metadata.num_pending:
                    break
        finally:
            await subscription.unsubscribe()
        return routed
