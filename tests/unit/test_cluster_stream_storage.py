"""A node's checkpoints and journal in JetStream (certmq.cluster.stream_storage), on a real
nats-server: what one node wrote, another connection to NATS (another node) reads back whole."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client

from certmq.broker.core import BrokerCore
from certmq.broker.journal import Record, RetainedCleared, encode_block, encode_retained_cleared
from certmq.broker.messages import Message
from certmq.broker.state_keeper import StateKeeper
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.cluster.stream_storage import CHUNK, SEGMENT, StreamStorage
from certmq.config import MqttSection
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId

from .test_cluster_subjects_nats import nats_url  # noqa: F401 (the module's NATS server)
from .test_persistence import comparable
from .test_recovery import connect

OpenStorage = Callable[[str], Awaitable[StreamStorage]]


@pytest.fixture
async def open_storage(nats_url: str) -> AsyncIterator[OpenStorage]:  # noqa: F811
    """Opens the storage of a node (by name) of one cluster, each on a NATS connection of its
    own, as another node (or the same one started again) would."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made: list[Client] = []

    async def open_(node: str) -> StreamStorage:
        client = await nats.connect(nats_url)
        made.append(client)
        storage = StreamStorage(client, prefix=prefix, node=node, replicas=1)
        await storage.set_up()
        return storage

    yield open_
    for client in made:
        await client.close()


async def started(storage: StreamStorage) -> tuple[BrokerCore, StateKeeper]:
    core = BrokerCore(MqttSection())
    keeper = StateKeeper(core, storage)
    await keeper.restore()
    return core, keeper


async def journal_messages(storage: StreamStorage) -> int:
    info = await storage.client.jetstream().stream_info(storage.stream, subjects_filter=storage.subject)
    return (info.state.subjects or {}).get(storage.subject, 0)


def sessions_and_messages(core: BrokerCore) -> None:
    offline = connect(
        core, "offline", 3600, Will("wills/offline", b"bye", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 600})
    )
    core.subscribe(offline, SubscriptionEntry("offline", "sensors/#", 2, subscription_id=4))
    core.detach(offline, publish_will=True)
    online = connect(core, "online", 120)
    core.subscribe(online, SubscriptionEntry("online", "jobs/#", 1))
    core.publish(Message("sensors/temp", b"21.5", 1, True, {}, None, "p"))
    core.publish(Message("sensors/humidity", b"40", 1, False, {}, None, "p"))
    core.publish(Message("jobs/1", b"work", 1, False, {}, None, "p"))


async def test_what_a_node_journaled_is_rebuilt_by_another_connection(open_storage: OpenStorage) -> None:
    core, keeper = await started(await open_storage("node-a"))
    sessions_and_messages(core)
    await keeper.flush()
    before = comparable(core)

    # Node A is gone without a checkpoint; another connection reads its storage.
    restored, _ = await started(await open_storage("node-a"))
    after = comparable(restored)
    assert after == before
    assert sorted(after["sessions"]) == ["offline", "online"]
    pending = [(d.message.topic, d.message.payload) for d in restored.sessions["offline"].pending]
    assert pending == [("sensors/temp", b"21.5"), ("sensors/humidity", b"40")]
    # Another node's storage holds none of it.
    other, _ = await started(await open_storage("node-b"))
    assert comparable(other)["sessions"] == {} and not list(other.retained)


async def test_a_checkpoint_replaces_the_journal_it_covers(open_storage: OpenStorage) -> None:
    storage = await open_storage("node-a")
    core, keeper = await started(storage)
    sessions_and_messages(core)
    await keeper.flush()
    assert await journal_messages(storage) >= 1
    await keeper.checkpoint()
    # The journal's segments before the checkpoint are deleted from the stream.
    assert await journal_messages(storage) == 0
    core.publish(Message("sensors/after", b"after the checkpoint", 1, False, {}, None, "p"))
    await keeper.flush()
    assert await journal_messages(storage) == 1
    before = comparable(core)

    restored, _ = await started(await open_storage("node-a"))
    assert comparable(restored) == before
    assert [d.message.payload for d in restored.sessions["offline"].pending] == [
        b"21.5",
        b"40",
        b"after the checkpoint",
    ]


async def test_a_batch_larger_than_a_nats_message_travels_in_pieces(open_storage: OpenStorage) -> None:
    storage = await open_storage("node-a")
    core, keeper = await started(storage)
    payload = bytes(range(256)) * (CHUNK * 3 // 256)  # three pieces' worth, in one record
    core.publish(Message("big/retained", payload, 1, True, {}, None, "p"))
    await keeper.flush()
    assert await journal_messages(storage) >= 3
    restored, _ = await started(await open_storage("node-a"))
    assert [(m.topic, m.payload) for m in restored.retained] == [("big/retained", payload)]


async def test_a_batch_cut_short_by_a_crash_is_left_out(open_storage: OpenStorage) -> None:
    storage = await open_storage("node-a")
    core, keeper = await started(storage)
    core.publish(Message("kept", b"written whole", 1, True, {}, None, "p"))
    await keeper.flush()
    # The first piece of a larger batch, and then nothing: the node died while writing it.
    block = encode_block([b"x" * (CHUNK + 100)])
    jetstream = storage.client.jetstream()
    await jetstream.publish(storage.subject, block[:CHUNK], stream=storage.stream, headers={SEGMENT: "1"})
    restored, restored_keeper = await started(await open_storage("node-a"))
    assert [(m.topic, m.payload) for m in restored.retained] == [("kept", b"written whole")]
    # And what the node records from then on is read after it.
    restored.publish(Message("later", b"after the restart", 1, True, {}, None, "p"))
    await restored_keeper.flush()
    again, _ = await started(await open_storage("node-a"))
    assert sorted(m.topic for m in again.retained) == ["kept", "later"]


async def test_a_checkpoint_deletes_no_record_of_a_later_segment_even_one_on_its_way(
    open_storage: OpenStorage,
) -> None:
    storage = await open_storage("node-a")
    written: list[int] = []
    writer = storage.open_journal(written.append)
    writer.write(1, [encode_retained_cleared("covered")], 1)
    while written != [1]:
        await asyncio.sleep(0.01)
    # Segment 2's first batch is stored, and its acknowledgement not yet seen by the writer.
    jetstream = storage.client.jetstream()
    later = encode_block([encode_retained_cleared("kept")])
    await jetstream.publish(storage.subject, later, stream=storage.stream, headers={SEGMENT: "2"})
    await asyncio.to_thread(storage.delete_journal, 1)  # a checkpoint covers segment 1
    assert await journal_messages(storage) == 1
    records: list[Record] = []
    await asyncio.to_thread(storage.read_journal, 1, records.extend)
    assert records == [RetainedCleared("kept")]
    await asyncio.to_thread(writer.close)
