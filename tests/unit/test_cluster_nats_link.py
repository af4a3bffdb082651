"""certmq.cluster.nats_link against a real nats-server: what the metrics say of the link."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.msg import Msg

from certmq.cluster.nats_link import NatsLink
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
