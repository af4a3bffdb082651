"""This node as a member of a cluster: its NATS link and its router, put in the broker's core
before the listeners open, and taken down after they close; and the management view of the
cluster over this node's own (certmq.cluster.control)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from certmq.broker.core import BrokerCore
from certmq.broker.routing import LocalRouter
from certmq.cluster.adoption import Adoption
from certmq.cluster.client_ids import ClusterClientIds
from certmq.cluster.control import ClusterControl
from certmq.cluster.membership import Member, Membership
from certmq.cluster.nats_link import SET_UP_RETRY, NatsLink, failure_text
from certmq.cluster.router import ClusterRouter
from certmq.cluster.state_leases import StateLeases
from certmq.cluster.stream_storage import StreamStorage
from certmq.cluster.stream_trim import StreamTrim
from certmq.cluster.sys_topics import publish_cluster_sys_topics
from certmq.config import Config, nats_servers, node_name, state_in_nats
from certmq.control import NodeControl

log = logging.getLogger("certmq.cluster")

# How long a starting node waits for NATS before it opens its listeners anyway.
FIRST_CONNECTION_WAIT = 10.0
# The stream of messages between nodes is replicated on up to this many NATS servers.
MAX_REPLICAS = 3


class ClusterNode:
    def __init__(self, config: Config, core: BrokerCore[Any]) -> None:
        servers = nats_servers(config)
        self.name = node_name(config)
        self.link = NatsLink(config.cluster, servers, self.name)
        self.shared_link = NatsLink(
            config.cluster, servers, self.name, echo=True, role="shared subscriptions"
        )
        local = core.router
        assert isinstance(local, LocalRouter)
        self.router = ClusterRouter(
            local,
            self.link,
            self.shared_link,
            node=self.name,
            prefix=config.cluster.subject_prefix,
            replicas=min(MAX_REPLICAS, len(servers)),
            stream_bytes=config.cluster.message_stream_bytes,
        )
        core.route_through(self.router)
        self.trim = StreamTrim(self.link, self.router.stream)
        core.wait_for_commits(self.router.writes.commits)
        self.client_ids = ClusterClientIds(
            core,
            self.link,
            node=self.name,
            prefix=config.cluster.subject_prefix,
            replicas=self.router.replicas,
        )
        self.link.set_up.append(self.client_ids.set_up)
        core.client_id_claims = self.client_ids
        self.prefix = config.cluster.subject_prefix
        # The node's sessions and retained messages in JetStream: on a connection of their own,
        # so that the journal's acknowledgements do not wait behind the messages between nodes.
        self.state_link: NatsLink | None = None
        self.leases: StateLeases | None = None
        self.adoption: Adoption | None = None
        if state_in_nats(config):
            self.state_link = NatsLink(config.cluster, servers, self.name, role="state")
        self.control: ClusterControl | None = None
        self._core = core
        self._sys_interval = config.mqtt.sys_interval
        self._adoption_grace = config.cluster.adoption_grace
        self._sys_topics: asyncio.Task[None] | None = None

    def control_over(self, local: NodeControl) -> ClusterControl:
        """The management view of the cluster from this node, over ``local``, its own."""
        membership = Membership(
            self.link,
            self.prefix,
            lambda: Member(local.node, local.http, local.started_at),
            replicas=self.router.replicas,
        )
        self.control = ClusterControl(
            local, [self.link, self.shared_link], self.router.stats, membership, self.prefix
        )
        self.link.set_up.append(self.control.set_up)
        if self._sys_interval > 0:
            self._sys_topics = asyncio.get_running_loop().create_task(
                publish_cluster_sys_topics(self._core, self.control, self._sys_interval)
            )
        return self.control

    async def open_storage(self) -> StreamStorage | None:
        """This node's storage in JetStream (``cluster.state_storage = "nats"``), once NATS is
        reachable: the node does not serve before it has its sessions back. None: the node keeps
        them in its data directory."""
        link = self.state_link
        if link is None:
            return None
        link.start()
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(link.ready.wait()), FIRST_CONNECTION_WAIT)
                break
            except TimeoutError:
                log.warning(
                    "NATS is not reachable: this node keeps its sessions in JetStream "
                    "(cluster.state_storage) and waits for it before it serves"
                )
        assert link.client is not None
        storage = StreamStorage(
            link.client, prefix=self.prefix, node=self.name, replicas=self.router.replicas
        )
        leases = StateLeases(link.client, prefix=self.prefix, node=self.name, replicas=self.router.replicas)
        while True:
            try:
                await storage.set_up()
                await leases.set_up()
                # Another node may be adopting what this node held before: it waits.
                await leases.take_own()
                break
            except Exception as error:
                log.warning(
                    "setting up this node's storage in JetStream failed, trying again: %s",
                    failure_text(error),
                )
                await asyncio.sleep(SET_UP_RETRY)
        self.leases = leases
        self.adoption = Adoption(
            self._core,
            self.router,
            self.client_ids,
            leases,
            client=link.client,
            prefix=self.prefix,
            replicas=self.router.replicas,
            grace=self._adoption_grace,
        )
        log.info(
            "node %s keeps its sessions and retained messages in JetStream: the stream %s (subject %s) "
            "and the object store %s",
            self.name,
            storage.stream,
            storage.subject,
            storage.bucket,
        )
        return storage

    async def start(self) -> None:
        """Connect to NATS, and wait (a while) for the cluster's state, such as its retained
        messages, before the listeners open; without NATS the node starts alone and joins
        when it can."""
        log.info("node %s joins the cluster on NATS %s", self.name, ", ".join(self.link.servers))
        self.link.start()
        self.shared_link.start()
        try:
            await asyncio.wait_for(
                asyncio.gather(self.link.ready.wait(), self.shared_link.ready.wait()), FIRST_CONNECTION_WAIT
            )
        except TimeoutError:
            log.warning(
                "NATS is not reachable after %.0f s: this node serves its own clients until it joins the cluster",
                FIRST_CONNECTION_WAIT,
            )
        self.trim.start()
        if self.adoption is not None:
            # Its own sessions are back: it may adopt those of nodes that are gone.
            self.client_ids.settle = self.adoption.settle
            self.adoption.start()

    async def stop_consuming(self) -> None:
        """Before the broker's last checkpoint: routing takes no more messages from the other
        nodes that the checkpoint would miss."""
        await self.router.stop_consuming()

    async def stop(self) -> None:
        # What routing took before the last checkpoint is acknowledged to the stream.
        await self.router.acknowledged()
        await self.trim.stop()
        if self.adoption is not None:
            await self.adoption.stop()
        if self.leases is not None:
            await self.leases.stop()
        if self._sys_topics is not None:
            self._sys_topics.cancel()
        if self.control is not None:
            await self.control.stop()
        await self.shared_link.stop()
        await self.link.stop()
        if self.state_link is not None:
            await self.state_link.stop()
