"""Every process the benchmark starts, so that all of them are stopped on any exit path."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_started: list[subprocess.Popen[bytes]] = []


def start(args: list[str], cpus: set[int] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in its own process group (so Ctrl-C reaches only this script), on the given CPUs,
    remembered for stop_all()."""
    pin = None
    if cpus:

        def pin() -> None:
            os.sched_setaffinity(0, cpus)

    process = subprocess.Popen(args, process_group=0, preexec_fn=pin, **kwargs)
    _started.append(process)
    return process


def exit_on_sigterm(what: str) -> None:
    """Turn SIGTERM into SystemExit, so that the ``finally`` of the caller stops what it started."""

    def on_sigterm(signal_number: int, _frame: Any) -> None:
        print(f"terminated: stopping {what}", file=sys.stderr)
        raise SystemExit(128 + signal_number)

    signal.signal(signal.SIGTERM, on_sigterm)


def add_disturbance_options(parser: argparse.ArgumentParser, default_retries: int) -> None:
    """--max-disturbance and --retries: measuring again what other programs disturbed."""
    parser.add_argument(
        "--max-disturbance",
        type=float,
        default=0.25,
        metavar="SHARE",
        help="measure a pair of runs again when other programs used more than this share of a CPU "
        "during either run (default 0.25)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        help=f"how many times a disturbed pair is measured again (default {default_retries}; --quick: 0)",
    )


def stop(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """SIGTERM to the process group, then SIGKILL after grace_seconds."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(5)
    if process in _started:
        _started.remove(process)


def finish(workdir: Path, keep: bool) -> None:
    """Stop every process started here, and remove ``workdir`` unless told to keep it."""
    stop_all()
    if keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def stop_all() -> None:
    for process in reversed(list(_started)):
        try:
            stop(process, grace_seconds=5.0)
        except Exception as error:  # keep stopping the others
            print(f"could not stop process {process.pid}: {error}")


def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)
    except (ProcessLookupError, PermissionError):
        pass


def _read_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime + stime in clock ticks) from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """pid and its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = stat[0]
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        if current in parents:
            found.append(current)
        pending.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid and of its live descendants, in seconds."""
    return sum(cpu_seconds_by_process(pid).values())


def cpu_seconds_by_process(pid: int) -> dict[int, float]:
    """User + system CPU time of pid and of each of its live descendants, in seconds, by pid."""
    times = {}
    for member in _family(pid):
        stat = _read_stat(member)
        if stat is not None:
            times[member] = stat[1] / _CLOCK_TICKS
    return times


def connections_per_process(pid: int, port: int) -> list[int]:
    """How many established TCP connections to local ``port`` each process of pid's family
    holds, most first (the processes holding none left out): how the kernel spread the
    connections over the workers that share the port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # ESTABLISHED
                inodes.add(fields[9])
    counts = []
    for member in _family(pid):
        try:
            links = [os.readlink(f"/proc/{member}/fd/{fd}") for fd in os.listdir(f"/proc/{member}/fd")]
        except OSError:
            continue
        held = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all CPUs, not idle, not waiting for I/O), in seconds."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], timeout: float, tls_cafile: Path | None = None
) -> None:
    """Return once 127.0.0.1:port accepts connections (and completes a TLS handshake that
    verifies localhost against tls_cafile, when given); raise if the process exits or time runs out."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(tls_cafile)) if tls_cafile else None
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if context is not None:
                    with context.wrap_socket(sock, server_hostname="localhost"):
                        pass
                return
        except ssl.SSLCertVerificationError as error:
            raise RuntimeError(f"the TLS listener on port {port} fails verification: {error}") from None
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not listening on port {port} after {timeout:.0f} s") from None
            time.sleep(0.1)


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the broker under test and the load generator may use (None: any)."""

    broker: set[int] | None
    load_generator: set[int] | None

    @staticmethod
    def split(enabled: bool) -> CpuPlan:
        """The broker on the first CPU, the load generator on the others, when there are two or more."""
        available = sorted(os.sched_getaffinity(0))
        if not enabled or len(available) < 2:
            return CpuPlan(None, None)
        return CpuPlan({available[0]}, set(available[1:]))

    def describe(self) -> str:
        if self.broker is None:
            return "not pinned"
        return (
            f"broker on CPU {_cpu_list(self.broker)}, load generator on CPU {_cpu_list(self.load_generator)}"
        )


def _cpu_list(cpus: set[int] | None) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus or ()))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
