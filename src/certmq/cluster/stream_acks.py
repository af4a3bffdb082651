"""Acknowledging the messages of the cluster's stream once they are safe on this node.

A node routes each message of the stream (QoS 1 and 2, retained and point-to-point messages of
every node: certmq.cluster.router) to its sessions; for a persistent session that is offline,
or whose window is full, routing queues the delivery and appends records to the node's journal
(certmq.broker.recorder). The node acknowledges the message to the stream only once the journal
has those records: a node killed in between is sent the message again when it comes back,
instead of losing it with the records. Messages whose routing recorded nothing are acknowledged
at once, by the router; the others go out from one task, in batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.msg import Msg

from certmq.broker.recorder import Recorder
from certmq.cluster.nats_link import failure_text

log = logging.getLogger("certmq.cluster")


class RecordedAcks:
    """Acknowledges messages of the stream once the journal of ``recorder()`` (None: the node
    keeps no journal) has what routing them recorded."""

    def __init__(self, recorder: Callable[[], Recorder | None]) -> None:
        self._recorder = recorder
        self._loop = asyncio.get_running_loop()
        self._due: list[Msg] = []
        self._task: asyncio.Task[None] | None = None

    def wait_for_journal(self, msg: Msg) -> bool:
        """``msg`` is routed: whether its acknowledgement waits for the journal (it is then sent
        once what routing it recorded is written); False: nothing waits, acknowledge it now."""
        recorder = self._recorder()
        if recorder is None or recorder.committed >= recorder.appended:
            return False
        recorder.when_committed(lambda: self._ack(msg), recorder.appended)
        return True

    def _ack(self, msg: Msg) -> None:
        self._due.append(msg)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._send())

    async def _send(self) -> None:
        while self._due:
            due, self._due = self._due, []
            for msg in due:
                try:
                    await msg.ack()
                except Exception as error:
                    # Not acknowledged: the stream sends it again, and it is routed again.
                    log.debug("could not acknowledge a message of the stream: %s", failure_text(error))

    async def sent(self) -> None:
        """Return once every acknowledgement due is sent."""
        if self._task is not None:
            await asyncio.shield(self._task)
