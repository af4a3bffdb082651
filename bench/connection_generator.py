"""Build and drive bench/loadgen/mqttconnect, and measure the broker's CPU around each run."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import load_generator
import processes
from brokers import RunningBroker
from load_generator import LoadGeneratorError, _LineReader, _tail

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "loadgen" / "mqttconnect.c"
BINARY = HERE / "loadgen" / "build" / "mqttconnect"
READY_TIMEOUT = 120.0  # parsing thousands of keys
# After the last CONNACK the broker still closes the last connections and, for certmq, writes the
# audit log (a batch at least every 0.5 s): that work belongs to the run, so the broker's CPU
# time is read this long after the connection generator has finished, on both brokers alike.
SETTLE_SECONDS = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def build() -> Path:
    return load_generator.build(SOURCE, BINARY)


def run_connections(
    broker: RunningBroker,
    *,
    identities: Path,
    connections: int,
    concurrency: int,
    tag: str,
    log_dir: Path,
    cpus: set[int] | None = None,
    settle: float = SETTLE_SECONDS,
) -> dict[str, Any]:
    """One measurement: ``connections`` full TLS handshakes with client certificates from
    ``identities``, each followed by CONNECT, CONNACK, DISCONNECT; the generator's result plus
    the broker's CPU time."""
    args = [
        str(BINARY),
        "--host",
        "127.0.0.1",
        "--port",
        str(broker.tls_port),
        "--cafile",
        str(broker.ca_file),
        "--servername",
        "localhost",
        "--identities",
        str(identities),
        "--connections",
        str(connections),
        "--concurrency",
        str(concurrency),
        "--client-prefix",
        tag,
    ]
    stderr_file = log_dir / f"{tag}.stderr"
    with open(stderr_file, "wb") as stderr:
        process = processes.start(
            args, cpus=cpus, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        reader = _LineReader(process)
        line = reader.readline(time.monotonic() + READY_TIMEOUT)
        if line != "READY":
            raise LoadGeneratorError(
                f"connection generator did not get ready: {line!r}; {_tail(stderr_file)}"
            )
        threads_before = thread_cpu_seconds(broker.pid)
        cpu_before, wall_before = broker.cpu_seconds(), time.monotonic()
        machine_before = processes.machine_busy_seconds()
        assert process.stdin is not None
        process.stdin.write(b"GO\n")
        process.stdin.flush()
        # At most 10 s per connection (its own timeout), in practice milliseconds.
        line = reader.readline(time.monotonic() + 60 + connections * 0.2)
        time.sleep(settle)
        cpu_after, wall_after = broker.cpu_seconds(), time.monotonic()
        threads_after = thread_cpu_seconds(broker.pid)
        machine_after = processes.machine_busy_seconds()
        try:
            result: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise LoadGeneratorError(
                f"no result from the connection generator: {line!r}; {_tail(stderr_file)}"
            ) from None
    finally:
        processes.stop(process, grace_seconds=5)
    broker_cpu = cpu_after - cpu_before
    wall = max(wall_after - wall_before, 1e-9)
    elapsed = max(float(result["elapsed_s"]), 1e-9)
    succeeded = int(result["succeeded"])
    other_cpu = max(0.0, machine_after - machine_before - broker_cpu - result["client_cpu_s"])
    main_thread = threads_after.get("main", 0.0) - threads_before.get("main", 0.0)
    result.update(
        broker_cpu_s=broker_cpu,
        # certmq: the event loop's thread, and the others (the registry's database thread).
        main_thread_cpu_s=main_thread,
        main_thread_ms_per_connection=main_thread * 1e3 / succeeded if succeeded else None,
        other_threads_ms_per_connection=(broker_cpu - main_thread) * 1e3 / succeeded if succeeded else None,
        cpu_ms_per_connection=broker_cpu * 1e3 / succeeded if succeeded else None,
        connections_per_s=succeeded / elapsed,
        # Over the connecting time: the CPU of the settling time is small and belongs to it.
        broker_busy=broker_cpu / elapsed,
        client_cpu_share=result["client_cpu_s"] / elapsed,
        other_cpu_share=other_cpu / wall,
        complete=succeeded == int(result["connections"]),
    )
    return result


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of pid (/proc/PID/task/*/stat): "main", then "NAME TID"."""
    found: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        label = "main" if task.name == str(pid) else f"{name} {task.name}"
        found[label] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found
