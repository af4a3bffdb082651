"""The running instance as the management interfaces see it: :class:`certmq.control.BrokerControl`
over the broker (:mod:`certmq.broker.control`), the auth mode switch and the server certificate
in use. The interfaces (REST, RPC, console) hold this object and nothing else of the broker."""

from __future__ import annotations

from certmq.auth.mode import AuthMode
from certmq.auth_mode_switch import AuthModeSwitch
from certmq.broker import control
from certmq.broker.server import Broker
from certmq.control import ConnectionInfo, ListenerInfo, ServerCertificateInfo
from certmq.server_certificate_in_use import ServerCertificateInUse


class InstanceControl:
    def __init__(
        self, broker: Broker, auth_modes: AuthModeSwitch, server_certificate: ServerCertificateInUse
    ) -> None:
        self._broker = broker
        self._auth_modes = auth_modes
        self._server_certificate = server_certificate

    def listeners(self) -> list[ListenerInfo]:
        return control.listeners(self._broker)

    def connections(self) -> list[ConnectionInfo]:
        return control.connections(self._broker)

    def kick(self, client_id: str) -> bool:
        return control.kick(self._broker, client_id)

    def stats(self) -> dict[str, int]:
        return control.stats(self._broker)

    def auth_mode(self) -> AuthMode:
        return self._auth_modes.mode

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        return await self._auth_modes.switch(mode, disconnect_nonconforming=disconnect_nonconforming)

    def nonconforming(self, mode: str) -> int:
        return self._auth_modes.nonconforming(mode)

    def describe_listeners(self, mode: str) -> str:
        return self._auth_modes.policy.describe(mode)

    def server_certificate(self) -> ServerCertificateInfo:
        return self._server_certificate.info()

    async def replace_server_certificate(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        return await self._server_certificate.replace(chain_pem, key_pem)
