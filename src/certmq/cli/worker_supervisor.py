"""``certmq serve --workers N``: N worker processes of one node, sharing its listening ports.

Each worker is ``certmq serve`` again, with the same options, and is a node of a cluster on this
machine (docs/cluster.md, "One machine, several cores"): named after the node (``NODE-1`` …
``NODE-N``), binding every listener with ``SO_REUSEPORT`` so that the kernel spreads the
connections over the workers, and keeping its sessions in a directory of its own. The
supervisor serves nothing: it starts the workers (the first alone, then the others once it is
ready, so that what a node sets up on its first start is set up once: the registry's tables on
an empty database, the NATS streams, the demo CA), passes the signals on (SIGTERM and SIGINT stop
them all, SIGHUP reloads each) and starts again a worker that died, later and later while it
keeps dying.

A worker and its supervisor hold the two ends of a socket pair. The worker writes one line on it
when it is ready, with the URLs of its listeners; when the supervisor's end closes, however the
supervisor ended, the worker stops, so that no worker outlives its supervisor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from certmq.cli.errors import CommandError
from certmq.config import Config, listener_addresses, parse_address

log = logging.getLogger("certmq.workers")

RESTART_DELAY = 0.5  # seconds before a worker that died is started again
MAX_RESTART_DELAY = 30.0  # the delay doubles each time it dies again within STEADY_RUN of its start
STEADY_RUN = 60.0  # seconds after which a worker that dies is started again after RESTART_DELAY
START_ATTEMPTS = 3  # a worker that dies before it is ready this many times in a row: give up


def check_ports_free(config: Config) -> None:
    """Raise CommandError when another process holds a port of the node: with ``SO_REUSEPORT``
    the workers would share it with that process if it allowed it, and fail to start if not."""
    for name, address in listener_addresses(config).items():
        host, port = parse_address(address)
        for family, kind, protocol, _, socket_address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            with socket.socket(family, kind, protocol) as probe:
                # As the listeners bind: a port whose connections are closing is free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(socket_address)
                except OSError as error:
                    raise CommandError(
                        f"cannot start the listeners: listeners.{name} {address}: {error.strerror}"
                    ) from None


@dataclass
class _Worker:
    number: int
    node: str
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    # The supervisor's end of the socket pair, open as long as the process runs.
    channel: asyncio.StreamWriter | None = field(default=None, repr=False)


class WorkerSupervisor:
    """Runs ``count`` workers of the node ``node`` until SIGTERM or SIGINT.

    ``command(number, fd)`` is the command line of worker ``number`` (from 1), whose end of the
    socket pair is the descriptor ``fd``; each runs with ``environment`` and
    ``CERTMQ_CLUSTER_NODE_NAME=<node>-<number>``. A worker gets ``stop_timeout`` seconds to stop
    after SIGTERM, and is killed after that."""

    def __init__(
        self,
        count: int,
        node: str,
        command: Callable[[int, int], list[str]],
        environment: Mapping[str, str],
        stop_timeout: float,
    ) -> None:
        self.workers = [_Worker(number, f"{node}-{number}") for number in range(1, count + 1)]
        self.command = command
        self.environment = dict(environment)
        self.stop_timeout = stop_timeout
        self._stopping = asyncio.Event()
        self._first_ready = asyncio.Event()
        self._gave_up = False
        self._announced = False

    async def run(self) -> int:
        """Start the workers, keep them running, stop them; the exit status (0: all stopped when
        asked to)."""
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, self._on_stop_signal, signal_number)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        first, *others = self.workers
        keepers = [loop.create_task(self._keep(first))]
        waits = [loop.create_task(self._first_ready.wait()), loop.create_task(self._stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if not self._stopping.is_set():
            keepers += [loop.create_task(self._keep(worker)) for worker in others]
        await self._stopping.wait()
        _, running = await asyncio.wait(keepers, timeout=self.stop_timeout)
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error(
                    "worker %d (node %s) did not stop within %.0f s: killed",
                    worker.number, worker.node, self.stop_timeout,
                )  # fmt: skip
                worker.process.kill()
        if running:
            await asyncio.wait(running)
        log.info("every worker stopped")
        return 1 if self._gave_up or running else 0

    def _on_stop_signal(self, signal_number: int) -> None:
        name = signal.Signals(signal_number).name
        if self._stopping.is_set():
            # As for a single process: a second signal says not to wait for a graceful stop.
            log.warning("%s again: passed on, the workers exit without a graceful stop", name)
        else:
            log.info("%s: stopping the workers", name)
            self._stopping.set()
        self._signal(signal_number, self.workers)

    def _on_hangup(self) -> None:
        # A worker still starting has no handler yet (SIGHUP would end it), and reads the
        # configuration as it starts anyway.
        ready = [worker for worker in self.workers if worker.ready]
        log.info("SIGHUP: passed on to %d workers", len(ready))
        self._signal(signal.SIGHUP, ready)

    @staticmethod
    def _signal(signal_number: int, workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal_number)

    async def _keep(self, worker: _Worker) -> None:
        """Run ``worker``, and start it again whenever it dies until the supervisor stops."""
        loop = asyncio.get_running_loop()
        failed_starts = 0
        quick_deaths = 0
        while not self._stopping.is_set():
            started_at = loop.time()
            try:
                reader = await self._start(worker)
            except OSError as error:
                log.error("worker %d (node %s) cannot be started: %s", worker.number, worker.node, error)
                self._give_up()
                return
            process = worker.process
            assert process is not None
            listening = await _readiness(reader)
            if listening is not None:
                worker.ready = True
                failed_starts = 0
                self._on_ready(worker, listening)
            status = await process.wait()
            worker.ready = False
            if worker.channel is not None:
                worker.channel.close()
            if self._stopping.is_set():
                log.info("worker %d (node %s) stopped: %s", worker.number, worker.node, _exit_status(status))
                return
            if listening is None:
                failed_starts += 1
                if failed_starts >= START_ATTEMPTS:
                    log.error(
                        "worker %d (node %s) %s before it was ready, %d times in a row: stopping every worker",
                        worker.number, worker.node, _exit_status(status), failed_starts,
                    )  # fmt: skip
                    self._give_up()
                    return
            quick_deaths = quick_deaths + 1 if loop.time() - started_at < STEADY_RUN else 1
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (quick_deaths - 1))
            log.warning(
                "worker %d (node %s, pid %d) %s%s; starting it again in %.1f s",
                worker.number, worker.node, process.pid, _exit_status(status),
                "" if listening is not None else " before it was ready", delay,
            )  # fmt: skip
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    def _give_up(self) -> None:
        self._gave_up = True
        self._stopping.set()
        self._signal(signal.SIGTERM, self.workers)

    async def _start(self, worker: _Worker) -> asyncio.StreamReader:
        """Start ``worker``'s process; the supervisor's end of its socket pair, to read from."""
        supervisor_end, worker_end = socket.socketpair()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self.command(worker.number, worker_end.fileno()),
                env={**self.environment, "CERTMQ_CLUSTER_NODE_NAME": worker.node},
                pass_fds=(worker_end.fileno(),),
                stdin=subprocess.DEVNULL,
                # The signals are the supervisor's to pass on: Ctrl-C in a terminal must not
                # reach the workers too, which would take it as a second signal.
                start_new_session=True,
            )
        except BaseException:
            supervisor_end.close()
            raise
        finally:
            worker_end.close()
        reader, worker.channel = await asyncio.open_unix_connection(sock=supervisor_end)
        log.info("worker %d started: pid %d, node %s", worker.number, worker.process.pid, worker.node)
        if self._stopping.is_set():
            worker.process.send_signal(signal.SIGTERM)
        return reader

    def _on_ready(self, worker: _Worker, listening: list[str]) -> None:
        assert worker.process is not None
        self._first_ready.set()
        if self._announced:
            log.info("worker %d ready again: pid %d, node %s", worker.number, worker.process.pid, worker.node)
            return
        if all(each.ready for each in self.workers):
            self._announced = True
            log.info(
                "%d workers sharing %s (nodes %s)",
                len(self.workers), ", ".join(listening), ", ".join(each.node for each in self.workers),
            )  # fmt: skip


async def _readiness(reader: asyncio.StreamReader) -> list[str] | None:
    """The listeners a worker reports when it is ready; None when it ended first."""
    try:
        line = await reader.readline()
        report = json.loads(line) if line else None
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not isinstance(report.get("listening"), list):
        return None
    return [str(url) for url in report["listening"]]


def _exit_status(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


class SupervisorChannel:
    """A worker's end of the socket pair its supervisor made (descriptor ``fd``)."""

    def __init__(self, fd: int, number: int) -> None:
        self._socket = socket.socket(fileno=fd)
        # This worker's number, 1 to N.
        self.number = number

    def report_ready(self, listening: list[str]) -> None:
        """Tell the supervisor that this worker serves, and on what."""
        self._socket.sendall(json.dumps({"listening": listening}).encode() + b"\n")

    def on_supervisor_gone(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, on the event loop, when the supervisor's end closes."""
        loop = asyncio.get_running_loop()
        fd = self._socket.fileno()

        def readable() -> None:
            try:
                if self._socket.recv(1):
                    return  # the supervisor sends nothing; nothing to read but the end
            except OSError:
                pass
            loop.remove_reader(fd)
            callback()

        loop.add_reader(fd, readable)

    def close(self) -> None:
        self._socket.close()
