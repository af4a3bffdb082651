"""certmq.cluster.nats_link against a real nats-server: what the metrics say of the link."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import nats
import pytest
from nats.aio.msg import Msg

from certmq.cluster.nats_link import RECEIVING_SLICE, LoopShare, NatsLink, failure_text
from certmq.config import ClusterSection

from .test_cluster_subjects_nats import nats_url  # noqa: F401 (the module's NATS server)


async def test_messages_the_node_does_not_take_fast_enough_are_counted_as_slow_consumer_drops(
    nats_url: str,  # noqa: F811
) -> None:
    link = NatsLink(ClusterSection(), [nats_url], "node-slow")
    link.start()
    await asyncio.wait_for(link.ready.wait(), 10)
    assert link.client is not None and link.stats.slow_consumer_drops == 0
    release = asyncio.Event()

    async def busy(msg: Msg) -> None:
        await release.wait()

    # Room for two messages waiting besides the one being handled: the rest are dropped.
    await link.client.subscribe("slow.subject", cb=busy, pending_msgs_limit=2)
    await link.confirm(5)
    publisher = await nats.connect(nats_url)
    try:
        for _ in range(20):
            await publisher.publish("slow.subject", b"x")
        await publisher.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while link.stats.slow_consumer_drops < 17 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert 17 <= link.stats.slow_consumer_drops <= 18
        assert link.stats.errors == 0  # counted apart, not as errors
    finally:
        release.set()
        await publisher.close()
        await link.stop()


def _raw_subscriber(url: str, subject: str) -> socket.socket:
    """A NATS subscriber of ``subject`` on a plain blocking socket: it reads what the server
    sends while the test's event loop does not run."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=5)
    sock.recv(4096)  # INFO
    sock.sendall(f"CONNECT {{}}\r\nSUB {subject} 1\r\nPING\r\n".encode())
    received = b""
    while b"PONG" not in received:
        received += sock.recv(4096)
    return sock


async def test_what_is_published_is_written_to_nats_at_once_not_a_turn_of_the_loop_later(
    nats_url: str,  # noqa: F811
) -> None:
    link = NatsLink(ClusterSection(), [nats_url], "node-now")
    link.start()
    await asyncio.wait_for(link.ready.wait(), 10)
    assert link.client is not None
    subscriber = _raw_subscriber(nats_url, "now.subject")
    try:
        await link.client.publish("now.subject", b"first")
        link.write_now()
        # The loop does not turn while the subscriber waits: only what was written arrives.
        subscriber.settimeout(5)
        received = b""
        while b"first" not in received:
            received += subscriber.recv(4096)
        assert received.startswith(b"MSG now.subject 1 5\r\nfirst")
        # Nothing is left for nats-py's own flusher to send twice.
        await link.confirm(5)
        subscriber.settimeout(0.3)
        try:
            again = subscriber.recv(4096)
        except TimeoutError:
            again = b""
        assert b"first" not in again
    finally:
        subscriber.close()
        await link.stop()


def test_a_failure_without_words_is_named_by_its_kind() -> None:
    # nats-py's timeouts carry no message: a log line must still say what went wrong.
    assert failure_text(TimeoutError()) == "TimeoutError"
    assert failure_text(ConnectionRefusedError("refused")) == "refused"


@pytest.mark.parametrize("shared", [True, False], ids=["sharing", "nats-py alone"])
async def test_a_backlog_from_nats_lets_the_loop_turn(nats_url: str, shared: bool) -> None:  # noqa: F811
    # 200 messages queued in a subscription, each taking 0.5 ms to handle: nats-py alone hands
    # them over without a turn of the loop in between; with the node's share, something else
    # scheduled meanwhile runs every RECEIVING_SLICE.
    client = await nats.connect(nats_url)
    publisher = await nats.connect(nats_url)
    share = LoopShare()
    all_queued = asyncio.Event()
    handled = 0
    turns_while_handling = 0

    async def handle(msg: Msg) -> None:
        nonlocal handled
        if handled == 0:
            await all_queued.wait()  # the rest wait in the subscription's queue meanwhile
        handled += 1
        until = time.monotonic() + 0.0005
        while time.monotonic() < until:
            pass
        if shared:
            await share.turn()

    async def tick() -> None:
        nonlocal turns_while_handling
        while handled < 200:
            if handled:
                turns_while_handling += 1
            await asyncio.sleep(0)

    try:
        subscription = await client.subscribe("backlog.subject", cb=handle)
        await client.flush()
        for _ in range(200):
            await publisher.publish("backlog.subject", b"x")
        await publisher.flush()
        while subscription.pending_msgs < 199:
            await asyncio.sleep(0.01)
        ticker = asyncio.create_task(tick())
        all_queued.set()
        await asyncio.wait_for(ticker, 10)
        # 0.1 s of work: about 50 slices, each followed by a turn.
        slices = int(200 * 0.0005 / RECEIVING_SLICE)
        if shared:
            assert turns_while_handling >= slices // 2, turns_while_handling
        else:
            assert turns_while_handling <= 1, turns_while_handling
    finally:
        await client.close()
        await publisher.close()
