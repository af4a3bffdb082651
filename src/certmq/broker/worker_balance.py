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
- The sockets are in Linux's abstract namespace, named after the data directory and the worker.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import hashlib
import logging
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable
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
_SLOT = struct.Struct("<qd")  # connections held, CLOCK_MONOTONIC of the last write
LOADS_FILE = "loads"
# A listener's name, then the socket, in one datagram.
_NAME_BYTES = 32


class WorkerLoads:
    """The connection counts of a node's workers, in a file every worker maps."""

    def __init__(self, directory: Path, number: int) -> None:
        if not 1 <= number <= MAX_WORKERS:
            raise ValueError(f"worker number {number} is not within 1..{MAX_WORKERS}")
        self.number = number
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = MAX_WORKERS * _SLOT.size
        descriptor = os.open(directory / LOADS_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(descriptor).st_size < size:
                os.ftruncate(descriptor, size)
            self._map = mmap.mmap(descriptor, size)
        finally:
            os.close(descriptor)

    def write(self, count: int) -> None:
        _SLOT.pack_into(self._map, (self.number - 1) * _SLOT.size, count, time.monotonic())

    def leave(self) -> None:
        """This worker stops: the others no longer count it."""
        _SLOT.pack_into(self._map, (self.number - 1) * _SLOT.size, 0, 0.0)

    def least_loaded(self) -> tuple[int, int] | None:
        """(worker number, connections) of the other live worker holding the fewest; None alone."""
        now = time.monotonic()
        best: tuple[int, int] | None = None
        for index in range(MAX_WORKERS):
            if index == self.number - 1:
                continue
            count, written = _SLOT.unpack_from(self._map, index * _SLOT.size)
            if written and now - written <= STALE_AFTER and (best is None or count < best[1]):
                best = (index + 1, count)
        return best

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
        # The connections this worker kept or was handed, until they close (counted from the
        # accept on: a burst of connections arrives before the first is handshaken), and those
        # handed to it and not yet set up.
        self._transports: set[asyncio.BaseTransport] = set()
        self._pending = 0
        # The protocol factory of each listener, for the connections handed over on it.
        self._factories: dict[str, Callable[[], asyncio.Protocol]] = {}
        self._inbox: socket.socket | None = None
        self._outbox: socket.socket | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handed_over = 0
        self.taken_over = 0

    def start(self) -> None:
        """Take the connections other workers hand over, from now on."""
        self._loop = asyncio.get_running_loop()
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.bind(handoff_address(self.data_dir, self.number))
        inbox.setblocking(False)
        self._inbox = inbox
        outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        outbox.setblocking(False)
        self._outbox = outbox
        self._loop.add_reader(inbox.fileno(), self._receive)
        self._write_count()

    def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        self.loads.leave()
        if self._inbox is not None and self._loop is not None:
            self._loop.remove_reader(self._inbox.fileno())
            self._inbox.close()
        if self._outbox is not None:
            self._outbox.close()
        self.loads.close()

    def held(self) -> int:
        """How many connections this worker holds."""
        return len(self._transports) + self._pending

    def _write_count(self) -> None:
        self._transports = {transport for transport in self._transports if not transport.is_closing()}
        self.loads.write(self.held())
        assert self._loop is not None
        self._refresh = self._loop.call_later(REFRESH, self._write_count)

    def arriving(self, name: str, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of listener ``name``: ``factory``'s protocol for the connections
        this worker keeps (and for those handed over to it on that listener)."""
        self._factories[name] = factory
        return lambda: _Arrival(self, name, factory)

    def keep_or_hand_over(self, name: str, transport: asyncio.Transport) -> bool:
        """Whether ``transport``, just accepted on listener ``name``, went to another worker."""
        held = self.held() + 1
        other = self.loads.least_loaded()
        if other is None or held - other[1] < MARGIN or self._outbox is None:
            self._keep(transport)
            return False
        raw = transport.get_extra_info("socket")
        if raw is None:
            self._keep(transport)
            return False
        number, _ = other
        descriptor = os.dup(raw.fileno())
        try:
            self._outbox.sendmsg(
                [name.encode()[:_NAME_BYTES]],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [descriptor]))],
                0,
                handoff_address(self.data_dir, number),
            )
        except OSError as error:
            log.debug("could not hand a connection over to worker %d: %s", number, error)
            self._keep(transport)
            return False
        finally:
            os.close(descriptor)
        self.handed_over += 1
        transport.abort()  # this worker's descriptor only: the other worker holds the socket
        return True

    def _keep(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        self.loads.write(self.held())

    def _receive(self) -> None:
        assert self._inbox is not None and self._loop is not None
        while True:
            try:
                name_bytes, descriptors, _, _ = socket.recv_fds(self._inbox, _NAME_BYTES, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("receiving a connection from another worker failed: %s", error)
                return
            sockets = [socket.socket(fileno=descriptor) for descriptor in descriptors]
            factory = self._factories.get(name_bytes.decode(errors="replace"))
            for sock in sockets:
                if factory is None:
                    sock.close()
                    continue
                sock.setblocking(False)
                self.taken_over += 1
                self._pending += 1
                self.loads.write(self.held())
                self._loop.create_task(self._serve(sock, factory))

    async def _serve(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
        assert self._loop is not None
        try:
            transport, _ = await self._loop.connect_accepted_socket(factory, sock)
        except OSError as error:
            log.debug("a connection handed over was gone: %s", error)
            with contextlib.suppress(OSError):
                sock.close()
        else:
            self._transports.add(transport)
        finally:
            self._pending -= 1


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
        protocol = self._factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
