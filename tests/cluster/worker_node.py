"""One node run as ``certmq serve --workers N``: its supervisor's process (a
:class:`~broker_process.RunningBroker`, with the node's ports and log), what the log says of the
workers, and which worker holds which client's connection.

Which worker serves a client is read where the kernel keeps it, as ``ss -tnp`` shows it to an
operator: the server side of each TCP connection on the node's port (``/proc/net/tcp``), and the
process whose descriptors hold that socket (``/proc/PID/fd``).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from broker_process import RunningBroker
from certmq.instance import WORKERS_DIR

READY_TIMEOUT = 60.0
WORKER_STARTED = re.compile(r"worker (\d+) started: pid (\d+), node (\S+)")


class WorkerNode:
    """The node whose supervisor is ``supervisor``, with ``count`` workers."""

    def __init__(self, supervisor: RunningBroker, count: int) -> None:
        self.supervisor = supervisor
        self.count = count

    @property
    def data_dir(self) -> Path:
        return self.supervisor.data_dir

    @property
    def tcp_port(self) -> int:
        return self.supervisor.tcp_port

    def wait_ready(self) -> None:
        """Wait until the supervisor says that every worker is ready."""
        self.wait_for(rf"{self.count} workers sharing ", READY_TIMEOUT)

    def log(self) -> str:
        return self.supervisor.log_file.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = READY_TIMEOUT, since: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the log after offset ``since``, waited for; fails
        when the supervisor exits first."""
        expression = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = expression.search(self.log(), since)
            if match:
                return match
            if self.supervisor.process.poll() is not None:
                raise AssertionError(
                    f"the supervisor exited ({self.supervisor.process.returncode}) before its log said "
                    f"{pattern!r}\n{self.supervisor.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the log did not say {pattern!r} within {timeout} s\n{self.supervisor.log_tail()}"
                )
            time.sleep(0.05)

    def workers(self) -> dict[int, tuple[int, str]]:
        """The pid and node name of each worker, by number, from the last start the log tells of."""
        return {int(number): (int(pid), node) for number, pid, node in WORKER_STARTED.findall(self.log())}

    def worker_pids(self) -> dict[int, int]:
        return {number: pid for number, (pid, _) in self.workers().items()}

    def state_directory(self, node: str) -> Path:
        """Where worker ``node`` keeps its sessions."""
        return self.data_dir / WORKERS_DIR / node

    def close(self) -> None:
        """Stop the supervisor (it must exit cleanly if it was running) and kill any worker it
        left behind."""
        was_running = self.supervisor.exit_code is None and self.supervisor.process.poll() is None
        pids = self.worker_pids().values()
        try:
            code = self.supervisor.stop()
            assert code == 0 or not was_running, (
                f"the supervisor exited with code {code} after SIGTERM\n{self.supervisor.log_tail()}"
            )
        finally:
            for pid in pids:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait for processes ``pids`` to end; those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if running(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def connection_owners(port: int, pids: Iterable[int]) -> dict[int, int]:
    """For each TCP connection accepted on ``port`` by one of the processes ``pids``: the
    client's port, and the pid of the process that holds the connection."""
    holder = {}
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            except OSError:
                continue
            if target.startswith("socket:["):
                holder[int(target[len("socket:[") : -1])] = pid
    owners = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if int(local.rpartition(":")[2], 16) == port and inode in holder:
                    owners[int(remote.rpartition(":")[2], 16)] = holder[inode]
    return owners
