"""Spreading a node's connections evenly over the workers of ``certmq serve --workers N``.

The kernel hands each new connection to one of the workers sharing a port (``SO_REUSEPORT``) by a
hash of its addresses and ports, not by how many connections each worker holds: a hundred
connections often split 60 to 40, ten 7 to 3, and the busier worker then holds the node back
(docs/benchmarks.md, "Cluster"). So a worker that accepts a connection while it holds at least
:data:`MARGIN` more than the least loaded of the others hands the connection over to that one
before reading a byte of it: the socket travels over a Unix socket (``SCM_RIGHTS``) and the other
worker serves it as if it had accepted it, TLS handshake included.

- Each worker writes how many connections it holds, and when it last wrote, to its slot of a
  small file that all of them map (:class:`WorkerLoads`); a slot not written for
  :data:`STALE_AFTER` seconds is a worker that is gone, and is left alone.
- A connection handed over is never handed over again, and a worker that cannot be reached
  (gone, or its socket full) leaves the connection with the one that accepted it.
- The sockets (sequenced packets) are in Linux's abstract namespace, named after the data
  directory and the worker.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import hashlib
import logging
import mmap
import os
import socket
import struct
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

log = logging.getLogger("certmq.workers")

MAX_WORKERS = 64
# A worker hands a new connection over when it holds this many more than the least loaded one.
MARGIN = 2
# A slot not written for this long belongs to a worker that is gone.
STALE_AFTER = 2.0
# How often a worker writes its count while nothing arrives (connections also leave).
REFRESH = 0.25
# A worker's slot: connections held, CLOCK_MONOTONIC of the last write and of its start, then
# how many connections it has taken over from each worker.
_HEAD = struct.Struct("<qdd")
_TAKEN = struct.Struct("<q")
_SLOT_SIZE = _HEAD.size + MAX_WORKERS * _TAKEN.size
LOADS_FILE = "loads"
# The sending worker's number (one byte) and a listener's name, then the socket, in one packet.
_NAME_BYTES = 32


@typing.runtime_checkable
class ReportsLoss(typing.Protocol):
    """The protocol of an accepted connection (MQTT, TLS or WebSocket): it calls ``on_lost``
    when its connection is lost."""

    on_lost: Callable[[], None] | None


@dataclass(frozen=True, slots=True)
class OtherWorker:
    """Another worker, as its slot says."""

    number: int
    connections: int
    started: float
    # The connections it has taken over from the worker reading the slot.
    taken_from_reader: int


class WorkerLoads:
    """The connection counts of a node's workers, in a file every worker maps."""

    def __init__(self, directory: Path, number: int) -> None:
        if not 1 <= number <= MAX_WORKERS:
            raise ValueError(f"worker number {number} is not within 1..{MAX_WORKERS}")
        self.number = number
        self.started = time.monotonic()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = MAX_WORKERS * _SLOT_SIZE
        descriptor = os.open(directory / LOADS_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(descriptor).st_size < size:
                os.ftruncate(descriptor, size)
            self._map = mmap.mmap(descriptor, size)
        finally:
            os.close(descriptor)
        self._slot = (number - 1) * _SLOT_SIZE
        self._map[self._slot : self._slot + _SLOT_SIZE] = bytes(_SLOT_SIZE)
        self._taken = [0] * MAX_WORKERS

    def write(self, count: int) -> None:
        _HEAD.pack_into(self._map, self._slot, count, time.monotonic(), self.started)

    def took_over_from(self, number: int) -> None:
        """This worker took over a connection from worker ``number`` (counted in its slot)."""
        if 1 <= number <= MAX_WORKERS:
            self._taken[number - 1] += 1
            _TAKEN.pack_into(
                self._map, self._slot + _HEAD.size + (number - 1) * _TAKEN.size, self._taken[number - 1]
            )

    def leave(self) -> None:
        """This worker stops: the others no longer count it."""
        _HEAD.pack_into(self._map, self._slot, 0, 0.0, 0.0)

    def others(self) -> list[OtherWorker]:
        """Each other live worker."""
        now = time.monotonic()
        found = []
        for index in range(MAX_WORKERS):
            if index == self.number - 1:
                continue
            slot = index * _SLOT_SIZE
            count, written, started = _HEAD.unpack_from(self._map, slot)
            if written and now - written <= STALE_AFTER:
                (taken,) = _TAKEN.unpack_from(self._map, slot + _HEAD.size + (self.number - 1) * _TAKEN.size)
                found.append(OtherWorker(index + 1, count, started, taken))
        return found

    def close(self) -> None:
        self._map.close()


def handoff_address(data_dir: Path, number: int) -> bytes:
    """The abstract Unix socket address of worker ``number`` of the node at ``data_dir``."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]
    return f"\0certmq-{digest}-{number}".encode()


class ConnectionBalance:
    """One worker's part: hands arriving connections over, and serves those handed to it."""

    def __init__(self, data_dir: Path, directory: Path, number: int) -> None:
        self.data_dir = data_dir
        self.loads = WorkerLoads(directory, number)
        self.number = number
        # The connections this worker kept or was handed, by their protocols, until they are
        # lost (counted from the accept on: a burst of connections arrives before the first is
        # handshaken), and those handed to it and not yet set up.
        self._held: set[ReportsLoss] = set()
        self._pending = 0
        # How many connections this worker handed to each other worker (since that one started).
        self._handed: dict[int, tuple[float, int]] = {}
        # The protocol factory of each listener, for the connections handed over on it.
        self._factories: dict[str, Callable[[], asyncio.Protocol]] = {}
        # Listening for the other workers, the connections they opened to this one, and this
        # one's connection to each of them (opened on first use): sequenced packets, one per
        # connection handed over, which queue up to a socket buffer (a datagram socket would
        # queue ten, net.unix.max_dgram_qlen).
        self._inbox: socket.socket | None = None
        self._senders: dict[int, socket.socket] = {}
        self._outboxes: dict[int, socket.socket] = {}
        self._refresh: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handed_over = 0
        self.taken_over = 0

    def start(self) -> None:
        """Take the connections other workers hand over, from now on."""
        self._loop = asyncio.get_running_loop()
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        inbox.bind(handoff_address(self.data_dir, self.number))
        inbox.listen(MAX_WORKERS)
        inbox.setblocking(False)
        self._inbox = inbox
        self._loop.add_reader(inbox.fileno(), self._accept_sender)
        self._write_count()

    def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        self.loads.leave()
        if self._inbox is not None and self._loop is not None:
            self._loop.remove_reader(self._inbox.fileno())
            self._inbox.close()
            for sender in self._senders.values():
                self._loop.remove_reader(sender.fileno())
                sender.close()
        for outbox in self._outboxes.values():
            outbox.close()
        self.loads.close()

    def held(self) -> int:
        """How many connections this worker holds."""
        return len(self._held) + self._pending

    def _write_count(self) -> None:
        self.loads.write(self.held())
        assert self._loop is not None
        self._refresh = self._loop.call_later(REFRESH, self._write_count)

    def arriving(self, name: str, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of listener ``name``: ``factory``'s protocol for the connections
        this worker keeps (and for those handed over to it on that listener)."""
        self._factories[name] = factory
        return lambda: _Arrival(self, name, factory)

    def keep_or_hand_over(self, name: str, transport: asyncio.Transport) -> bool:
        """Whether ``transport``, just accepted on listener ``name``, went to another worker
        (if not, the caller gives it its protocol, and :meth:`hold` counts it)."""
        held = self.held() + 1
        other = self._least_loaded()
        if other is None or held - other.connections < MARGIN or self._loop is None:
            return False
        raw = transport.get_extra_info("socket")
        if raw is None:
            return False
        number = other.number
        descriptor = os.dup(raw.fileno())
        try:
            self._outbox(number).sendmsg(
                [bytes([self.number]) + name.encode()[: _NAME_BYTES - 1]],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [descriptor]))],
            )
        except BlockingIOError:
            return False  # its queue is full: it has enough to do
        except OSError as error:
            # Gone (or started again): the next hand-over to it connects again.
            log.debug("could not hand a connection over to worker %d: %s", number, error)
            outbox = self._outboxes.pop(number, None)
            if outbox is not None:
                outbox.close()
            return False
        finally:
            os.close(descriptor)
        self.handed_over += 1
        _, handed = self._handed.get(number, (other.started, 0))
        self._handed[number] = (other.started, handed + 1)
        transport.abort()  # this worker's descriptor only: the other worker holds the socket
        return True

    def _least_loaded(self) -> OtherWorker | None:
        """The other worker holding the fewest connections, counting those this worker handed
        it and it has not taken yet (its count may not have them)."""
        best: OtherWorker | None = None
        best_count = 0
        for other in self.loads.others():
            started, handed = self._handed.get(other.number, (other.started, 0))
            if started != other.started:  # started again: it took none of those
                handed = 0
                self._handed[other.number] = (other.started, 0)
            count = other.connections + max(0, handed - other.taken_from_reader)
            if best is None or count < best_count:
                best, best_count = other, count
        if best is None:
            return None
        return OtherWorker(best.number, best_count, best.started, best.taken_from_reader)

    def _outbox(self, number: int) -> socket.socket:
        """This worker's connection to worker ``number``, opened when first needed."""
        outbox = self._outboxes.get(number)
        if outbox is None:
            outbox = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                outbox.connect(handoff_address(self.data_dir, number))
            except OSError:
                outbox.close()
                raise
            outbox.setblocking(False)
            self._outboxes[number] = outbox
        return outbox

    def _accept_sender(self) -> None:
        assert self._inbox is not None and self._loop is not None
        try:
            sender, _ = self._inbox.accept()
        except (BlockingIOError, InterruptedError):
            return
        sender.setblocking(False)
        self._senders[sender.fileno()] = sender
        self._loop.add_reader(sender.fileno(), self._receive, sender)

    def hold(self, protocol: asyncio.Protocol) -> asyncio.Protocol:
        """Count the connection of ``protocol`` as this worker's until it is lost.

        The count drops, and is written for the other workers, the moment the connection is
        lost: when a fleet reconnects at once, the connections that just closed must not make
        a worker look busier than it is while the new ones arrive."""
        if not isinstance(protocol, ReportsLoss):
            raise TypeError(f"{type(protocol).__name__} does not report the loss of its connection")
        self._held.add(protocol)
        protocol.on_lost = functools.partial(self._lost, protocol)
        self.loads.write(self.held())
        return protocol

    def _lost(self, protocol: ReportsLoss) -> None:
        self._held.discard(protocol)
        self.loads.write(self.held())

    def _receive(self, sender: socket.socket) -> None:
        assert self._loop is not None
        while True:
            try:
                name_bytes, descriptors, _, _ = socket.recv_fds(sender, _NAME_BYTES, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("receiving a connection from another worker failed: %s", error)
                name_bytes, descriptors = b"", []
            if not name_bytes and not descriptors:
                # That worker closed its end (it stopped, or will connect again).
                self._loop.remove_reader(sender.fileno())
                self._senders.pop(sender.fileno(), None)
                sender.close()
                return
            sockets = [socket.socket(fileno=descriptor) for descriptor in descriptors]
            sender_number = name_bytes[0] if name_bytes else 0
            factory = self._factories.get(name_bytes[1:].decode(errors="replace"))
            for sock in sockets:
                if factory is None:
                    sock.close()
                    self.loads.took_over_from(sender_number)
                    continue
                sock.setblocking(False)
                self.taken_over += 1
                self._pending += 1
                # The count first: a worker reading in between counts this connection twice
                # (and hands over less), never not at all.
                self.loads.write(self.held())
                self.loads.took_over_from(sender_number)
                self._loop.create_task(self._serve(sock, factory))

    async def _serve(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: self.hold(factory()), sock)
        except OSError as error:
            log.debug("a connection handed over was gone: %s", error)
            with contextlib.suppress(OSError):
                sock.close()
        finally:
            # Counted twice for a moment (held, and still pending): never not at all.
            self._pending -= 1
            self.loads.write(self.held())


class _Arrival(asyncio.Protocol):
    """A connection just accepted: kept (its listener's protocol takes over) or handed over."""

    def __init__(
        self, balance: ConnectionBalance, name: str, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        self._balance = balance
        self._name = name
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport).
        transport = cast(asyncio.Transport, transport)
        if self._balance.keep_or_hand_over(self._name, transport):
            return
        protocol = self._balance.hold(self._factory())
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
