"""The running instance as the management interfaces see it: :class:`certmq.control.BrokerControl`
over the broker (:mod:`certmq.broker.control`), the auth mode switch and the server certificate
in use. The interfaces (REST, RPC, console) hold this object and nothing else of the broker.

This is one node's view: a node of a cluster wraps it in
:class:`certmq.cluster.control.ClusterControl`, which asks the other nodes as well."""

from __future__ import annotations

from datetime import datetime

from certmq.auth.mode import AuthMode
from certmq.auth_mode_switch import AuthModeSwitch
from certmq.broker import control
from certmq.broker.server import Broker
from certmq.control import (
    EVERY_CONNECTION,
    ClusterStatus,
    ConnectionQuery,
    KickOutcome,
    ListenerInfo,
    LiveConnections,
    NodeStatus,
    ServerCertificateInfo,
    select_connections,
)
from certmq.server_certificate_in_use import ServerCertificateInUse


class InstanceControl:
    def __init__(
        self,
        broker: Broker,
        auth_modes: AuthModeSwitch,
        server_certificate: ServerCertificateInUse,
        *,
        node: str,
        started_at: datetime,
    ) -> None:
        self._broker = broker
        self._auth_modes = auth_modes
        self._server_certificate = server_certificate
        self._node = node
        self.started_at = started_at
        # The HTTP listener's address once it is bound ("" without one).
        self.http = ""

    @property
    def node(self) -> str:
        return self._node

    def listeners(self) -> list[ListenerInfo]:
        return control.listeners(self._broker)

    async def connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        return self.local_connections(query)

    def local_connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        """This node's live connections that ``query`` picks."""
        return select_connections(control.connections(self._broker, self._node), query)

    async def kick(self, client_id: str) -> KickOutcome:
        return KickOutcome(self._node if self.kick_here(client_id) else None)

    def kick_here(self, client_id: str) -> bool:
        """Disconnect ``client_id`` if it is connected to this node."""
        return control.kick(self._broker, client_id)

    async def nodes(self) -> ClusterStatus:
        return ClusterStatus([self.status()])

    def status(self) -> NodeStatus:
        """This node as the overview shows it."""
        return NodeStatus(self._node, self.http, self.started_at, self.stats())

    def unready(self) -> list[str]:
        closed = self._auth_modes.closed_listeners()
        return [f"listener {name}" for name in control.unopened_listeners(self._broker, closed)]

    def stats(self) -> dict[str, int]:
        return control.stats(self._broker)

    def auth_mode(self) -> AuthMode:
        return self._auth_modes.mode

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        return await self._auth_modes.switch(mode, disconnect_nonconforming=disconnect_nonconforming)

    async def conform_here(self, mode: AuthMode) -> int:
        return await self._auth_modes.conform(mode)

    async def nonconforming(self, mode: str) -> int:
        return self.nonconforming_here(mode)

    def nonconforming_here(self, mode: str) -> int:
        return self._auth_modes.nonconforming(mode)

    def describe_listeners(self, mode: str) -> str:
        return self._auth_modes.policy.describe(mode)

    def server_certificate(self) -> ServerCertificateInfo:
        return self._server_certificate.info()

    async def replace_server_certificate(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        return await self._server_certificate.replace(chain_pem, key_pem)
