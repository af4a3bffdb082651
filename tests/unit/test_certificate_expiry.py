"""The certificate expiry heap: connections cut at their deadline, in order, without their Will;
connections closed first are neither cut nor kept alive, and the heap stays as large as the live
connections, whatever the churn."""

from __future__ import annotations

import asyncio
import datetime
import gc
from typing import Any

from certmq.broker.certificate_expiry import REBUILD_SLACK, CertificateExpiry
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_events import CLOSED, CONNECTED


class Connection:
    """What the heap reads of a connection, and what it asks of it."""

    def __init__(self, client_id: str, cuts: list[tuple[str, int, str, bool]]) -> None:
        self.client_id = client_id
        self.state = CONNECTED
        self._cuts = cuts

    def close(self, reason_code: int, reason: str, *, publish_will: bool) -> None:
        self.state = CLOSED
        self._cuts.append((self.client_id, reason_code, reason, publish_will))


def in_seconds(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


async def test_connections_are_cut_at_their_deadlines_without_their_will() -> None:
    cuts: list[tuple[str, int, str, bool]] = []
    live: set[Any] = set()
    expiry = CertificateExpiry(live)
    recorded: list[str] = []
    expiry.on_expired = lambda connection, valid_until: recorded.append(connection.client_id)
    later, sooner, gone = Connection("later", cuts), Connection("sooner", cuts), Connection("gone", cuts)
    live.update((later, sooner, gone))
    expiry.watch(later, in_seconds(1.0))  # type: ignore[arg-type]
    expiry.watch(sooner, in_seconds(0.05))  # type: ignore[arg-type]
    expiry.watch(gone, in_seconds(0.1))  # type: ignore[arg-type]
    gone.state = CLOSED  # it disconnected before its certificate expired

    await asyncio.sleep(0.3)
    assert [cut[0] for cut in cuts] == ["sooner"]
    await asyncio.sleep(1.0)
    assert [cut[0] for cut in cuts] == ["sooner", "later"]
    assert recorded == ["sooner", "later"]
    _, code, reason, publish_will = cuts[0]
    assert (code, publish_will) == (ReasonCode.NOT_AUTHORIZED, False)
    assert reason.startswith("the certificate expired at ")
    assert len(expiry) == 0


async def test_closed_connections_are_not_kept_and_the_heap_stays_bounded() -> None:
    cuts: list[tuple[str, int, str, bool]] = []
    live: set[Any] = set()
    expiry = CertificateExpiry(live)
    far = in_seconds(3600)
    staying = [Connection(f"staying-{n}", cuts) for n in range(100)]
    live.update(staying)
    for connection in staying:
        expiry.watch(connection, far)  # type: ignore[arg-type]
    for n in range(20_000):  # devices that connect and go, each with a year to go on its certificate
        passing = Connection(f"passing-{n}", cuts)
        expiry.watch(passing, far)  # type: ignore[arg-type]
        del passing
    gc.collect()
    assert len(expiry) <= 2 * len(live) + REBUILD_SLACK + 1
    assert cuts == []
