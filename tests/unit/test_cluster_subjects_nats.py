"""MQTT filters as NATS subjects, checked against a real nats-server: what it delivers is what MQTT
matches (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js.errors import NoKeysError

from certmq.cluster.subjects import (
    client_token,
    filter_subjects,
    queue_group,
    subject_topic,
    token_level,
    topic_subject,
)

from .test_cluster_subjects import (
    LEVEL_CHARACTERS,
    PREFIX,
    TOPICS,
    dollar_exceptions,
    filters_and_topics,
    mqtt_pairs,
)

NATS_SERVER = "/usr/sbin/nats-server"


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tmp_path_factory.mktemp("jetstream")
    server = subprocess.Popen(
        [NATS_SERVER, "--addr", "127.0.0.1", "--port", str(port), "--jetstream", "--store_dir", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, "nats-server exited"
                assert time.monotonic() < deadline, "nats-server did not listen"
                time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


async def publish_in_order(connection: Client, subjects: list[str]) -> None:
    """Publish an empty message on each subject, and return once every message the server sends
    back for them has been received.

    The last message, on a subject no test subscription matches, comes back after all the others:
    the server handles one connection's messages in order. (``flush()`` does not say as much:
    nats-py writes its PING ahead of the commands it still buffers.)
    """
    done = await connection.subscribe("certmq-test.done")
    for subject in subjects:
        await connection.publish(subject, b"")
    await connection.publish("certmq-test.done", b"")
    await done.next_msg(timeout=10)
    await done.unsubscribe()


async def delivered(url: str, topic_filters: list[str], topics: list[str]) -> set[tuple[str, str]]:
    """The (filter, topic) pairs NATS delivers: each filter's subjects subscribed, each topic's
    subject published once."""
    connection = await nats.connect(url, allow_reconnect=False)
    try:
        subscriptions = [
            (topic_filter, await connection.subscribe(subject))
            for topic_filter in topic_filters
            for subject in filter_subjects(PREFIX, topic_filter)
        ]
        await publish_in_order(connection, [topic_subject(PREFIX, topic) for topic in topics])
        pairs: list[tuple[str, str]] = []
        for topic_filter, subscription in subscriptions:
            for _ in range(subscription.pending_msgs):
                message = await subscription.next_msg()
                pairs.append((topic_filter, subject_topic(PREFIX, message.subject)))
        assert len(pairs) == len(set(pairs)), "a message reached a subscription twice"
        return set(pairs)
    finally:
        await connection.close()


@given(batch=filters_and_topics(size=20))
@settings(max_examples=30, deadline=None)
def test_nats_delivers_what_mqtt_matches(nats_url: str, batch: tuple[list[str], list[str]]) -> None:
    topic_filters, topics = batch
    expected = mqtt_pairs(topic_filters, topics)
    # MQTT's rule for '$' topics NATS cannot say; the receiving node's topic tree applies it.
    exceptions = dollar_exceptions(topic_filters, topics)
    assert asyncio.run(delivered(nats_url, topic_filters, topics)) == expected | exceptions


async def shared_deliveries(url: str, members: int, messages: dict[str, int]) -> dict[str, int]:
    """How many messages each shared subscription of group ``g`` gets, its ``members`` members
    together: ``$share/g/a/+``, ``$share/g/a/b`` and ``$share/g/a/#``."""
    connection = await nats.connect(url, allow_reconnect=False)
    try:
        subscriptions = [
            (topic_filter, await connection.subscribe(subject, queue=queue_group("g", topic_filter)))
            for topic_filter in ("a/+", "a/b", "a/#")
            for _ in range(members)
            for subject in filter_subjects(PREFIX, topic_filter)
        ]
        await publish_in_order(
            connection,
            [topic_subject(PREFIX, topic) for topic, count in messages.items() for _ in range(count)],
        )
        received = dict.fromkeys(("a/+", "a/b", "a/#"), 0)
        for topic_filter, subscription in subscriptions:
            received[topic_filter] += subscription.pending_msgs
        return received
    finally:
        await connection.close()


def test_each_shared_subscription_gets_each_message_once(nats_url: str) -> None:
    received = asyncio.run(shared_deliveries(nats_url, members=3, messages={"a/b": 20, "a": 5, "a/c": 7}))
    # One group, three filters: three shared subscriptions, as MQTT counts them.
    assert received == {"a/+": 27, "a/b": 20, "a/#": 32}


async def stored_keys(url: str, client_ids: list[str], topics: list[str]) -> tuple[set[str], set[str]]:
    """Put a key for each client id and each topic into a JetStream key-value bucket, and read
    back the client ids and topics that its keys name."""
    connection = await nats.connect(url, allow_reconnect=False)
    try:
        jetstream = connection.jetstream()
        bucket = await jetstream.create_key_value(bucket="subjects")
        try:
            for client_id in client_ids:
                await bucket.put(f"client.{client_token(client_id)}", b"")
            for topic in topics:
                await bucket.put(topic_subject("retained", topic), b"")
            try:
                keys = await bucket.keys()
            except NoKeysError:
                keys = []
        finally:
            await jetstream.delete_key_value("subjects")
    finally:
        await connection.close()
    clients = {token_level(key.removeprefix("client.")) for key in keys if key.startswith("client.")}
    retained = {subject_topic("retained", key) for key in keys if key.startswith("retained.")}
    return clients, retained


@given(st.lists(st.text(LEVEL_CHARACTERS | st.just("/")), max_size=10), st.lists(TOPICS, max_size=10))
@settings(max_examples=20, deadline=None)
def test_tokens_are_key_value_keys(nats_url: str, client_ids: list[str], topics: list[str]) -> None:
    assert asyncio.run(stored_keys(nats_url, client_ids, topics)) == (set(client_ids), set(topics))
