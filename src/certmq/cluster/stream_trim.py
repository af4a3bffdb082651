"""The cluster's stream of QoS 1 and 2 messages keeps a message until every consumer of it has
acknowledged it (docs/cluster.md, "How a message travels").

Each node's consumer, and each shared subscription's, has an acknowledgement floor: the last
message it acknowledged with all before it. Every :data:`TRIM_INTERVAL` seconds a node deletes
the messages below the lowest floor, which every consumer has; any node may, and doing it twice
changes nothing. A node that is gone holds its floor, and with it what it did not take, until
its sessions are adopted (certmq.cluster.adoption deletes its consumer) or its consumer is
removed after an hour unused. The stream refuses new messages once full (``DiscardPolicy.NEW``),
so none is dropped that a consumer still needs.

This is what JetStream's interest retention does, done here because nats-server 2.9 (Debian's)
drops messages of an interest stream that a consumer has not taken yet (measured: a node
restarted under load missed one message in a hundred).
"""

from __future__ import annotations

import asyncio
import logging

from certmq.cluster.nats_link import NatsLink, failure_text

log = logging.getLogger("certmq.cluster")

TRIM_INTERVAL = 5.0


class StreamTrim:
    """Deletes, now and then, the messages of ``stream`` every consumer has acknowledged."""

    def __init__(self, link: NatsLink, stream: str) -> None:
        self.link = link
        self.stream = stream
        self.trimmed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TRIM_INTERVAL)
            if not self.link.connected:
                continue
            try:
                await self.trim()
            except Exception as error:
                log.debug("could not trim the stream %s: %s", self.stream, failure_text(error))

    async def trim(self) -> int:
        """Delete the messages below every consumer's acknowledgement floor; how many."""
        client = self.link.client
        assert client is not None
        jetstream = client.jetstream()
        consumers = await jetstream.consumers_info(self.stream)
        floors = [consumer.ack_floor.stream_seq or 0 for consumer in consumers if consumer.ack_floor]
        if not floors or len(floors) < len(consumers):
            return 0
        state = (await jetstream.stream_info(self.stream)).state
        below = min(floors) + 1
        if below <= state.first_seq:
            return 0
        await jetstream.purge_stream(self.stream, seq=below)
        deleted = below - state.first_seq
        self.trimmed += deleted
        return deleted
