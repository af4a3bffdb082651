"""Sessions end when the certificate that let them in expires (docs/certificates.md, "When a
certificate expires").

A connection allowed on a device certificate is cut at the end of the certificate's validity
(its notAfter, or its CA's when that comes first): MQTT 5 clients get DISCONNECT 0x87 with a
reason string, 3.1.1 clients a closed connection, its Will is not published, and the decision
log says so (the ``on_expired`` hook).

All such deadlines share one heap, in wall-clock time as certificates count it, and one loop
timer, armed for the earliest: a CONNECT costs a heap push (0.8 µs with 20,000 connections
watched, under uvloop; a ``call_later`` of its own costs 1.2 µs, and 0.35 µs more to cancel at
every close), a packet nothing, an idle broker no wake-up. A connection that closes first leaves
a weak reference behind, dropped when its deadline comes or when the dead ones outnumber the live
connections (a rebuild, at most once per as many CONNECTs as there are live connections).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Generic, TypeVar

from certmq.broker.subscriber import LiveConnection
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_events import CLOSED, CONNECTED

log = logging.getLogger("certmq.broker")

# A deadline is met a little after notAfter, which is still a valid instant (RFC 5280 4.1.2.5);
# the loop's timers may fire up to a millisecond early (uvloop counts in milliseconds).
AFTER_NOT_AFTER = 0.01
TIMER_TOLERANCE = 0.002
# Dead entries tolerated beyond the live connections before the heap is rebuilt.
REBUILD_SLACK = 1024

C = TypeVar("C", bound=LiveConnection)


class CertificateExpiry(Generic[C]):
    """The deadlines of the live connections that certificates let in."""

    def __init__(self, connections: Collection[C]) -> None:
        self._connections = connections  # the live ones, to know when to rebuild
        self._heap: list[tuple[float, int, weakref.ref[C], datetime]] = []
        self._order = itertools.count()  # ties broken by arrival, never by comparing references
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Called for a connection about to be cut, with the end of its certificate's validity.
        self.on_expired: Callable[[C, datetime], None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, connection: C, valid_until: datetime) -> None:
        """Cut ``connection`` at ``valid_until`` unless it has closed by then."""
        deadline = valid_until.timestamp() + AFTER_NOT_AFTER
        heap = self._heap
        if len(heap) > 2 * len(self._connections) + REBUILD_SLACK:
            self._rebuild()
        heapq.heappush(heap, (deadline, next(self._order), weakref.ref(connection), valid_until))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        """Wake at ``deadline`` (wall clock) by the loop's monotonic clock; a wall clock that is
        set back meanwhile only makes the wake-up early, and it is armed again."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(deadline - time.time(), self._expire)
        self._timer_at = deadline

    def _rebuild(self) -> None:
        live = [
            entry
            for entry in self._heap
            if (connection := entry[2]()) is not None and connection.state != CLOSED
        ]
        heapq.heapify(live)
        self._heap = live

    def _expire(self) -> None:
        self._timer = None
        now = time.time() + TIMER_TOLERANCE
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, reference, valid_until = heapq.heappop(heap)
            connection = reference()
            if connection is not None and connection.state == CONNECTED:
                self._cut(connection, valid_until)
        if heap:
            self._arm(heap[0][0])

    def _cut(self, connection: C, valid_until: datetime) -> None:
        log.info(
            "disconnecting %s: its certificate expired at %s", connection.client_id, valid_until.isoformat()
        )
        if self.on_expired is not None:
            try:
                self.on_expired(connection, valid_until)
            except Exception:
                log.exception("could not record the expiry of %s", connection.client_id)
        connection.close(
            ReasonCode.NOT_AUTHORIZED,
            f"the certificate expired at {valid_until.isoformat()}",
            publish_will=False,
        )
