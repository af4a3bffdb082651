"""How long the HTTP listener takes to answer: a small REST reply, and the console's pages of a
large registry.

Run with ``PYTHONPATH=src python bench/http_pages.py [--devices N] [--repeat R]``. It makes an
instance (``certmq init`` in a temporary directory), fills its SQLite registry with one CA and N
synthetic device rows (a tenth inactive, as ``bench/registry_scale.py`` makes them), and serves
the REST API and the console with certmq's ``HttpListener`` on loopback, as ``certmq serve``
does but without MQTT listeners (no live connection). Then, over one keep-alive connection, it
times R requests of each kind and prints the median and the slowest:

- ``GET /api/v1/healthz``: about 1 ms on loopback; about 40 ms when the listening socket lacks
  ``TCP_NODELAY`` (Nagle holds the body, written apart from the head, until the client's
  delayed ACK);
- the console's device certificates: the first page, a page in the middle, the last page, a
  page by CA and status deep in the listing, and a search by name. A page reads that page's rows
  only and takes its total from the in-memory index.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import update

from certmq.access_keys import AccessKeyStore
from certmq.api import HttpListener, create_app
from certmq.console import ConsoleSettings, derive_session_key
from certmq.control import ConnectionInfo, ListenerInfo
from certmq.instance import init_instance, load_instance
from certmq.registry import RegistryService, open_registry
from certmq.registry.models import DeviceCertificateRow
from registry_scale import register_test_ca, synthetic_devices


class NoMqttListeners:
    """What the pages ask of the broker, for an instance that serves no MQTT listener: no live
    connection, one-way mode. The pages timed here ask nothing else."""

    def listeners(self) -> list[ListenerInfo]:
        return []

    def connections(self) -> list[ConnectionInfo]:
        return []

    def auth_mode(self) -> str:
        return "one-way"


async def timed_ms(client: httpx.AsyncClient, path: str, repeat: int) -> tuple[float, float]:
    """The median and the slowest of ``repeat`` GETs of ``path``, in milliseconds."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        reply = await client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 200:
            raise SystemExit(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
    return statistics.median(samples), max(samples)


async def run(devices: int, repeat: int, directory: Path) -> None:
    init = init_instance(directory / "data", "mqtt-bench-http")
    assert init is not None
    instance = load_instance(init.data_dir)
    store = open_registry(directory / "registry.db")
    registry = RegistryService(store, instance_id=instance.id)
    await registry.open()
    ca_sn = await register_test_ca(registry)
    started = time.perf_counter()
    store.import_devices(synthetic_devices(ca_sn, devices), datetime.datetime.now(datetime.UTC))
    with store.engine.begin() as connection:  # a tenth inactive, for the status filter
        connection.execute(
            update(DeviceCertificateRow).where(DeviceCertificateRow.name.like("%0")).values(status="inactive")
        )
    await registry.rebuild_index()
    print(f"registry: {devices:,} device rows in {time.perf_counter() - started:.1f} s")

    app = create_app(
        registry=registry,
        control=NoMqttListeners(),  # type: ignore[arg-type]
        instance_id=instance.id,
        admin_token=instance.admin_token,
        access_keys_manager=AccessKeyStore.for_instance(instance),
        console=ConsoleSettings(session_key=derive_session_key(instance.instance_key)),
    )
    listener = HttpListener(app, "127.0.0.1", 0)
    await listener.start()
    try:
        async with httpx.AsyncClient(base_url=listener.url, timeout=60) as client:
            login = await client.post("/console/login", data={"token": instance.admin_token})
            if login.status_code != 303:
                raise SystemExit(f"console login answered {login.status_code}")
            pages = max(1, devices // 100)
            active_pages = max(1, (devices - devices // 10) // 100)
            cases = {
                "REST GET /api/v1/healthz": "/api/v1/healthz",
                "console devices, page 1 (100)": "/console/device-certificates?page_size=100",
                f"console devices, page {pages // 2:,} (100)": (
                    f"/console/device-certificates?page_no={max(1, pages // 2)}&page_size=100"
                ),
                f"console devices, page {pages:,} (100, the last)": (
                    f"/console/device-certificates?page_no={pages}&page_size=100"
                ),
                f"console devices by CA, active, page {active_pages // 2:,} (100)": (
                    f"/console/device-certificates?ca_sn={ca_sn}&status=active"
                    f"&page_no={max(1, active_pages // 2)}&page_size=100"
                ),
                "console devices by name": "/console/device-certificates?name=device-0000314",
            }
            await client.get("/api/v1/healthz")  # the connection is open before timing
            for label, path in cases.items():
                median, slowest = await timed_ms(client, path, repeat)
                print(f"{label}: {median:.1f} ms median, {slowest:.1f} ms slowest of {repeat}")
    finally:
        await listener.stop()
        await registry.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as directory:
        asyncio.run(run(args.devices, args.repeat, Path(directory)))


if __name__ == "__main__":
    main()
