"""Folding the refusals of strangers in the audit logs (docs/registry.md, "Retention and folding").

A stranger is a peer that proved no identity the instance knows. In the decision log: a client
whose TLS handshake failed, that sent no credentials or wrong ones, whose certificate was issued
by no registered CA. In the operations log of the RPC API: a caller whose signature did not verify,
whatever AccessKeyId it named, or that replayed a request already accepted. Anyone can be refused
hundreds of times a second; were each refusal a row, a flood would push the whole history out of
the log within the hour. So each log folds the refusals of strangers in memory, before anything is
written, with a :class:`RefusalFolding` and the log's :class:`FoldingRule` (:data:`DECISIONS`,
:data:`OPERATIONS`). Per source (the IPv4 address, or the IPv6 /64, without the port) and what the
rule says a refusal is (its listener and reason; its action and error code), a window opens at a
refusal, which is written as it happens; the refusals that follow within the window are only
counted, and when it closes they become one row that carries their count and the times of the
first and the last. A flood from one source costs two rows per window and kind, however fast it
goes.

The map of open windows is bounded: once :data:`MAX_OPEN_WINDOWS` are open, refusals from further
sources fold into one window per kind whose source is :data:`OTHER_SOURCES`. The kinds are small
vocabularies that certmq chooses (listeners, reasons, error codes, the actions the API serves),
never a client's text, so that bound holds whatever strangers send.

Sans-io: records in, rows out; the clock is the records' own times and what the caller passes
to :meth:`RefusalFolding.close_expired`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from certmq.registry.models import Result
from certmq.registry.pending import bounded_decision, bounded_operation
from certmq.registry.records import DecisionEntry, OperationEntry

# Open windows at most: each holds one record with its texts cut to FOLDED_TEXT_LIMIT, so the
# map stays within a few megabytes whatever the peers send.
MAX_OPEN_WINDOWS = 10_000
# The source of the refusals folded once the map is full.
OTHER_SOURCES = "*"
# Characters of each text kept from the last refusal of a window (client id, CN, detail; an API
# call's parameter values and message).
FOLDED_TEXT_LIMIT = 256
IPV6_SOURCE_PREFIX = 64

R = TypeVar("R", DecisionEntry, OperationEntry)
WindowKey = tuple[str, str, str]  # source, and the kind of refusal (two words) the rule says


def source_of(peer: str) -> str:
    """The source that the refusals of ``peer`` (``host:port``) are folded by: the IPv4 address,
    the /64 network of an IPv6 address (one subscriber's share, which any host there can change
    its address within), or the host as given when it is not an IP address."""
    host, separator, port = peer.rpartition(":")
    address = _ip_address(host.strip("[]")) if separator and port.isdigit() else None
    if address is None:  # no port after all
        host = peer.strip("[]")
        address = _ip_address(host)
        if address is None:
            return host[:FOLDED_TEXT_LIMIT]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return str(address)


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class FoldingRule(Generic[R]):
    """What one log folds, and how it tells its refusals apart."""

    folds: Callable[[R], bool]  # whether a record is a stranger's refusal, to be folded
    kind: Callable[[R], tuple[str, str]]  # what a window is of, besides its source
    label: Callable[[R], str]  # the label of a folded refusal in the metrics
    kept: Callable[[R], R]  # what a window keeps of its last refusal


def folds(decision: DecisionEntry) -> bool:
    """Whether ``decision`` is folded: a refusal of a peer that proved no known identity."""
    return decision.result == Result.DENY and not decision.identity_known


DECISIONS: FoldingRule[DecisionEntry] = FoldingRule(
    folds=folds,
    kind=lambda decision: (decision.listener, decision.reason),
    label=lambda decision: decision.reason,
    kept=functools.partial(bounded_decision, limit=FOLDED_TEXT_LIMIT),
)

# The action of a call is the name of one the API serves, or "" (the RPC endpoint sees to it: a
# name it does not serve goes to the parameters), and its code one of the API's error codes.
OPERATIONS: FoldingRule[OperationEntry] = FoldingRule(
    folds=lambda operation: not operation.authenticated,
    kind=lambda operation: (operation.action, operation.code),
    label=lambda operation: operation.code,
    kept=functools.partial(bounded_operation, limit=FOLDED_TEXT_LIMIT),
)


@dataclass(slots=True)
class _Window(Generic[R]):
    opened: datetime.datetime  # the time of the refusal written when the window opened
    count: int = 0  # refusals folded since
    first_seen: datetime.datetime | None = None
    last: R | None = None  # the last refusal folded, as the rule keeps it

    def row(self, source: str) -> R | None:
        """The row of the refusals folded in this window, or None when there were none."""
        if self.count == 0 or self.last is None:
            return None
        return dataclasses.replace(self.last, peer=source, count=self.count, first_seen=self.first_seen)


class RefusalFolding(Generic[R]):
    """The open windows of the strangers' refusals in one log. ``window`` 0 folds nothing."""

    def __init__(
        self, rule: FoldingRule[R], window: datetime.timedelta, max_open_windows: int = MAX_OPEN_WINDOWS
    ) -> None:
        self.rule: FoldingRule[R] = rule
        self.window = window
        self.max_open_windows = max_open_windows
        # In the order the windows opened: the oldest first, so expiry stops at the first open one.
        self._windows: dict[WindowKey, _Window[R]] = {}
        # Refusals counted into folded rows instead of written one by one, by the rule's label.
        self.folded: dict[str, int] = {}

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    @property
    def folded_total(self) -> int:
        return sum(self.folded.values())

    def add(self, record: R) -> tuple[R, ...]:
        """Take one record; return the rows to write now: the record itself when it is not
        folded or opens a window (after the row of the window it replaces, if any), nothing
        when it was counted into an open window."""
        rule = self.rule
        if self.window <= datetime.timedelta(0) or not rule.folds(record):
            return (record,)
        windows = self._windows
        first, second = rule.kind(record)
        key = (source_of(record.peer), first, second)
        window = windows.get(key)
        if window is None and len(windows) >= self.max_open_windows:
            key = (OTHER_SOURCES, first, second)
            window = windows.get(key)
        if window is not None:
            if record.time - window.opened < self.window:
                if window.count == 0:
                    window.first_seen = record.time
                window.count += 1
                window.last = rule.kept(record)
                label = rule.label(record)
                self.folded[label] = self.folded.get(label, 0) + 1
                return ()
            del windows[key]
        windows[key] = _Window(opened=record.time)
        closed = None if window is None else window.row(key[0])
        return (record,) if closed is None else (closed, record)

    def close_expired(self, now: datetime.datetime) -> list[R]:
        """Close the windows opened ``window`` or longer before ``now``; return their rows."""
        rows: list[R] = []
        windows = self._windows
        while windows:
            key = next(iter(windows))
            window = windows[key]
            if now - window.opened < self.window:
                break
            del windows[key]
            row = window.row(key[0])
            if row is not None:
                rows.append(row)
        return rows

    def close_all(self) -> list[R]:
        """Close every window (at shutdown); return their rows."""
        rows = [row for key, window in self._windows.items() if (row := window.row(key[0])) is not None]
        self._windows.clear()
        return rows
