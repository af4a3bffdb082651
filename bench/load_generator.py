"""Build and drive bench/loadgen/mqttload, and measure the broker's CPU around each cell."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import processes
from brokers import RunningBroker

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "loadgen" / "mqttload.c"
BINARY = HERE / "loadgen" / "build" / "mqttload"
SETUP_TIMEOUT = 90.0  # connecting 100 TLS subscribers to a slow broker
DRAIN_TIMEOUT = 60.0  # after the publishing time, for the last deliveries


class LoadGeneratorError(RuntimeError):
    pass


def build(source: Path = SOURCE, binary: Path = BINARY) -> Path:
    """Compile the load generator (or another program of bench/loadgen/) when the binary is
    missing or older than its source."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    compiler = shutil.which(os.environ.get("CC", "gcc"))
    if compiler is None:
        raise LoadGeneratorError("no C compiler: install gcc (Debian: apt-get install gcc libssl-dev)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-O2", "-Wall", "-o", str(binary), str(source), "-lssl", "-lcrypto", "-lpthread"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise LoadGeneratorError(
            f"building {source.name} failed (it needs gcc and the OpenSSL headers, "
            f"Debian: apt-get install gcc libssl-dev):\n{' '.join(command)}\n{result.stderr}"
        )
    return binary


@dataclass(frozen=True)
class Cell:
    transport: str  # "tcp" | "tls"
    qos: int
    subscribers: int
    # Subscribers with sessions the broker keeps (clean session off): what it acknowledges must
    # survive a crash, so certmq writes it to its journal first.
    durable: bool = False
    # More than one: fan-in, each subscriber hearing publishers / subscribers of them
    # (bench/loadgen/mqttload.c, --publishers).
    publishers: int = 1
    # QoS 1 messages each publisher keeps unacknowledged at most (0: the load generator's 1000).
    window: int = 0
    # Deliveries the publishers may run ahead of the subscribers (0: the load generator's 10,000).
    max_lead: int = 0

    @property
    def name(self) -> str:
        return f"{self.transport} qos{self.qos} {self.publishers}->{self.subscribers}" + (
            " durable" if self.durable else ""
        )


def run_cell(
    broker: RunningBroker,
    cell: Cell,
    *,
    size: int,
    duration: float,
    tag: str,
    log_dir: Path,
    cpus: set[int] | None = None,
    write_batch: int = 65536,
    subscriber_broker: RunningBroker | None = None,
    rate: float = 0.0,
    latency: bool = False,
) -> dict[str, Any]:
    """One measurement: the load generator's result plus the broker's CPU time and utilisation,
    and that of the processes that work for it (``broker.companions``, e.g. a cluster's NATS
    server), each apart. ``subscriber_broker``: the subscribers connect to that one (another
    node of the same cluster); ``rate``: messages per second, all publishers together (0: as
    fast as the broker takes them); ``latency``: the load generator times each delivery."""
    port = broker.tls_port if cell.transport == "tls" else broker.tcp_port
    subscribers_on = subscriber_broker or broker
    timeout = int(SETUP_TIMEOUT + duration + DRAIN_TIMEOUT)
    args = [
        str(BINARY),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--subscribers",
        str(cell.subscribers),
        "--qos",
        str(cell.qos),
        "--size",
        str(size),
        "--duration",
        str(duration),
        "--topic",
        f"bench/{tag}",
        "--client-prefix",
        tag,
        "--timeout",
        str(timeout),
        "--write-batch",
        str(write_batch),
    ]
    if cell.transport == "tls":
        args += ["--tls", "--cafile", str(broker.ca_file), "--servername", "localhost"]
    if cell.durable:
        args.append("--persistent")
    if cell.publishers > 1:
        args += ["--publishers", str(cell.publishers)]
    if cell.window:
        args += ["--window", str(cell.window)]
    if cell.max_lead:
        args += ["--max-lead", str(cell.max_lead)]
    if subscribers_on is not broker:
        args += [
            "--sub-port",
            str(subscribers_on.tls_port if cell.transport == "tls" else subscribers_on.tcp_port),
        ]
    if rate > 0:
        args += ["--rate", str(rate)]
    if latency:
        args.append("--latency")
    measured = {broker.name: broker.pid, subscribers_on.name: subscribers_on.pid}
    companions = {**broker.companions, **subscribers_on.companions}
    stderr_file = log_dir / f"{tag}.stderr"
    with open(stderr_file, "wb") as stderr:
        process = processes.start(
            args, cpus=cpus, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        reader = _LineReader(process)
        line = reader.readline(time.monotonic() + SETUP_TIMEOUT)
        if line != "READY":
            raise LoadGeneratorError(f"load generator did not get ready: {line!r}; {_tail(stderr_file)}")
        # How the kernel spread the connections over processes sharing the port (workers).
        spread = processes.connections_per_process(broker.pid, port)
        by_process_before = processes.cpu_seconds_by_process(broker.pid)
        cpu_before, wall_before = _cpu_of(measured), time.monotonic()
        companions_before = _cpu_of(companions)
        machine_before = processes.machine_busy_seconds()
        assert process.stdin is not None
        process.stdin.write(b"GO\n")
        process.stdin.flush()
        line = reader.readline(time.monotonic() + duration + DRAIN_TIMEOUT + 10)
        cpu_after, wall_after = _cpu_of(measured), time.monotonic()
        by_process_after = processes.cpu_seconds_by_process(broker.pid)
        companions_after = _cpu_of(companions)
        machine_after = processes.machine_busy_seconds()
        try:
            result: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise LoadGeneratorError(
                f"no result from the load generator: {line!r}; {_tail(stderr_file)}"
            ) from None
    finally:
        processes.stop(process, grace_seconds=5)
    broker_cpu = sum(cpu_after.values()) - sum(cpu_before.values())
    companion_cpu = {name: companions_after[name] - companions_before[name] for name in companions}
    wall = max(wall_after - wall_before, 1e-9)
    load_generator_cpu = result["publisher_cpu_s"] + result["subscriber_cpu_s"]
    # What the rest of the machine used meanwhile (other programs, this script): a disturbance.
    other_cpu = max(
        0.0, machine_after - machine_before - broker_cpu - sum(companion_cpu.values()) - load_generator_cpu
    )
    received = int(result["received"])
    result["connections_per_process"] = spread
    # The CPU time of each of the broker's processes that used any (workers), most first.
    result["broker_cpu_by_process_s"] = sorted(
        (
            round(seconds - by_process_before.get(pid, 0.0), 3)
            for pid, seconds in by_process_after.items()
            if seconds > by_process_before.get(pid, 0.0)
        ),
        reverse=True,
    )
    if result.get("sequence_errors"):
        result["complete"] = False  # the right count, but not the right messages
    result.update(
        broker_cpu_s=broker_cpu,
        broker_busy=broker_cpu / wall,
        load_generator_cpu_share=load_generator_cpu / wall,
        other_cpu_share=other_cpu / wall,
        cpu_us_per_message=broker_cpu * 1e6 / received if received else None,
    )
    if companions:
        result.update(
            companion_cpu_s=companion_cpu,
            companion_cpu_us_per_message={
                name: seconds * 1e6 / received if received else None
                for name, seconds in companion_cpu.items()
            },
        )
    return result


def _cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process and its descendants, by name."""
    return {name: processes.cpu_seconds(pid) for name, pid in pids.items()}


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return f"stderr: {text[-2000:]}" if text else "no stderr"


class _LineReader:
    """Read stdout lines of a child with a deadline, without threads."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)

    def readline(self, deadline: float) -> str:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoadGeneratorError("timed out waiting for the load generator")
            if not self._selector.select(remaining):
                continue
            chunk = os.read(self._stdout.fileno(), 65536)
            if not chunk:
                return self._buffer.decode(errors="replace").strip()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()
