"""Client ids unique across several brokers: before a CONNECT is accepted, the client id is
claimed from whichever other broker holds it (certmq.cluster.client_ids). That broker closes
its connection as a takeover does (0x8E), and hands over the session's subscriptions when the
session continues. A single broker has no claims to make (``BrokerCore.client_id_claims`` is
None)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

# A subscription as it moves: SubscriptionEntry.options() (filter, QoS, No Local, Retain As
# Published, Retain Handling, subscription identifier).
SubscriptionOptions = tuple[str, int, bool, bool, int, int | None]


@dataclass(frozen=True, slots=True)
class MovedSession:
    """A session handed over by the broker that held it, to be resumed here."""

    protocol_version: int
    expiry_interval: int
    owner: str
    subscriptions: list[SubscriptionOptions] = field(default_factory=list)


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
