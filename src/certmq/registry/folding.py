"""Folding the refusals of strangers in the decision log (docs/registry.md, "Retention and folding").

A stranger is a peer that proved no identity the instance knows: its TLS handshake failed, it
sent no credentials or wrong ones, its certificate was issued by no registered CA. Anyone can be
refused hundreds of times a second; were each refusal a row, a flood would push the whole history
out of the log within the hour. So the refusals of strangers are folded in memory, before
anything is written. Per listener, source (the IPv4 address, or the IPv6 /64, without the port)
and reason, a window opens at a refusal, which is written as it happens; the refusals that follow
within the window are only counted, and when it closes they become one row that carries their
count and the times of the first and the last. A flood from one source costs two rows per window
and reason, however fast it goes.

The map of open windows is bounded: once :data:`MAX_OPEN_WINDOWS` are open, refusals from further
sources fold into one window per listener and reason whose source is :data:`OTHER_SOURCES`.

Sans-io: decisions in, rows out; the clock is the decisions' own times and what the caller passes
to :meth:`RefusalFolding.close_expired`.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from dataclasses import dataclass

from certmq.registry.models import Result
from certmq.registry.records import Decision

# Open windows at most: each holds one decision with its texts cut to FOLDED_TEXT_LIMIT, so the
# map stays within a few megabytes whatever the peers send.
MAX_OPEN_WINDOWS = 10_000
# The source of the refusals folded once the map is full.
OTHER_SOURCES = "*"
# Characters of the client id, CN and detail kept from the last refusal of a window.
FOLDED_TEXT_LIMIT = 256
IPV6_SOURCE_PREFIX = 64
_NOTHING: tuple[Decision, ...] = ()

WindowKey = tuple[str, str, str]  # listener, source, reason


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


def folds(decision: Decision) -> bool:
    """Whether ``decision`` is folded: a refusal of a peer that proved no known identity."""
    return decision.result == Result.DENY and not decision.identity_known


def _cut(text: str) -> str:
    return text[:FOLDED_TEXT_LIMIT] if isinstance(text, str) else ""


@dataclass(slots=True)
class _Window:
    opened: datetime.datetime  # the time of the refusal written when the window opened
    count: int = 0  # refusals folded since
    first_seen: datetime.datetime | None = None
    last: Decision | None = None  # the last refusal folded, its texts cut

    def fold(self, decision: Decision) -> None:
        if self.count == 0:
            self.first_seen = decision.time
        self.count += 1
        if (
            len(decision.client_id) > FOLDED_TEXT_LIMIT
            or len(decision.cn) > FOLDED_TEXT_LIMIT
            or len(decision.detail) > FOLDED_TEXT_LIMIT
        ):
            decision = dataclasses.replace(
                decision,
                client_id=_cut(decision.client_id),
                cn=_cut(decision.cn),
                detail=_cut(decision.detail),
            )
        self.last = decision

    def row(self, source: str) -> Decision | None:
        """The row of the refusals folded in this window, or None when there were none."""
        if self.count == 0 or self.last is None:
            return None
        return dataclasses.replace(self.last, peer=source, count=self.count, first_seen=self.first_seen)


class RefusalFolding:
    """The open windows of the strangers' refusals. ``window`` 0 folds nothing."""

    def __init__(self, window: datetime.timedelta, max_open_windows: int = MAX_OPEN_WINDOWS) -> None:
        self.window = window
        self.max_open_windows = max_open_windows
        # In the order the windows opened: the oldest first, so expiry stops at the first open one.
        self._windows: dict[WindowKey, _Window] = {}
        # Refusals counted into folded rows instead of written one by one, by reason.
        self.folded: dict[str, int] = {}

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    @property
    def folded_total(self) -> int:
        return sum(self.folded.values())

    def add(self, decision: Decision) -> tuple[Decision, ...]:
        """Take one decision; return the rows to write now: the decision itself when it is not
        folded or opens a window (after the row of the window it replaces, if any), nothing
        when it was counted into an open window."""
        if self.window <= datetime.timedelta(0) or not folds(decision):
            return (decision,)
        windows = self._windows
        key = (decision.listener, source_of(decision.peer), decision.reason)
        window = windows.get(key)
        if window is None and len(windows) >= self.max_open_windows:
            key = (decision.listener, OTHER_SOURCES, decision.reason)
            window = windows.get(key)
        if window is not None:
            if decision.time - window.opened < self.window:
                window.fold(decision)
                self.folded[decision.reason] = self.folded.get(decision.reason, 0) + 1
                return _NOTHING
            del windows[key]
        windows[key] = _Window(opened=decision.time)
        closed = None if window is None else window.row(key[1])
        return (decision,) if closed is None else (closed, decision)

    def close_expired(self, now: datetime.datetime) -> list[Decision]:
        """Close the windows opened ``window`` or longer before ``now``; return their rows."""
        rows: list[Decision] = []
        windows = self._windows
        while windows:
            key = next(iter(windows))
            window = windows[key]
            if now - window.opened < self.window:
                break
            del windows[key]
            row = window.row(key[1])
            if row is not None:
                rows.append(row)
        return rows

    def close_all(self) -> list[Decision]:
        """Close every window (at shutdown); return their rows."""
        rows = [row for key, window in self._windows.items() if (row := window.row(key[1])) is not None]
        self._windows.clear()
        return rows
