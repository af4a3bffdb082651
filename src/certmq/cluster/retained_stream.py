"""The cluster's retained messages at rest: a JetStream stream that keeps the last message of
each topic's subject (an empty payload: the topic was cleared), on disk on every replica, so
that it outlives the nodes. A node that starts reads it before it opens its listeners
(docs/cluster.md, "Retained messages"); while the nodes run, retained messages also travel
through the message stream, and each node keeps them as it routes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.js.api import DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from certmq.broker.messages import Message
from certmq.broker.routing import NOT_KEPT_PREFIX, LocalRouter
from certmq.cluster.envelope import EnvelopeError, open_envelope
from certmq.cluster.subjects import subject_topic

log = logging.getLogger("certmq.cluster")

# How long a read of the stream waits for its next message.
READ_TIMEOUT = 15.0


def retained_stream_config(name: str, prefix: str, replicas: int) -> StreamConfig:
    """The stream ``name`` of the subjects under ``prefix``: the last message of each."""
    return StreamConfig(
        name=name,
        subjects=[f"{prefix}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        num_replicas=replicas,
    )


async def load_retained(
    client: Client, name: str, prefix: str, local: LocalRouter, malformed: Callable[[str, Exception], None]
) -> None:
    """The cluster's retained messages replace this node's own (kept from an earlier run,
    perhaps changed since on other nodes), unless the cluster has none yet."""
    jetstream = client.jetstream()
    info = await jetstream.stream_info(name)
    if not info.state.messages:
        return
    loop = asyncio.get_running_loop()
    loaded: dict[str, Message] = {}
    subscription = await jetstream.subscribe(
        f"{prefix}.>", ordered_consumer=True, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, stream=name
    )
    try:
        while True:
            msg = await subscription.next_msg(timeout=READ_TIMEOUT)
            try:
                topic = subject_topic(prefix, msg.subject)
                message = open_envelope(topic, msg.data, loop.time()).messages[-1]
            except (ValueError, EnvelopeError) as error:
                malformed(msg.subject, error)
            else:
                if message.payload:
                    loaded[topic] = message
            if msg.metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    recorder = local.recorder
    for message in list(local.retained):
        if message.topic not in loaded and not message.topic.startswith(NOT_KEPT_PREFIX):
            local.retained.clear(message.topic)
            if recorder is not None:
                recorder.retained_cleared(message.topic)
    for message in loaded.values():
        local.retained.set(message)
        if recorder is not None:
            recorder.retained_set(message)
    log.info("%d retained messages from the cluster", len(loaded))
