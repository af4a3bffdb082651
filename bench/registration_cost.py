"""The CPU cost of auto-registering a first-time device (``RegistryService.register_device``).

Run with ``PYTHONPATH=src python bench/registration_cost.py [--devices N] [--concurrency 1,4,16]
[--url URL] [--dir DIR]``. For each concurrency it opens a fresh registry (SQLite in a temporary
directory, or under ``--dir`` to choose the disk; or the PostgreSQL database ``--url`` names, where
each run registers its own CA), registers a CA, issues N real device certificates with
cryptography (before measuring: issuing is the CA's work, not the broker's), then registers them,
``concurrency`` at a time, as the broker does on first connections. It prints, per registration:

- process CPU (``time.process_time``): every thread of the process;
- the event loop thread's CPU (``time.thread_time`` on the loop);
- the registry's database thread's CPU (its ``pthread_getcpuclockid`` clock);
- wall time, and the number of database commits (an engine ``commit`` event).

The certificates are parsed from DER, as the TLS layer hands them to the decision procedure. The
logger is left unconfigured, so the "device ... registered" line costs its level check only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import event

from certmq import pki
from certmq.registry import RegistryService, open_registry
from certmq.registry.store import RegistryStore

WARM_UP = 50


@dataclass(frozen=True)
class Run:
    concurrency: int
    registrations: int
    wall: float
    process_cpu: float
    loop_cpu: float
    database_cpu: float
    commits: int


def device_certificates(ca: pki.CertifiedKey, count: int, prefix: str) -> list[x509.Certificate]:
    """``count`` device certificates as the broker holds them when it registers one: parsed from
    the DER of the handshake, their serial and CN already read by the decision procedure."""
    public_key = pki.generate_key("ec").public_key()  # one key for all: only issuing time changes
    certificates = []
    for number in range(count):
        issued = pki.issue_device_certificate(ca.certificate, ca.key, f"{prefix}-{number:06d}", public_key)
        certificate = x509.load_der_x509_certificate(issued.public_bytes(Encoding.DER))
        pki.serial_hex(certificate), pki.common_name(certificate)
        certificates.append(certificate)
    return certificates


async def register_ca(registry: RegistryService, cn: str) -> tuple[str, pki.CertifiedKey]:
    key = pki.generate_key("ec")
    certificate = pki.create_ca(cn, key)
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(certificate, key, code.code)
    record = await registry.register_ca(
        cn, pki.certificates_pem(certificate).decode(), pki.certificates_pem(verification).decode()
    )
    return record.sn, pki.CertifiedKey(certificate, key)


def database_thread() -> threading.Thread:
    threads = [thread for thread in threading.enumerate() if thread.name.startswith("certmq-registry")]
    if len(threads) != 1:
        raise RuntimeError(f"expected one registry database thread, found {len(threads)}")
    return threads[0]


def thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def register_all(
    registry: RegistryService, ca_sn: str, certificates: list[x509.Certificate], concurrency: int
) -> None:
    pending: Iterator[x509.Certificate] = iter(certificates)

    async def worker() -> None:
        for certificate in pending:
            await registry.register_device(ca_sn, certificate)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(store: RegistryStore, concurrency: int, count: int, run_number: int) -> Run:
    commits = [0]

    def count_commit(connection: object) -> None:
        commits[0] += 1

    event.listen(store.engine, "commit", count_commit)
    registry = RegistryService(store, instance_id="mqtt-bench-1")
    await registry.open()
    try:
        ca_sn, ca = await register_ca(registry, f"Bench CA {run_number}")
        warm_up = device_certificates(ca, WARM_UP, f"warm-{run_number}")
        certificates = device_certificates(ca, count, f"device-{run_number}")
        await register_all(registry, ca_sn, warm_up, concurrency)
        worker = database_thread()
        gc.collect()
        committed = commits[0]
        started = (time.perf_counter(), time.process_time(), time.thread_time(), thread_cpu(worker))
        await register_all(registry, ca_sn, certificates, concurrency)
        ended = (time.perf_counter(), time.process_time(), time.thread_time(), thread_cpu(worker))
        committed = commits[0] - committed
        assert registry.index.device_counts(ca_sn)[0] == count + WARM_UP
    finally:
        await registry.close()
    wall, process_cpu, loop_cpu, database_cpu = (
        end - start for start, end in zip(started, ended, strict=True)
    )
    return Run(concurrency, count, wall, process_cpu, loop_cpu, database_cpu, committed)


def median_run(runs: list[Run]) -> Run:
    """The median of each measure over repeated runs (the machine's noise is one-sided)."""
    return Run(
        concurrency=runs[0].concurrency,
        registrations=runs[0].registrations,
        wall=statistics.median(run.wall for run in runs),
        process_cpu=statistics.median(run.process_cpu for run in runs),
        loop_cpu=statistics.median(run.loop_cpu for run in runs),
        database_cpu=statistics.median(run.database_cpu for run in runs),
        commits=int(statistics.median(run.commits for run in runs)),
    )


def print_table(runs: list[Run], database: str, repeat: int) -> None:
    print(f"register_device on {database}: per registration (ms), median of {repeat} runs")
    print(f"{'concurrency':>11} {'devices':>8} {'process':>8} {'loop':>7} {'db thread':>9} "
          f"{'wall':>7} {'commits':>8} {'per s':>7}")  # fmt: skip
    for run in runs:
        n = run.registrations
        print(
            f"{run.concurrency:>11} {n:>8} {run.process_cpu / n * 1000:>8.3f} {run.loop_cpu / n * 1000:>7.3f} "
            f"{run.database_cpu / n * 1000:>9.3f} {run.wall / n * 1000:>7.3f} {run.commits:>8} "
            f"{n / run.wall:>7.0f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000, help="registrations measured per run")
    parser.add_argument("--concurrency", default="1,4,16", help="registrations in flight, comma-separated")
    parser.add_argument(
        "--url", default="", help="a PostgreSQL URL (default: SQLite in a temporary directory)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary SQLite registry goes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per concurrency; the median is shown")
    arguments = parser.parse_args()
    concurrencies = [int(value) for value in arguments.concurrency.split(",")]
    runs: dict[int, list[Run]] = {concurrency: [] for concurrency in concurrencies}
    number = 0
    for _ in range(arguments.repeat):
        for concurrency in concurrencies:  # interleaved, so that a noisy moment spreads over all
            with tempfile.TemporaryDirectory(prefix="certmq-registration-", dir=arguments.dir) as directory:
                store = open_registry(arguments.url or "", Path(directory))
                try:
                    runs[concurrency].append(await measure(store, concurrency, arguments.devices, number))
                finally:
                    store.close()
            number += 1
    database = "PostgreSQL" if arguments.url else "SQLite (WAL, synchronous=FULL)"
    print_table([median_run(runs[concurrency]) for concurrency in concurrencies], database, arguments.repeat)


if __name__ == "__main__":
    asyncio.run(main())
