"""AccessKey pairs in a cluster: two nodes, each an AccessKeyStore over its own RegistryService, on
one real PostgreSQL, started from copies of one data directory as docs/cluster.md says. A pair
created or deleted on one node is used or refused by the other at once (certmq.access_keys).

Every wait is for an event; the guard on each wait only turns a hang into a failure."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from certmq.access_keys import AccessKeyNotFound, AccessKeyStore, shared_setting
from certmq.auth.credentials import check_signature
from certmq.instance import CREDENTIALS_FILE, InitResult, InstanceError, init_instance, load_instance
from certmq.registry import RegistryEvent, RegistryService, SettingChanged, open_registry

from .registry_fixtures import INSTANCE_ID, postgresql_database, postgresql_server
from .test_registry_change_feed import Gate, libpq_url

__all__ = ["postgresql_server"]  # fixtures

GUARD = 30.0
CLIENT_ID = "GID_Test@@@0001"


def signs_in(store: AccessKeyStore, access_key_id: str, secret: str) -> bool:
    """Whether a Signature-mode CONNECT of ``access_key_id`` signed with ``secret`` passes the
    check that reads ``store.secrets``."""
    password = base64.b64encode(hmac.new(secret.encode(), CLIENT_ID.encode(), hashlib.sha1).digest())
    username = f"Signature|{access_key_id}|{INSTANCE_ID}"
    return check_signature(username, password, CLIENT_ID, INSTANCE_ID, store.secrets).allowed


class Seen:
    """The events a node emits to its subscribers, as they come."""

    def __init__(self, registry: RegistryService) -> None:
        self.queue: asyncio.Queue[RegistryEvent] = asyncio.Queue()
        registry.events.subscribe(self.queue.put_nowait)

    async def until(self, last: RegistryEvent) -> None:
        while await asyncio.wait_for(self.queue.get(), GUARD) != last:
            pass


@dataclass
class Node:
    data_dir: Path
    registry: RegistryService
    access_keys: AccessKeyStore
    seen: Seen


@dataclass
class Cluster:
    url: str
    init: InitResult
    first: Node
    second: Node

    async def marker(self, number: int = 0) -> None:
        """Node 1 sets a setting and node 2 sees it: node 2 has applied what node 1 did before."""
        await self.first.registry.set_setting(f"zz-marker-{number}", True)
        await self.second.seen.until(SettingChanged(f"zz-marker-{number}"))


async def start_node(url: str, data_dir: Path, gate: bool = False) -> Node:
    registry = RegistryService(open_registry(url), instance_id=INSTANCE_ID, listen=True)
    assert registry.change_feed is not None
    registry.change_feed.first_retry_delay = registry.change_feed.max_retry_delay = 0.05
    if gate:
        registry.change_feed.connect = Gate(registry.change_feed.connect)
    await registry.open()
    access_keys = AccessKeyStore.for_instance(load_instance(data_dir))
    try:
        await access_keys.share(registry)
    except BaseException:
        await stop_node(registry)
        raise
    return Node(data_dir, registry, access_keys, Seen(registry))


async def stop_node(registry: RegistryService) -> None:
    await registry.close()
    registry.store.close()


@pytest.fixture
async def cluster(postgresql_server: str | None, tmp_path: Path) -> AsyncIterator[Cluster]:
    if postgresql_server is None:
        pytest.fail(
            "no PostgreSQL server: set CERTMQ_TEST_POSTGRESQL_URL or install PostgreSQL (initdb, pg_ctl)"
        )
    init = init_instance(tmp_path / "node-1", INSTANCE_ID)
    assert init is not None
    shutil.copytree(tmp_path / "node-1", tmp_path / "node-2")
    with postgresql_database(postgresql_server) as url:
        first = await start_node(url, tmp_path / "node-1")
        try:
            second = await start_node(url, tmp_path / "node-2", gate=True)
        except BaseException:
            await stop_node(first.registry)
            raise
        started = Cluster(url, init, first, second)
        try:
            yield started
        finally:
            # A test may have started a node again.
            for node in (started.first, started.second):
                await stop_node(node.registry)


async def test_the_pair_init_made_works_on_every_node(cluster: Cluster) -> None:
    init = cluster.init
    for node in (cluster.first, cluster.second):
        assert dict(node.access_keys.secrets) == {init.access_key_id: init.access_key_secret}
        assert [key.id for key in node.access_keys.list()] == [init.access_key_id]
    # The registry holds the entry of credentials.json as it is: the secret sealed.
    credentials = json.loads((cluster.first.data_dir / CREDENTIALS_FILE).read_text())
    stored = await cluster.second.registry.get_setting(shared_setting(init.access_key_id))
    assert stored == credentials["access_keys"][0]
    assert init.access_key_secret not in json.dumps(stored)


async def test_a_pair_created_on_one_node_works_on_the_other_and_stops_when_deleted(cluster: Cluster) -> None:
    first, second = cluster.first, cluster.second
    secrets_of_second = second.access_keys.secrets  # handed out before: it sees the changes
    created = await first.access_keys.create()
    assert signs_in(first.access_keys, created.id, created.secret)
    await second.seen.until(SettingChanged(shared_setting(created.id)))
    assert secrets_of_second[created.id] == created.secret
    assert signs_in(second.access_keys, created.id, created.secret)
    assert [key.id for key in second.access_keys.list()] == [cluster.init.access_key_id, created.id]
    stored = await second.registry.get_setting(shared_setting(created.id))
    assert created.secret not in json.dumps(stored), "secrets are sealed in the registry too"

    await first.access_keys.delete(created.id)
    assert not signs_in(first.access_keys, created.id, created.secret)
    await second.seen.until(SettingChanged(shared_setting(created.id)))
    assert created.id not in secrets_of_second
    assert not signs_in(second.access_keys, created.id, created.secret)
    with pytest.raises(AccessKeyNotFound):
        await second.access_keys.delete(created.id)

    # And the other way round: node 2 deletes the pair init made, node 1 refuses it.
    await second.access_keys.delete(cluster.init.access_key_id)
    await first.seen.until(SettingChanged(shared_setting(cluster.init.access_key_id)))
    assert dict(first.access_keys.secrets) == {}


async def test_pairs_created_on_two_nodes_at_once_are_all_kept(cluster: Cluster) -> None:
    per_node = 10
    created = await asyncio.gather(
        *(node.access_keys.create() for _ in range(per_node) for node in (cluster.first, cluster.second))
    )
    await cluster.marker()
    await cluster.second.registry.set_setting("zz-marker-back", True)
    await cluster.first.seen.until(SettingChanged("zz-marker-back"))
    expected = {key.id: key.secret for key in created} | {
        cluster.init.access_key_id: cluster.init.access_key_secret
    }
    assert len(expected) == 2 * per_node + 1
    assert dict(cluster.first.access_keys.secrets) == expected
    assert dict(cluster.second.access_keys.secrets) == expected
    # A node that starts now reads them all from the registry.
    third = await start_node(cluster.url, cluster.first.data_dir)
    try:
        assert dict(third.access_keys.secrets) == expected
    finally:
        await stop_node(third.registry)


async def test_a_deleted_pair_does_not_come_back_with_a_node_that_starts(cluster: Cluster) -> None:
    """Node 2's credentials.json still holds the pair init made; deleted on node 1, it stays
    deleted when node 2 starts again."""
    init = cluster.init
    await cluster.first.access_keys.delete(init.access_key_id)
    await stop_node(cluster.second.registry)
    cluster.second = await start_node(cluster.url, cluster.second.data_dir)
    assert init.access_key_id in load_instance(cluster.second.data_dir).access_keys
    assert dict(cluster.second.access_keys.secrets) == {}
    assert not signs_in(cluster.second.access_keys, init.access_key_id, init.access_key_secret)


async def test_a_node_adds_the_pairs_of_its_credentials_json_the_registry_never_had(cluster: Cluster) -> None:
    """A pair made on a single node (in its credentials.json) before it joined is added to the
    registry, and works on the other node."""
    alone = AccessKeyStore.for_instance(load_instance(cluster.second.data_dir))
    made_alone = await alone.create()
    await stop_node(cluster.second.registry)
    cluster.second = await start_node(cluster.url, cluster.second.data_dir)
    assert signs_in(cluster.second.access_keys, made_alone.id, made_alone.secret)
    await cluster.first.seen.until(SettingChanged(shared_setting(made_alone.id)))
    assert signs_in(cluster.first.access_keys, made_alone.id, made_alone.secret)


async def test_a_node_with_another_instance_key_does_not_start(cluster: Cluster, tmp_path: Path) -> None:
    stranger = init_instance(tmp_path / "stranger", INSTANCE_ID)
    assert stranger is not None
    with pytest.raises(InstanceError, match=r"share one instance\.key"):
        await start_node(cluster.url, stranger.data_dir)
    # It added nothing of its own.
    assert await cluster.first.registry.get_setting(shared_setting(stranger.access_key_id)) is None


async def test_changes_missed_while_not_listening_are_caught_up(cluster: Cluster) -> None:
    first, second = cluster.first, cluster.second
    feed = second.registry.change_feed
    assert feed is not None and isinstance(feed.connect, Gate)
    gate = feed.connect
    gate.opened.clear()
    with psycopg.connect(libpq_url(cluster.url), autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (feed.application_name,),
        )
    await asyncio.wait_for(gate.knocked.wait(), GUARD)

    created = await first.access_keys.create()
    await first.access_keys.delete(cluster.init.access_key_id)
    gate.opened.set()
    await cluster.marker()
    assert dict(second.access_keys.secrets) == {created.id: created.secret}
    assert feed.state.reconnects == 1 and feed.state.caught_up >= 2
