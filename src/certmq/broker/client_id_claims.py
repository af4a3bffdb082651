"""Client ids unique across several brokers: before a CONNECT is accepted, the client id is
claimed from whichever other broker holds it (certmq.cluster.client_ids). That broker closes
its connection as a takeover does (0x8E), and hands over the session when it continues: its
subscriptions, its queued and in-flight messages, its will (certmq.broker.session_transfer). A single broker has no claims to make (``BrokerCore.client_id_claims`` is
None)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class MovedSession:
    """A session handed over by the broker that held it, to be resumed here: the records that
    rebuild it (certmq.broker.session_transfer), and when its client left there (wall clock)."""

    records: bytes
    disconnected_at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: ``refusal`` says why the client may not have the id (its session
    belongs to another identity); else ``session`` is what was handed over, if anything."""

    refusal: str | None = None
    session: MovedSession | None = None


class ClientIdClaims(Protocol):
    def claim(self, client_id: str, owner: str, clean_start: bool) -> Awaitable[Claim]:
        """Claim ``client_id`` for a client of ``owner`` about to be accepted here."""
        ...
