"""certmq.api.HttpListener: uvicorn inside the running event loop."""

from __future__ import annotations

import asyncio
import os
import socket

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


def option_of_the_accepted_socket(peer: tuple[str, int], option: int) -> int:
    """A TCP option of the socket this process accepted from ``peer`` (found among its open files)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # not a socket, or closed meanwhile
        with candidate:
            try:
                if candidate.getpeername() == peer:
                    return candidate.getsockopt(socket.IPPROTO_TCP, option)
            except OSError:
                continue
    raise AssertionError(f"no accepted connection from {peer}")


async def test_replies_do_not_wait_for_delayed_acknowledgements() -> None:
    # uvicorn writes a reply's head and body apart: without TCP_NODELAY, Nagle holds the body
    # until the client's delayed ACK, about 40 ms a reply (bench/http_pages.py times replies).
    listener = HttpListener(small_app(), "127.0.0.1", 0)
    await listener.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        assert option_of_the_accepted_socket(writer.get_extra_info("sockname"), socket.TCP_NODELAY)
        writer.close()
        await writer.wait_closed()
    finally:
        await listener.stop()
