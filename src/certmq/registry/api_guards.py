"""What guards the RPC API of a cluster against replays and floods, kept in the registry that
every node shares (docs/api.md, "Signatures" and "Rate limit"; docs/cluster.md):

- **signature nonces**: a row per (AccessKeyId, nonce) accepted, until its request's time leaves
  the signature window. Spending a nonce is one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` the
  row there has expired ``… RETURNING``: a row back means the nonce is new (or its last use has
  expired), none means it is in use; the primary key makes two nodes spending the same nonce at
  the same moment agree that only one of them did. Expired rows are deleted once a minute.
- **rate buckets**: a token bucket per AccessKey (``rate`` calls a second after a ``burst``),
  taken from in one ``INSERT … ON CONFLICT DO UPDATE … RETURNING``: the database refills the
  bucket for the time since it was last used, takes a call if one is left and says whether it
  did, the row locked meanwhile, so the calls of every node count against one bucket.

Times are seconds since the epoch (the nodes' clocks); a clock behind the bucket's last use
refills nothing rather than taking back.

A single node keeps both in memory (certmq.api.rpc.signature.NonceCache and
certmq.api.rpc.rate_limit.RateLimiter), which costs no database write per call; these are for
nodes that share their registry. They work on SQLite too.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import case, delete, func, literal
from sqlalchemy.dialects import postgresql, sqlite

from certmq.registry.database import Database
from certmq.registry.models import ApiNonceRow, ApiRateBucketRow
from certmq.registry.worker import RegistryPart, Shared

# How often expired nonces are deleted, at most.
PRUNE_INTERVAL = 60.0


def _insert(database: Database, table: Any) -> Any:
    """An INSERT that takes ON CONFLICT, in the dialect of ``database``."""
    return (postgresql.insert if database.dialect == "postgresql" else sqlite.insert)(table)


def spend_nonce(database: Database, access_key_id: str, nonce: str, *, expires_at: float, now: float) -> bool:
    """Record ``nonce`` of ``access_key_id`` as used until ``expires_at``: True when it was not
    in use at ``now``, False when it was (a replay)."""
    table = ApiNonceRow.__table__
    statement = _insert(database, table).values(
        access_key_id=access_key_id, nonce=nonce, expires_at=expires_at
    )
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.access_key_id, table.c.nonce],
        set_={"expires_at": statement.excluded.expires_at},
        where=table.c.expires_at <= now,
    ).returning(table.c.expires_at)
    with database.engine.begin() as connection:
        return connection.execute(statement).first() is not None


def prune_nonces(database: Database, now: float) -> int:
    """Delete the nonces expired at ``now``; how many."""
    with database.engine.begin() as connection:
        result = connection.execute(delete(ApiNonceRow).where(ApiNonceRow.expires_at <= now))
        return int(getattr(result, "rowcount", 0) or 0)


def take_call(database: Database, access_key_id: str, *, rate: float, burst: int, now: float) -> float:
    """Take one call from ``access_key_id``'s bucket at ``now``: 0.0 when allowed, otherwise the
    seconds until the next call would be."""
    table = ApiRateBucketRow.__table__
    smaller, larger = (
        (func.least, func.greatest) if database.dialect == "postgresql" else (func.min, func.max)
    )
    elapsed = larger(literal(0.0), literal(now) - table.c.updated_at)
    refilled = smaller(literal(float(burst)), table.c.tokens + elapsed * literal(rate))
    statement = _insert(database, table).values(
        access_key_id=access_key_id, tokens=float(burst) - 1.0, updated_at=now, granted=True
    )
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.access_key_id],
        set_={
            "tokens": case((refilled >= 1.0, refilled - 1.0), else_=refilled),
            "granted": refilled >= 1.0,
            "updated_at": larger(table.c.updated_at, literal(now)),
        },
    ).returning(table.c.tokens, table.c.granted)
    with database.engine.begin() as connection:
        tokens, granted = connection.execute(statement).one()
    return 0.0 if granted else (1.0 - tokens) / rate


class ApiGuards(RegistryPart):
    """The nonces and rate buckets of the RPC API, on the registry's database thread."""

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self._pruned_at = 0.0

    async def spend_nonce(self, access_key_id: str, nonce: str, *, expires_at: float, now: float) -> bool:
        """:func:`spend_nonce`, and once a minute the expired nonces deleted first."""
        store = self._store
        if now - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = now
            await self._worker.run(functools.partial(prune_nonces, store, now))
        return await self._worker.run(
            functools.partial(spend_nonce, store, access_key_id, nonce, expires_at=expires_at, now=now)
        )

    async def take_call(self, access_key_id: str, *, rate: float, burst: int, now: float) -> float:
        """:func:`take_call`."""
        return await self._worker.run(
            functools.partial(take_call, self._store, access_key_id, rate=rate, burst=burst, now=now)
        )
