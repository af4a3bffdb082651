"""The auth mode in use (one-way or mutual TLS), switched at run time without a restart.

The mode an operator set is kept in the registry, so that it outlives a restart and every node of
a cluster reads the same; ``instance.auth_mode`` in the configuration is only the first one.
Switching asks for client certificates in the next TLS handshakes, opens and closes the MQTT
listeners as the listener policy says (:class:`certmq.auth.admission.ListenerPolicy`), and, when
asked, disconnects the live connections the new mode would refuse.
"""

from __future__ import annotations

import asyncio
import logging

from certmq.auth.admission import ListenerPolicy
from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.auth.mode import AuthMode
from certmq.broker import control
from certmq.broker.connection import MQTTConnection
from certmq.broker.server import Broker
from certmq.registry.events import RegistryEvent, SettingChanged
from certmq.registry.service import RegistryService
from certmq.tls.context import ServerContexts

log = logging.getLogger("certmq")

# The registry setting that holds the mode an operator set.
AUTH_MODE_SETTING = "auth_mode"


async def stored_auth_mode(registry: RegistryService, configured: AuthMode) -> AuthMode:
    """The mode to start in: the one an operator set, else the configured one."""
    stored = await registry.get_setting(AUTH_MODE_SETTING)
    return AuthMode(stored) if stored in tuple(AuthMode) else configured


class AuthModeSwitch:
    def __init__(
        self,
        mode: AuthMode,
        policy: ListenerPolicy,
        registry: RegistryService,
        contexts: ServerContexts,
        broker: Broker,
    ) -> None:
        # Read by the authenticator on every CONNECT.
        self.mode = mode
        self.policy = policy
        self._registry = registry
        self._contexts = contexts
        self._broker = broker
        self._following: set[asyncio.Task[None]] = set()
        self._switching = asyncio.Lock()
        # False until a switch: the mode of the start, set up by the start.
        self._in_use = False

    def closed_listeners(self) -> frozenset[str]:
        """The MQTT listeners the mode in use keeps closed."""
        return frozenset(name for name in MQTT_LISTENERS if not self.policy.is_open(name, self.mode))

    async def switch(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        """Use ``mode`` from the next handshake on; with ``disconnect_nonconforming``, disconnect
        the live connections it refuses and return how many."""
        if mode not in tuple(AuthMode):
            raise ValueError(f"auth mode must be one-way or mutual, not {mode!r}")
        mode = AuthMode(mode)
        await self._registry.set_setting(AUTH_MODE_SETTING, mode.value)
        if not disconnect_nonconforming:
            await self._use(mode)
            return 0
        return await self.conform(mode)

    async def conform(self, mode: AuthMode) -> int:
        """Use ``mode`` (already stored: another node of the cluster switched to it) and
        disconnect the live connections it refuses; how many."""
        await self._use(mode)
        return self._broker.core.disconnect_where(
            lambda connection: not self._conforms(connection, mode), f"the auth mode changed to {mode}"
        )

    async def _use(self, mode: AuthMode) -> None:
        # One switch at a time: this node's and another node's may come together.
        async with self._switching:
            if mode == self.mode and self._in_use:
                return
            self.mode = mode
            self._in_use = True
            await self._contexts.update(verifies_client_certificates=mode == AuthMode.MUTUAL)
            for name in MQTT_LISTENERS:
                if self.policy.is_open(name, mode):
                    await self._broker.open_listener(name)
                else:
                    await self._broker.close_listener(name)
            log.info("auth mode is now %s: %s", mode, self.policy.describe(mode))

    def on_registry_event(self, event: RegistryEvent) -> None:
        """Another node of the cluster switched the mode: use it here too."""
        if isinstance(event, SettingChanged) and event.key == AUTH_MODE_SETTING:
            task = asyncio.get_running_loop().create_task(self._follow())
            self._following.add(task)
            task.add_done_callback(self._following.discard)

    async def _follow(self) -> None:
        await self._use(await stored_auth_mode(self._registry, self.mode))

    def nonconforming(self, mode: str) -> int:
        """How many live connections ``mode`` would refuse."""
        return control.count_connections(
            self._broker, lambda connection: not self._conforms(connection, mode)
        )

    def _conforms(self, connection: MQTTConnection, mode: str) -> bool:
        return self.policy.conforms(connection.listener.name, connection.identity, mode)
