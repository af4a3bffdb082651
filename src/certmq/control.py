"""What the management interfaces (REST, RPC, console, CLI) may ask of the running broker.

The API layer sees the broker only through this protocol; the application wires the real
broker to it. Registry operations go through :class:`certmq.registry.service.RegistryService`.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    def listeners(self) -> list[ListenerInfo]: ...

    def connections(self) -> list[ConnectionInfo]: ...

    def kick(self, client_id: str) -> bool:
        """Disconnect a live client (5.0: DISCONNECT 0x98 Administrative action); False if not connected."""
        ...

    def auth_mode(self) -> AuthMode: ...

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        """Switch to "one-way" or "mutual" for the next handshakes; returns how many live
        connections were disconnected (only with ``disconnect_nonconforming``)."""
        ...

    def nonconforming(self, mode: str) -> int:
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
        """Counters for metrics: connections by listener, messages, handshake failures..."""
        ...
