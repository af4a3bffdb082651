"""What the management interfaces (REST, RPC, console, CLI) may ask of the running broker.

The API layer sees the broker only through this protocol; the application wires the real
broker to it. Registry operations go through :class:`certmq.registry.service.RegistryService`.

The broker may be one node of several (docs/cluster.md): what an operator sees of the live
connections and does to them is then the cluster's, each connection named with its node, and
what a node that did not answer would have said is named as missing, never silently left out.
A single node is a cluster of one, and answers the same way.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from certmq.auth.identity import Identity
from certmq.auth.mode import AuthMode


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    client_id: str
    listener: str  # "tcp" | "tls" | "ws" | "wss"
    peer: str
    protocol_version: int  # 4 = MQTT 3.1.1, 5 = MQTT 5.0
    connected_at: datetime
    identity: Identity  # who the client proved to be at CONNECT
    node: str  # the node of the cluster the client is connected to (config: cluster.node_name)


@dataclass(frozen=True, slots=True)
class ConnectionQuery:
    """Which live connections to list: every one by default; the filters combine. One value,
    from the REST API, the console and the CLI to every node unchanged."""

    listener: str = ""  # only those on this listener
    client_id: str = ""  # only the client with this id
    client_id_contains: str = ""  # only those whose client id holds this text
    # Only the first ones by client id (what one page needs); ``total`` still counts them all.
    first: int | None = None
    # Only those whose client id sorts after this one (reading a node's connections in parts).
    after: str = ""

    def matches(self, connection: ConnectionInfo) -> bool:
        return (
            (not self.listener or connection.listener == self.listener)
            and (not self.client_id or connection.client_id == self.client_id)
            and (not self.client_id_contains or self.client_id_contains in connection.client_id)
            and (not self.after or connection.client_id > self.after)
        )


EVERY_CONNECTION = ConnectionQuery()


@dataclass(frozen=True, slots=True)
class LiveConnections:
    """The live connections a query picks, by client id, on every node that answered."""

    items: list[ConnectionInfo]
    total: int  # how many the query picks, ``first`` or not
    # Nodes of the cluster that did not answer in time: their connections are not in ``items``.
    missing_nodes: list[str] = field(default_factory=list)


def select_connections(connections: Iterable[ConnectionInfo], query: ConnectionQuery) -> LiveConnections:
    """The connections of one node that ``query`` picks, by client id."""
    picked = [connection for connection in connections if query.matches(connection)]
    if query.first is not None and query.first < len(picked):
        items = heapq.nsmallest(query.first, picked, key=_by_client_id)
    else:
        items = sorted(picked, key=_by_client_id)
    return LiveConnections(items, len(picked))


def merge_connections(parts: Iterable[LiveConnections], query: ConnectionQuery) -> LiveConnections:
    """The answers of several nodes as one: their items merged by client id (each part is
    sorted), the first ``query.first`` kept, the totals added, the missing nodes joined."""
    parts = list(parts)
    merged = heapq.merge(*(part.items for part in parts), key=_by_client_id)
    items = list(merged if query.first is None else itertools.islice(merged, query.first))
    missing = sorted({node for part in parts for node in part.missing_nodes})
    return LiveConnections(items, sum(part.total for part in parts), missing)


def _by_client_id(connection: ConnectionInfo) -> str:
    return connection.client_id


@dataclass(frozen=True, slots=True)
class KickOutcome:
    """What kicking a client id did: the node that disconnected it, or None when no node that
    answered had it connected."""

    node: str | None
    missing_nodes: list[str] = field(default_factory=list)

    @property
    def kicked(self) -> bool:
        return self.node is not None

    def unanswered(self) -> str:
        """`` (nodes that did not answer: …)``, or "" when every node answered: what a reply that
        found no such client must add, since the client may be on one of them."""
        return f" (nodes that did not answer: {', '.join(self.missing_nodes)})" if self.missing_nodes else ""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node as the overview shows it: its name, its HTTP listener (``host:port``, "" when it
    has none), when it started, and its counters (:meth:`BrokerControl.stats`)."""

    name: str
    http: str
    started_at: datetime
    stats: dict[str, int]


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """Every node that answered, this one first, and the nodes that did not."""

    nodes: list[NodeStatus]
    missing_nodes: list[str] = field(default_factory=list)

    def total(self, counter: str) -> int:
        """``counter`` (a key of :meth:`BrokerControl.stats`) summed over the nodes."""
        return sum(node.stats.get(counter, 0) for node in self.nodes)


@dataclass(frozen=True, slots=True)
class ServerCertificateInfo:
    subject: str
    issuer: str
    sans: list[str]
    serial: str  # Sn format
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str  # hex
    cert_file: str
    generation: int


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    name: str
    host: str
    port: int


class ServerCertificateRejected(Exception):
    """The certificate and key given to replace the server certificate cannot be used."""


class BrokerControl(Protocol):
    @property
    def node(self) -> str:
        """This node's name (config: ``cluster.node_name``, or the one derived from the host)."""
        ...

    def listeners(self) -> list[ListenerInfo]:
        """This node's listeners."""
        ...

    async def connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        """The live connections of every node of the cluster that ``query`` picks."""
        ...

    async def kick(self, client_id: str) -> KickOutcome:
        """Disconnect a live client, on whichever node it is connected to (5.0: DISCONNECT 0x98
        Administrative action)."""
        ...

    async def nodes(self) -> ClusterStatus:
        """Every node of the cluster and its counters."""
        ...

    def unready(self) -> list[str]:
        """What this node lacks to serve (its listeners, its link to the cluster); empty when
        it is ready (``/readyz``)."""
        ...

    def auth_mode(self) -> AuthMode: ...

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        """Switch to "one-way" or "mutual" for the next handshakes; returns how many live
        connections were disconnected (only with ``disconnect_nonconforming``)."""
        ...

    async def nonconforming(self, mode: str) -> int:
        """How many live connections ``mode`` would refuse (the rule is
        :meth:`certmq.auth.admission.ListenerPolicy.conforms`): the ones that switching to it with
        ``disconnect_nonconforming`` disconnects."""
        ...

    def describe_listeners(self, mode: str) -> str:
        """Which MQTT listeners ``mode`` opens and to whom, in one line
        (:meth:`certmq.auth.admission.ListenerPolicy.describe`)."""
        ...

    def server_certificate(self) -> ServerCertificateInfo: ...

    async def replace_server_certificate(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        """Use a new server certificate for the next handshakes (live connections are kept);
        raises ServerCertificateRejected when the pair is unusable."""
        ...

    def stats(self) -> dict[str, int]:
        """This node's counters for metrics: connections by listener, messages, handshake
        failures..., and in a cluster its link to the other nodes (``cluster_…``)."""
        ...


class NodeControl(BrokerControl, Protocol):
    """One node's own control: what it answers for itself when the cluster's control
    (:class:`certmq.cluster.control.ClusterControl`) asks every node."""

    http: str  # its HTTP listener, host:port, once bound ("" before, and without one)
    started_at: datetime

    def local_connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        """This node's live connections that ``query`` picks."""
        ...

    def kick_here(self, client_id: str) -> bool:
        """Disconnect ``client_id`` if it is connected to this node; False if it is not."""
        ...

    def nonconforming_here(self, mode: str) -> int:
        """How many of this node's live connections ``mode`` would refuse."""
        ...

    async def conform_here(self, mode: AuthMode) -> int:
        """Use ``mode``, which another node switched the cluster to, and disconnect this node's
        live connections that it refuses; how many."""
        ...

    def status(self) -> NodeStatus:
        """This node as the overview shows it."""
        ...
