"""The management view of the whole cluster (docs/cluster.md, "Managing a cluster").

Every node answers NATS requests on ``<prefix>.control.<node>.<verb>`` for itself: its live
connections, kicking a client it has, its counters (the verbs and their messages:
certmq.cluster.control_messages). :class:`ClusterControl`, the
:class:`~certmq.control.BrokerControl` that the REST API, the console and (through the REST API)
the CLI of a node hold, answers their questions for the whole cluster: it asks every node the
bucket of members lists (certmq.cluster.membership) at once, merges what they answer with its
own node's, and names the nodes that did not answer within :data:`ANSWER_TIMEOUT` instead of
leaving them out silently. A node killed without a word is named at once (NATS answers that
nobody listens on its subject), until its entry in the bucket expires.

Requests are plain NATS request/reply: the nodes trust their NATS servers with this as they do
with the messages (credentials and TLS to NATS: docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from certmq.auth.mode import AuthMode
from certmq.cluster import control_messages as messages
from certmq.cluster.control_messages import ControlMessageError
from certmq.cluster.membership import Membership
from certmq.cluster.message_stats import ClusterStats
from certmq.cluster.nats_link import NatsLink, failure_text
from certmq.cluster.subjects import level_token
from certmq.control import (
    EVERY_CONNECTION,
    ClusterStatus,
    ConnectionInfo,
    ConnectionQuery,
    KickOutcome,
    ListenerInfo,
    LiveConnections,
    NodeControl,
    NodeStatus,
    ServerCertificateInfo,
    merge_connections,
)

log = logging.getLogger("certmq.cluster")

# How long a node has to answer one request.
ANSWER_TIMEOUT = 2.0
# How long the sorted connections of a listing in parts serve its next parts.
SNAPSHOT_AGE = 5.0

R = TypeVar("R")


class ClusterControl:
    """The cluster's :class:`~certmq.control.BrokerControl` on one node: ``local`` is the node's
    own, which it answers the other nodes with; ``messages_between_nodes`` the router's counters
    (:attr:`certmq.cluster.router.ClusterRouter.stats`), for the metrics."""

    def __init__(
        self,
        local: NodeControl,
        links: list[NatsLink],
        messages_between_nodes: ClusterStats,
        membership: Membership,
        prefix: str,
    ) -> None:
        self.local = local
        # The first carries the requests; /readyz and the metrics count them all.
        self.link = links[0]
        self.links = links
        self.messages_between_nodes = messages_between_nodes
        self.membership = membership
        self._prefix = f"{prefix}.control"
        self._subscription: Subscription | None = None
        self._listing = PartedListing(local)

    # -- answering the other nodes ---------------------------------------------------------

    async def set_up(self) -> None:
        """After every (re)connection: answer the other nodes (nats-py keeps the subscription
        across reconnections), then join the bucket of members."""
        client = self.link.client
        assert client is not None
        if self._subscription is None:
            self._subscription = await client.subscribe(
                f"{self._subject(self.local.node)}.*", cb=self._on_request
            )
        await self.membership.join()

    async def stop(self) -> None:
        """Leave the bucket of members and stop answering."""
        await self.membership.stop()
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:
                pass  # the connection is gone: so is the subscription
            self._subscription = None

    def _subject(self, node: str) -> str:
        return f"{self._prefix}.{level_token(node)}"

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        verb = msg.subject.rpartition(".")[2]
        try:
            if verb == messages.CONFORM:
                mode = messages.read_mode_request(msg.data)
                reply = messages.count_reply(await self.local.conform_here(mode))
            else:
                reply = self._reply(verb, msg.data)
        except ControlMessageError as error:
            log.warning("a control request %s from another node is not one this node reads: %s", verb, error)
            reply = messages.error_reply(str(error))
        await msg.respond(reply)

    def _reply(self, verb: str, data: bytes) -> bytes:
        local = self.local
        if verb == messages.CONNECTIONS:
            return messages.connections_reply(self._listing.part(messages.read_connections_request(data)))
        if verb == messages.KICK:
            return messages.kick_reply(local.kick_here(messages.read_kick_request(data)))
        if verb == messages.STATUS:
            return messages.status_reply(self.status())
        if verb == messages.NONCONFORMING:
            return messages.count_reply(local.nonconforming_here(messages.read_mode_request(data)))
        raise ControlMessageError(
            f"unknown verb {verb[:40]!r}; this node answers {', '.join(messages.VERBS)}"
        )

    # -- asking them -----------------------------------------------------------------------

    async def _others(self) -> list[str]:
        members = await self.membership.current()
        return sorted(name for name in members if name != self.local.node)

    async def _ask(self, node: str, verb: str, request: bytes, read: Callable[[bytes], R]) -> R | None:
        """What ``node`` answers, or None (logged) when it does not answer in time or answers
        what this node does not read."""
        client = self.link.client
        if client is None or not self.link.connected:
            return None
        try:
            reply = await client.request(f"{self._subject(node)}.{verb}", request, timeout=ANSWER_TIMEOUT)
            return read(reply.data)
        except ControlMessageError as error:
            log.warning("node %s answered %s with what this node does not read: %s", node, verb, error)
        except Exception as error:  # nats-py's timeouts, no responders, a closed connection
            log.info("node %s did not answer %s: %s", node, verb, failure_text(error))
        return None

    async def _ask_every_other(
        self, ask: Callable[[str], Awaitable[R | None]]
    ) -> tuple[list[tuple[str, R]], list[str]]:
        """``ask`` every other node at once: the (node, answer) of those that answered, and the
        names of those that did not."""
        others = await self._others()
        answers = await asyncio.gather(*(ask(node) for node in others))
        answered = [
            (node, answer) for node, answer in zip(others, answers, strict=True) if answer is not None
        ]
        return answered, [node for node, answer in zip(others, answers, strict=True) if answer is None]

    async def _connections_of(self, node: str, query: ConnectionQuery) -> LiveConnections | None:
        async def ask(part: ConnectionQuery) -> LiveConnections | None:
            request = messages.connections_request(part)
            return await self._ask(node, messages.CONNECTIONS, request, messages.read_connections_reply)

        return await read_in_parts(ask, query)

    # -- the BrokerControl of the cluster ----------------------------------------------------

    @property
    def node(self) -> str:
        return self.local.node

    async def connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        answered, missing = await self._ask_every_other(lambda node: self._connections_of(node, query))
        parts = [self.local.local_connections(query), *(part for _, part in answered)]
        parts.append(LiveConnections([], 0, missing))
        return merge_connections(parts, query)

    async def kick(self, client_id: str) -> KickOutcome:
        if self.local.kick_here(client_id):
            return KickOutcome(self.local.node)
        request = messages.kick_request(client_id)
        answered, missing = await self._ask_every_other(
            lambda node: self._ask(node, messages.KICK, request, messages.read_kick_reply)
        )
        kicked_on = [node for node, kicked in answered if kicked]
        return KickOutcome(kicked_on[0] if kicked_on else None, missing)

    async def nodes(self) -> ClusterStatus:
        answered, missing = await self._ask_every_other(
            lambda node: self._ask(node, messages.STATUS, b"{}", messages.read_status_reply)
        )
        return ClusterStatus([self.status(), *(status for _, status in answered)], missing)

    def status(self) -> NodeStatus:
        return self.local.status()

    def unready(self) -> list[str]:
        missing = self.local.unready()
        # Connected, and joined: the cluster's state read (its retained messages), this node's
        # subscriptions known to NATS.
        if not all(link.connected and link.ready.is_set() for link in self.links):
            missing.append("nats")
        return missing

    def stats(self) -> dict[str, int]:
        counts = self.local.stats()
        links, router = [link.stats for link in self.links], self.messages_between_nodes
        counts.update(
            cluster_nodes=len(self.membership.members),
            cluster_nats_connected=int(all(link.connected for link in self.links)),
            cluster_nats_disconnects=sum(link.disconnects for link in links),
            cluster_nats_reconnects=sum(link.reconnects for link in links),
            cluster_nats_errors=sum(link.errors for link in links),
            cluster_slow_consumer_drops=sum(link.slow_consumer_drops for link in links),
            cluster_messages_sent=router.sent,
            cluster_messages_stored=router.stored,
            cluster_store_full=router.store_full,
            cluster_store_failures=router.store_failures,
            cluster_sessions_adopted=router.sessions_adopted,
            cluster_messages_received=router.received,
            cluster_duplicates=router.duplicates,
            cluster_malformed=router.malformed,
            cluster_too_long=router.too_long,
        )
        return counts

    # -- this node's, as they are ------------------------------------------------------------

    def local_connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        return self.local.local_connections(query)

    def kick_here(self, client_id: str) -> bool:
        return self.local.kick_here(client_id)

    def listeners(self) -> list[ListenerInfo]:
        return self.local.listeners()

    def auth_mode(self) -> AuthMode:
        return self.local.auth_mode()

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        """Switch the cluster's mode (stored in the registry, which every node follows); with
        ``disconnect_nonconforming``, every node disconnects its live connections that the mode
        refuses: how many in all (a node that does not answer is logged)."""
        disconnected = await self.local.set_auth_mode(mode, disconnect_nonconforming=disconnect_nonconforming)
        if not disconnect_nonconforming:
            return disconnected
        return disconnected + await self._count_on_others(messages.CONFORM, mode, "disconnected")

    async def nonconforming(self, mode: str) -> int:
        """How many live connections of every node ``mode`` would refuse."""
        return self.local.nonconforming_here(mode) + await self._count_on_others(
            messages.NONCONFORMING, mode, "counted"
        )

    def nonconforming_here(self, mode: str) -> int:
        return self.local.nonconforming_here(mode)

    async def _count_on_others(self, verb: str, mode: str, done: str) -> int:
        """The sum of what the other nodes answer ``verb`` for ``mode`` (a node that does not
        answer is logged)."""
        request = messages.mode_request(AuthMode(mode))
        answered, missing = await self._ask_every_other(
            lambda node: self._ask(node, verb, request, messages.read_count_reply)
        )
        if missing:
            log.warning(
                "auth mode %s: nodes %s have not %s their nonconforming clients",
                mode,
                ", ".join(missing),
                done,
            )
        return sum(count for _, count in answered)

    async def conform_here(self, mode: AuthMode) -> int:
        return await self.local.conform_here(mode)

    def describe_listeners(self, mode: str) -> str:
        return self.local.describe_listeners(mode)

    def server_certificate(self) -> ServerCertificateInfo:
        return self.local.server_certificate()

    async def replace_server_certificate(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        return await self.local.replace_server_certificate(chain_pem, key_pem)


async def read_in_parts(
    ask: Callable[[ConnectionQuery], Awaitable[LiveConnections | None]], query: ConnectionQuery
) -> LiveConnections | None:
    """A node's connections that ``query`` picks, asked for part after part (``ask`` sends one
    request and reads its reply; certmq.cluster.control_messages); None when a part does not
    come."""
    received: list[ConnectionInfo] = []
    total: int | None = None
    part = messages.part_query(query, received)
    while part is not None:
        answer = await ask(part)
        if answer is None:
            return None
        if total is None:
            total = answer.total
        received.extend(answer.items)
        if not answer.items or len(answer.items) >= answer.total:
            break
        part = messages.part_query(query, received)
    return LiveConnections(received, total or 0)


class PartedListing:
    """This node's connections for the parts another node asks for, one after the other.

    A part is the first connections after a client id. Picking them afresh for each part would
    cost the whole list each time, so a whole listing is sorted once, at its first part, and the
    parts that follow within :data:`SNAPSHOT_AGE` seconds are read from that: a listing of n
    connections costs n log n, not n² / 1000. A page (fewer than a part wanted) is picked without
    sorting the rest."""

    def __init__(self, local: NodeControl) -> None:
        self.local = local
        self._snapshot: tuple[ConnectionQuery, float, list[ConnectionInfo]] | None = None

    def part(self, query: ConnectionQuery) -> LiveConnections:
        wanted = messages.PART_ITEMS if query.first is None else query.first
        whole = replace(query, first=None, after="")
        now = time.monotonic()
        snapshot = self._snapshot
        if query.after and snapshot is not None and snapshot[0] == whole and now - snapshot[1] < SNAPSHOT_AGE:
            listing = snapshot[2]
        elif not query.after and wanted >= messages.PART_ITEMS:
            listing = self.local.local_connections(whole).items
            self._snapshot = (whole, now, listing) if len(listing) > wanted else None
        else:
            return self.local.local_connections(query)
        start = bisect.bisect_right(listing, query.after, key=_client_id) if query.after else 0
        return LiveConnections(listing[start : start + wanted], len(listing) - start)


def _client_id(connection: ConnectionInfo) -> str:
    return connection.client_id
