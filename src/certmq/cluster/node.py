"""This node as a member of a cluster: its NATS link and its router, put in the broker's core
before the listeners open, and taken down after they close; and the management view of the
cluster over this node's own (certmq.cluster.control)."""

from __future__ import annotations

import logging
from typing import Any

from certmq.broker.core import BrokerCore
from certmq.broker.routing import LocalRouter
from certmq.cluster.control import ClusterControl
from certmq.cluster.membership import Member, Membership
from certmq.cluster.nats_link import NatsLink
from certmq.cluster.router import ClusterRouter
from certmq.config import Config, nats_servers, node_name
from certmq.control import NodeControl

log = logging.getLogger("certmq.cluster")

# The stream of messages between nodes is replicated on up to this many NATS servers.
MAX_REPLICAS = 3


class ClusterNode:
    def __init__(self, config: Config, core: BrokerCore[Any]) -> None:
        servers = nats_servers(config)
        self.name = node_name(config)
        self.link = NatsLink(config.cluster, servers, self.name)
        local = core.router
        assert isinstance(local, LocalRouter)
        self.router = ClusterRouter(
            local,
            self.link,
            node=self.name,
            prefix=config.cluster.subject_prefix,
            replicas=min(MAX_REPLICAS, len(servers)),
        )
        core.route_through(self.router)
        core.wait_for_commits(self.router.commits)
        self.prefix = config.cluster.subject_prefix
        self.control: ClusterControl | None = None

    def control_over(self, local: NodeControl) -> ClusterControl:
        """The management view of the cluster from this node, over ``local``, its own."""
        membership = Membership(
            self.link,
            self.prefix,
            lambda: Member(local.node, local.http, local.started_at),
            replicas=self.router.replicas,
        )
        self.control = ClusterControl(local, self.link, self.router.stats, membership, self.prefix)
        return self.control

    def start(self) -> None:
        log.info("node %s joins the cluster on NATS %s", self.name, ", ".join(self.link.servers))
        self.link.start()
        if self.control is not None:
            self.control.start()

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()
        await self.link.stop()
