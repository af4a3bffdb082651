"""The registry's one database thread, and what every part of the service shares.

Every piece of the registry's database work runs on one dedicated thread, in the order it was
submitted, so SQLite writes are serialised and the event loop never blocks. A change is committed
on that thread; then, on the event loop and in commit order, its ``after_commit`` updates the
in-memory :class:`~certmq.registry.index.TrustIndex` and emits the change event. Both happen even
when the caller is cancelled after the commit, so the index never drifts from the store.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from certmq.registry.events import RegistryEvents
from certmq.registry.index import TrustIndex
from certmq.registry.store import RegistryStore

log = logging.getLogger("certmq.registry")

R = TypeVar("R")


def _nothing() -> None:
    pass


class DatabaseWorker:
    """The thread, and the ways to hand it work."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certmq-registry")
        self.closed = False
        # Runs on the loop before any work is handed over: the registrations waiting for their
        # batch go first, so that every read sees every device whose connection was allowed
        # (certmq.registry.registration).
        self.before_work: Callable[[], None] = _nothing

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the registry service is closed")

    async def run(self, work: Callable[[], R]) -> R:
        """Run ``work`` on the thread and wait for it."""
        self.check_open()
        self.before_work()
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def submit(self, work: Callable[[], R], after_commit: Callable[[R], None]) -> asyncio.Future[R]:
        """Run ``work`` (which commits) on the thread; ``after_commit(result)`` then runs on the
        loop before anyone awaiting the returned future resumes, even if they were cancelled."""
        self.check_open()
        self.before_work()
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)

        def apply(done: asyncio.Future[R]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            try:
                after_commit(done.result())
            except Exception:
                log.exception("could not apply a committed registry change to the index")

        future.add_done_callback(apply)
        return future

    async def commit(self, work: Callable[[], R], after_commit: Callable[[R], None]) -> R:
        """:meth:`submit`, and wait for it: a cancelled caller leaves the change to be applied."""
        return await asyncio.shield(self.submit(work, after_commit))

    def start(self, work: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Hand ``work(*args)`` to the thread as it is, without :attr:`before_work`."""
        return asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    async def close(self) -> None:
        """Refuse new work and wait for the thread to finish what it was given."""
        self.closed = True
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._executor.shutdown, wait=True)
        )


@dataclass(frozen=True, slots=True)
class Shared:
    """What every part of the service works with: the database thread and the store, the
    in-memory index, the events, and the clock."""

    worker: DatabaseWorker
    store: RegistryStore
    index: TrustIndex
    events: RegistryEvents
    clock: Callable[[], datetime.datetime]


class RegistryPart:
    """A part of the service (CAs, devices, registrations, settings). Its database work runs on
    the worker; what it commits, it puts in the index and emits as events, in commit order."""

    def __init__(self, shared: Shared) -> None:
        self._worker = shared.worker
        self._store = shared.store
        self._index = shared.index
        self._events = shared.events
        self._clock = shared.clock
