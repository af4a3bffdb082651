"""The RPC API's nonces and rate buckets on a node of a cluster: kept in the registry every node
shares (certmq.registry.api_guards), so that a request replayed to another node is refused
(``SignatureNonceUsed``) and an AccessKey's calls on every node count against one bucket
(``SystemOverFlow``). A single node keeps them in memory instead: no database write per call.

When the registry cannot be reached the call is answered 503 ``ServiceUnavailable``: a node
that cannot tell a replay from a new request refuses it rather than guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from certmq.api.rpc.errors import SERVICE_UNAVAILABLE, RpcError
from certmq.api.rpc.rate_limit import check_rate_settings
from certmq.api.rpc.signature import NonceUse
from certmq.registry.service import RegistryService

UNREACHABLE = "the registry that the nodes of this cluster share cannot be reached; try again later"


def _unavailable() -> RpcError:
    return RpcError(503, SERVICE_UNAVAILABLE, UNREACHABLE, {"Retry-After": "5"})


class SharedNonces:
    """The nonces accepted by every node, in the registry."""

    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry

    async def spend(self, access_key_id: str, nonce: str, *, expires_at: float, now: float) -> NonceUse:
        try:
            new = await self.registry.spend_nonce(access_key_id, nonce, expires_at=expires_at, now=now)
        except SQLAlchemyError as error:
            raise _unavailable() from error
        return NonceUse.NEW if new else NonceUse.USED


class SharedRateLimiter:
    """The token bucket of each AccessKey, one for every node, in the registry. ``rate`` 0
    turns limiting off. ``clock`` is the wall clock: the nodes compare their times."""

    def __init__(
        self, registry: RegistryService, rate: float, burst: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        check_rate_settings(rate, burst)
        self.registry = registry
        self.rate = rate
        self.burst = burst
        self.clock = clock

    async def take(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        try:
            return await self.registry.take_api_call(key, rate=self.rate, burst=self.burst, now=self.clock())
        except SQLAlchemyError as error:
            raise _unavailable() from error
