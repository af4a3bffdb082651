"""The registry at scale: a million device certificates.

Run with ``PYTHONPATH=src python bench/registry_scale.py [--devices N] [--url URL]``. It fills a
fresh registry (SQLite in a temporary directory unless ``--url`` names a PostgreSQL database, whose
registry tables must be empty) with one CA and N synthetic device rows, then measures:

- loading the in-memory trust index from the store (``RegistryService.open``), and the memory the
  index holds per device (tracemalloc, so only Python allocations count);
- a hot-path lookup (``TrustIndex.device``);
- ``list_devices`` latency: first page, a page deep in the listing, by CA, by status, by name;
- the decision log's write rate (``record_decision`` then the batched writes).

The synthetic rows have real-looking serial numbers and fingerprints but a stub PEM: certificate
content does not matter to any of these measurements except the database's size.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import hashlib
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import update

from certmq import pki
from certmq.registry import DecisionEntry, RegistryService, open_registry
from certmq.registry.models import DeviceCertificateRow
from certmq.registry.store import NewDevice


def synthetic_devices(ca_sn: str, count: int, *, start: int = 0, seed: bytes = b"") -> Iterator[NewDevice]:
    """``count`` distinct device rows for the CA ``ca_sn``: 20-byte serials and SHA-256
    fingerprints derived from the row number, names ``device-0000001`` …"""
    begin = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC)
    for number in range(start, start + count):
        digest = hashlib.sha256(seed + number.to_bytes(8, "big")).digest()
        serial = digest[:20]
        # A positive DER INTEGER: keep the 00 sign octet when the high bit is set, as Sn does.
        device_sn = ("00" + serial.hex()) if serial[0] & 0x80 else serial.hex()
        yield NewDevice(
            ca_sn=ca_sn,
            device_sn=device_sn,
            name=f"device-{number:07d}",
            pem="-----BEGIN CERTIFICATE-----\nstub\n-----END CERTIFICATE-----\n",
            fingerprint=hashlib.sha256(b"fingerprint" + digest).hexdigest(),
            valid_begin=begin,
            valid_end=end,
        )


async def register_test_ca(registry: RegistryService, cn: str = "Bench Root CA") -> str:
    key = pki.generate_key("ec")
    ca = pki.create_ca(cn, key)
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(ca, key, code.code)
    record = await registry.register_ca(
        cn, pki.certificates_pem(ca).decode(), pki.certificates_pem(verification).decode()
    )
    return record.sn


async def _latency_ms(call: Callable[[], Awaitable[Any]], repeat: int = 20) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def run(devices: int, url: str, data_dir: Path) -> None:
    store = open_registry(url, data_dir)
    registry = RegistryService(store, instance_id="bench")
    await registry.open()
    cas = registry.index.cas()
    if cas and registry.index.device_count == devices:
        ca_sn = cas[0].sn  # a registry kept from an earlier run (--data-dir)
        print(f"reusing the {devices:,} devices in {store!r}")
    else:
        if cas or registry.index.device_count:
            raise SystemExit(f"{store!r} holds another registry; give an empty one")
        ca_sn = await register_test_ca(registry)
        started = time.perf_counter()
        store.import_devices(synthetic_devices(ca_sn, devices), datetime.datetime.now(datetime.UTC))
        print(f"inserted {devices:,} device rows in {time.perf_counter() - started:.1f} s")
        with store.engine.begin() as connection:  # a tenth inactive, for the status filters
            connection.execute(
                update(DeviceCertificateRow)
                .where(DeviceCertificateRow.name.like("%0"))
                .values(status="inactive")
            )
    if store.dialect == "postgresql":
        # The steady state that autovacuum reaches on its own: visibility map set, statistics up
        # to date, so that listings are index-only scans.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE device_certificate")
    await registry.close()

    registry = RegistryService(store, instance_id="bench")
    started = time.perf_counter()
    await registry.open()
    elapsed = time.perf_counter() - started
    print(f"index load: {registry.index.device_count:,} devices in {elapsed:.2f} s")
    await registry.close()

    # Memory, measured on a second load: tracemalloc slows every allocation down.
    registry = RegistryService(store, instance_id="bench")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    await registry.open()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    index = registry.index
    print(
        f"index memory: {held / max(index.device_count, 1):.0f} bytes per device "
        f"({held / 2**20:.0f} MiB for {index.device_count:,})"
    )

    sample = next(synthetic_devices(ca_sn, 1, start=devices // 2))
    number = 200_000
    started = time.perf_counter()
    for _ in range(number):
        index.device(ca_sn, sample.device_sn)
    print(f"TrustIndex.device: {(time.perf_counter() - started) / number * 1e6:.2f} µs per lookup")

    last_page = max(1, devices // 100)
    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "list_devices page 1 (100)": lambda: registry.list_devices(1, 100),
        f"list_devices page {last_page // 2:,} (100)": lambda: registry.list_devices(last_page // 2, 100),
        f"list_devices page {last_page:,} (100)": lambda: registry.list_devices(last_page, 100),
        "list_devices by CA, page 1": lambda: registry.list_devices(1, 100, ca_sn=ca_sn),
        "list_devices inactive, page 1": lambda: registry.list_devices(1, 100, status="inactive"),
        f"list_devices inactive, page {last_page // 20:,}": lambda: registry.list_devices(
            last_page // 20, 100, status="inactive"
        ),
        "list_devices active, page 1": lambda: registry.list_devices(1, 100, status="active"),
        f"list_devices active, page {last_page // 2:,}": lambda: registry.list_devices(
            last_page // 2, 100, status="active"
        ),
        "list_devices by name": lambda: registry.list_devices(1, 100, name=sample.name),
        "get_device": lambda: registry.get_device(ca_sn, sample.device_sn),
    }
    for label, call in cases.items():
        print(f"{label}: {await _latency_ms(call):.1f} ms")

    # The decision log: decisions arrive on the loop while the background writer stores them in
    # batches; the rate is sustained throughput, from the first record to the last commit.
    decisions, chunk = 200_000, 1000
    decision = DecisionEntry(
        listener="tls", peer="127.0.0.1:50000", client_id="GID_bench@@@device", ca_sn=ca_sn,
        device_sn=sample.device_sn, cn=sample.name, step=5, result="allow", reason="registered-device",
        detail="the certificate is registered and active",
    )  # fmt: skip
    on_loop = 0.0
    started = time.perf_counter()
    for _ in range(decisions // chunk):
        chunk_started = time.perf_counter()
        for _ in range(chunk):
            registry.record_decision(decision)
        on_loop += time.perf_counter() - chunk_started
        while registry.decision_log.pending > 10 * chunk:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
    await registry.flush_decisions()
    written = time.perf_counter() - started
    print(
        f"decision log: record_decision {on_loop / decisions * 1e6:.2f} µs on the loop; "
        f"{decisions / written:,.0f} decisions/s written ({registry.decision_log.dropped} dropped)"
    )
    await registry.close()
    store.close()
    if store.dialect == "sqlite":
        size = sum(path.stat().st_size for path in data_dir.glob("registry.db*"))
        print(f"SQLite file: {size / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--url", default="", help="registry URL; default: SQLite in a temporary directory")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the SQLite registry here and reuse it on the next run"
    )
    args = parser.parse_args()
    if args.data_dir:
        asyncio.run(run(args.devices, args.url, args.data_dir))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as directory:
        asyncio.run(run(args.devices, args.url, Path(directory)))


if __name__ == "__main__":
    main()
