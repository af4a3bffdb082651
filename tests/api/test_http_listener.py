"""certmq.api.HttpListener: uvicorn inside the running event loop."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from fastapi import FastAPI

from certmq.web.listener import HttpListener


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.5)
        return {"slow": "done"}

    return app


async def test_start_binds_a_free_port_and_stop_closes_it() -> None:
    listener = HttpListener(small_app(), "127.0.0.1", 0)
    await listener.start()
    assert listener.port > 0
    assert listener.url == f"http://127.0.0.1:{listener.port}"
    async with httpx.AsyncClient(base_url=listener.url) as client:
        assert (await client.get("/ping")).json() == {"pong": "yes"}
    await listener.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=listener.url) as client:
            await client.get("/ping")
    await listener.stop()  # stopping twice is harmless


async def test_a_busy_port_is_an_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listener = HttpListener(small_app(), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            await listener.start()


async def test_ipv6_loopback() -> None:
    assert socket.has_ipv6, "this Python was built without IPv6"
    listener = HttpListener(small_app(), "::1", 0)
    await listener.start()
    try:
        assert listener.url == f"http://[::1]:{listener.port}"
        async with httpx.AsyncClient(base_url=listener.url) as client:
            assert (await client.get("/ping")).status_code == 200
    finally:
        await listener.stop()


async def test_stop_lets_a_request_in_progress_finish() -> None:
    listener = HttpListener(small_app(), "127.0.0.1", 0)
    await listener.start()
    async with httpx.AsyncClient(base_url=listener.url) as client:
        request = asyncio.create_task(client.get("/slow"))
        await asyncio.sleep(0.1)
        await listener.stop()
        assert (await request).json() == {"slow": "done"}


async def test_replies_do_not_wait_for_delayed_acknowledgements() -> None:
    listener = HttpListener(small_app(), "127.0.0.1", 0)
    await listener.start()
    try:
        async with httpx.AsyncClient(base_url=listener.url) as client:
            await client.get("/ping")
            started = time.perf_counter()
            for _ in range(20):
                assert (await client.get("/ping")).status_code == 200
            elapsed = time.perf_counter() - started
    finally:
        await listener.stop()
    # About 1 ms each on loopback; 40 ms each when Nagle waits for the client's delayed ACK.
    assert elapsed < 0.5, f"20 requests took {elapsed:.2f} s"
