"""What registry changes do to the running broker, at once and without a restart.

Registry changes reach the broker only as events (:mod:`certmq.registry.events`): a changed set of
CAs rebuilds the TLS trust for the next handshakes; a change that revokes (which one does, and
whom it cuts: :mod:`certmq.auth.revocation`) disconnects the live sessions it names. A session
resumed or taken over is checked again with :meth:`RevocationEnforcement.identity_still_valid`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from certmq.auth.revocation import revocation_reason, revokes
from certmq.broker.connection import MQTTConnection
from certmq.broker.server import Broker
from certmq.broker.session import Session
from certmq.registry.events import CaAdded, CaDeleted, RegistryEvent
from certmq.registry.index import TrustIndex
from certmq.tls.context import ServerContexts

log = logging.getLogger("certmq")


def registered_ca_pems(index: TrustIndex) -> list[str]:
    """The registered CAs, which the TLS layer trusts to sign client certificates."""
    return [entry.certificate.public_bytes(Encoding.PEM).decode() for entry in index.cas()]


class RevocationEnforcement:
    def __init__(
        self,
        index: TrustIndex,
        access_key_secrets: Mapping[str, str],
        contexts: ServerContexts,
        broker: Broker,
    ) -> None:
        self._index = index
        self._access_key_secrets = access_key_secrets
        self._contexts = contexts
        self._broker = broker
        # Held until done: the loop keeps only a weak reference to a task.
        self._tasks: set[asyncio.Task[None]] = set()

    def on_registry_event(self, event: RegistryEvent) -> None:
        if isinstance(event, (CaAdded, CaDeleted)):
            self._spawn(self._rebuild_trust())
        reason = revocation_reason(event)
        if reason is not None:
            self._cut(lambda connection: revokes(event, connection.identity), reason)

    def identity_still_valid(self, session: Session) -> bool:
        """Whether the identity a session's client authenticated with still stands: its device
        certificate registered and active, not expired, issued by a registered, active CA that
        has not expired; its AccessKey not deleted."""
        identity = session.identity
        if identity.has_device_certificate:
            index = self._index
            ca, device = index.ca(identity.ca_sn), index.device(identity.ca_sn, identity.device_sn)
            if ca is None or not ca.active or device is None or not device.active:
                return False
            now = datetime.now(UTC)
            not_after = identity.certificate_not_after
            if ca.certificate.not_valid_after_utc < now or (not_after is not None and not_after < now):
                return False
        access_key_id = identity.access_key_id
        return not access_key_id or access_key_id in self._access_key_secrets

    def registration_failed(self, ca_sn: str, device_sn: str, reason: str) -> None:
        """A device let in on its first connection could not be registered: cut it off."""
        self._cut(
            lambda connection: connection.identity.is_device(ca_sn, device_sn),
            f"device certificate {device_sn} could not be registered ({reason})",
        )

    def _cut(self, matches: Callable[[MQTTConnection], bool], reason: str) -> None:
        count = self._broker.core.disconnect_where(matches, reason)
        if count:
            log.info("%s: disconnected %d session(s)", reason, count)

    async def _rebuild_trust(self) -> None:
        await self._contexts.update(client_cas=registered_ca_pems(self._index))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("rebuilding the TLS trust failed", exc_info=task.exception())
