"""Registry changes between nodes on a real PostgreSQL: two RegistryService instances on one
database, each listening, as two nodes of a cluster (docs/registry.md, "Several nodes").

Every wait is for an event or a future; the guard on each wait only turns a hang into a failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from certmq import pki
from certmq.api.readiness import registry_unready
from certmq.registry import (
    CaAdded,
    CaDeleted,
    CaRecord,
    CaStatusChanged,
    DeviceAdded,
    DeviceDeleted,
    DeviceRecord,
    DeviceStatusChanged,
    RegistryEvent,
    RegistryService,
    SettingChanged,
    open_registry,
)
from certmq.registry.change_feed import ChangeFeed, Connect
from certmq.registry.missed_changes import missed_changes
from certmq.registry.store import RegistryStore

from .registry_fixtures import (
    INSTANCE_ID,
    make_ca,
    make_device,
    postgresql_database,
    postgresql_server,
    register,
)

__all__ = ["postgresql_server"]  # fixtures

# How long a wait may take before the test fails instead of hanging: a guard, not a measurement.
GUARD = 30.0


class Gate:
    """Lets the change feed's connections through, or holds them until it opens again."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self.opened = asyncio.Event()
        self.opened.set()
        self.knocked = asyncio.Event()  # a connection was asked for while the gate was closed

    async def __call__(self) -> psycopg.AsyncConnection[Any]:
        if not self.opened.is_set():
            self.knocked.set()
            await self.opened.wait()
        return await self._connect()


class Received:
    """The events a node emits to its subscribers, as they come."""

    def __init__(self, node: RegistryService) -> None:
        self.queue: asyncio.Queue[RegistryEvent] = asyncio.Queue()
        node.events.subscribe(self.queue.put_nowait)

    async def until(self, last: RegistryEvent) -> list[RegistryEvent]:
        """The events before ``last``, once ``last`` came."""
        events = []
        while (event := await asyncio.wait_for(self.queue.get(), GUARD)) != last:
            events.append(event)
        return events

    async def next(self, count: int) -> list[RegistryEvent]:
        return [await asyncio.wait_for(self.queue.get(), GUARD) for _ in range(count)]

    def taken(self) -> list[RegistryEvent]:
        """The events received so far."""
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events


@dataclass
class Nodes:
    """Node 1 writes; node 2, whose feed's connections pass through ``gate``, follows."""

    first: RegistryService
    second: RegistryService
    url: str
    gate: Gate
    seen_first: Received
    seen_second: Received
    markers: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @property
    def feed(self) -> ChangeFeed:
        assert self.second.change_feed is not None
        return self.second.change_feed

    async def synced(self) -> list[RegistryEvent]:
        """Node 1 sets a marker; what node 2 emitted before it, once it came."""
        marker = f"zz-marker-{next(self.markers)}"
        await self.first.set_setting(marker, True)
        return await self.seen_second.until(SettingChanged(marker))

    def indexes_agree(self) -> bool:
        return missed_changes(self.first.index, self.second.index, {}, {}) == []


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def nodes(postgresql_server: str | None) -> AsyncIterator[Nodes]:
    if postgresql_server is None:
        pytest.fail(
            "no PostgreSQL server: set CERTMQ_TEST_POSTGRESQL_URL or install PostgreSQL (initdb, pg_ctl)"
        )
    with postgresql_database(postgresql_server) as url:
        stores = [open_registry(url) for _ in range(2)]
        first, second = (RegistryService(store, instance_id=INSTANCE_ID, listen=True) for store in stores)
        for node in (first, second):
            assert node.change_feed is not None
            node.change_feed.first_retry_delay = node.change_feed.max_retry_delay = 0.05
        assert second.change_feed is not None
        gate = second.change_feed.connect = Gate(second.change_feed.connect)
        await first.open()
        await second.open()
        try:
            yield Nodes(first, second, url, gate, Received(first), Received(second))
        finally:
            await first.close()
            await second.close()
            for store in stores:
                store.close()


# --- every route that writes a change ---------------------------------------------------------------


@dataclass
class World:
    """What node 1 registered before the route runs: a CA and one of its devices."""

    ca: pki.CertifiedKey
    record: CaRecord
    device: DeviceRecord
    certificate: Any


async def first_connections(node: RegistryService, ca_sn: str, *certificates: Any) -> None:
    """The path of a device's first allowed connection: registrations begun together, one batch."""
    await asyncio.gather(*(node.begin_registration(ca_sn, certificate) for certificate in certificates))


Route = Callable[[RegistryService, World], Awaitable[Any]]

# Each way a change is written, with the events it must emit on node 1 and on node 2 alike.
ROUTES: dict[str, tuple[Route, list[type[RegistryEvent]]]] = {
    "CA registered": (lambda node, w: register(node, make_ca("Another CA")), [CaAdded]),
    "CA inactivated": (lambda node, w: node.inactivate_ca(w.record.sn), [CaStatusChanged]),
    "CA activated": (
        lambda node, w: _in_turn(node.inactivate_ca(w.record.sn), lambda: node.activate_ca(w.record.sn)),
        [CaStatusChanged, CaStatusChanged],
    ),
    "CA activated that was active": (lambda node, w: node.activate_ca(w.record.sn), []),
    "CA deleted": (lambda node, w: node.delete_ca(w.record.sn), [CaDeleted]),
    "device registered": (
        lambda node, w: node.register_device(w.record.sn, make_device(w.ca, "registered")),
        [DeviceAdded],
    ),
    "devices registered on their first connection": (
        lambda node, w: first_connections(node, w.record.sn, *(make_device(w.ca, f"d{n}") for n in range(3))),
        [DeviceAdded, DeviceAdded, DeviceAdded],
    ),
    "a batch with a device registered before": (
        lambda node, w: first_connections(node, w.record.sn, w.certificate, make_device(w.ca, "new")),
        [DeviceAdded],
    ),
    "device registered again": (lambda node, w: node.register_device(w.record.sn, w.certificate), []),
    "device inactivated": (
        lambda node, w: node.inactivate_device(w.record.sn, w.device.device_sn),
        [DeviceStatusChanged],
    ),
    "device activated": (
        lambda node, w: _in_turn(
            node.inactivate_device(w.record.sn, w.device.device_sn),
            lambda: node.activate_device(w.record.sn, w.device.device_sn),
        ),
        [DeviceStatusChanged, DeviceStatusChanged],
    ),
    "device deleted": (lambda node, w: node.delete_device(w.record.sn, w.device.device_sn), [DeviceDeleted]),
    "setting changed": (lambda node, w: node.set_setting("auth_mode", "mutual"), [SettingChanged]),
    "setting added": (lambda node, w: node.add_setting("auth_mode", "mutual"), [SettingChanged]),
    "setting added that was set": (
        lambda node, w: _in_turn(
            node.set_setting("auth_mode", "one-way"), lambda: node.add_setting("auth_mode", "mutual")
        ),
        [SettingChanged],
    ),
}


async def _in_turn(first: Awaitable[Any], then: Callable[[], Awaitable[Any]]) -> None:
    await first
    await then()


@pytest.mark.parametrize("route", ROUTES)
async def test_each_change_reaches_the_other_node(nodes: Nodes, route: str) -> None:
    """The change made on node 1 reaches node 2 as the same events, and their indexes agree."""
    ca = make_ca()
    record = await register(nodes.first, ca)
    certificate = make_device(ca)
    device = await nodes.first.register_device(record.sn, certificate)
    await nodes.synced()
    nodes.seen_first.taken()

    action, expected = ROUTES[route]
    await action(nodes.first, World(ca, record, device, certificate))
    made = nodes.seen_first.taken()
    assert [type(event) for event in made] == expected
    assert await nodes.synced() == made
    assert nodes.indexes_agree()
    assert await nodes.second.get_setting("auth_mode") == await nodes.first.get_setting("auth_mode")
    state = nodes.feed.state
    assert state.applied >= len(made) and state.last_lag is not None and state.last_lag >= 0
    assert state.malformed == 0 and state.reconnects == 0


async def test_a_rolled_back_write_sends_nothing(nodes: Nodes) -> None:
    """A write whose transaction fails at its commit (here a deferred constraint of the database's
    own) reaches no node; the next one does."""
    with psycopg.connect(libpq_url(nodes.url), autocommit=True) as connection:
        connection.execute(
            """
            CREATE FUNCTION refuse_setting() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.key = 'refused' THEN RAISE EXCEPTION 'refused at the commit'; END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON setting
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_setting();
            """
        )
    with pytest.raises(Exception, match="refused at the commit"):
        await nodes.first.set_setting("refused", 1)
    assert await nodes.synced() == []
    assert await nodes.second.get_setting("refused") is None


async def test_a_node_ignores_its_own_notices(nodes: Nodes) -> None:
    """Node 1 emits its change once, when it commits it, and counts its own notice; it applies
    node 2's change."""
    await nodes.first.set_setting("mine", 1)
    await nodes.second.set_setting("theirs", 2)
    assert await nodes.seen_first.until(SettingChanged("theirs")) == [SettingChanged("mine")]
    assert nodes.first.change_feed is not None
    assert nodes.first.change_feed.state.own == 1
    assert nodes.first.change_feed.state.applied == 1
    assert await nodes.first.get_setting("theirs") == 2


async def test_changes_missed_while_disconnected_are_caught_up(nodes: Nodes) -> None:
    """Node 2's listening connection is killed; what node 1 changes before node 2 listens again
    reaches node 2's subscribers as the events its notices would have been."""
    first = nodes.first
    kept, gone, quiet = make_ca("Kept"), make_ca("Gone"), make_ca("Quiet")
    kept_sn, gone_sn, quiet_sn = [(await register(first, ca)).sn for ca in (kept, gone, quiet)]
    inactivated, deleted = [
        await first.register_device(kept_sn, make_device(kept, name)) for name in ("i", "d")
    ]
    await first.register_device(gone_sn, make_device(gone))
    await first.set_setting("auth_mode", "tls")
    await nodes.synced()

    nodes.gate.opened.clear()
    with psycopg.connect(libpq_url(nodes.url), autocommit=True) as connection:
        killed = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (nodes.feed.application_name,),
        ).fetchall()
    assert killed == [(True,)]
    await asyncio.wait_for(nodes.gate.knocked.wait(), GUARD)
    assert not nodes.feed.state.connected
    # /readyz names it while it does not listen.
    assert registry_unready(nodes.second) == ["registry change feed"]

    await first.inactivate_device(kept_sn, inactivated.device_sn)
    await first.delete_device(kept_sn, deleted.device_sn)
    added = make_device(kept, "added")
    await first_connections(first, kept_sn, added)
    arrived_inactive = await first.register_device(kept_sn, make_device(kept, "arrived inactive"))
    await first.inactivate_device(kept_sn, arrived_inactive.device_sn)
    await first.delete_ca(gone_sn)
    await first.inactivate_ca(quiet_sn)
    new_sn = (await register(first, make_ca("New"))).sn
    await first.set_setting("auth_mode", "mutual")
    nodes.gate.opened.set()

    expected = [
        DeviceStatusChanged(kept_sn, inactivated.device_sn, False),
        DeviceDeleted(kept_sn, deleted.device_sn),
        DeviceAdded(kept_sn, pki.serial_hex(added)),
        DeviceAdded(kept_sn, arrived_inactive.device_sn),
        DeviceStatusChanged(kept_sn, arrived_inactive.device_sn, False),
        CaDeleted(gone_sn),
        CaStatusChanged(quiet_sn, False),
        CaAdded(new_sn),
        SettingChanged("auth_mode"),
    ]
    caught_up = await nodes.seen_second.next(len(expected))
    assert sorted(caught_up, key=repr) == sorted(expected, key=repr)
    assert await nodes.synced() == []  # and nothing more
    assert nodes.indexes_agree()
    assert await nodes.second.get_setting("auth_mode") == "mutual"
    state = nodes.feed.state
    assert state.connected and state.reconnects == 1 and state.caught_up == len(expected)
    assert registry_unready(nodes.second) == []

    # And it listens again: a change made now arrives as a notice.
    await first.activate_ca(quiet_sn)
    assert await nodes.synced() == [CaStatusChanged(quiet_sn, True)]


async def test_a_malformed_notice_is_counted_and_skipped(nodes: Nodes) -> None:
    notices = [
        "garbage",
        '["CaDeleted", "07"]',
        '{"type": "CaDeleted", "sn": 7, "origin": "elsewhere", "sent_at": 1}',
        '{"type": "CaDeleted", "sn": "07", "sent_at": 1}',
        '{"type": "CaDeleted", "sn": "07", "origin": "elsewhere"}',
        '{"type": "CaDeleted", "sn": "07", "origin": "elsewhere", "sent_at": true}',
        '{"type": "Nothing", "sn": "07", "origin": "elsewhere", "sent_at": 1}',
    ]
    with psycopg.connect(libpq_url(nodes.url), autocommit=True) as connection:
        for notice in notices:
            connection.execute("SELECT pg_notify('certmq_registry', %s)", (notice,))
    await nodes.first.set_setting("after", True)
    assert await nodes.seen_second.until(SettingChanged("after")) == []
    state = nodes.feed.state
    assert state.malformed == len(notices)
    assert state.connected and state.reconnects == 0


async def test_only_a_postgresql_registry_listens(tmp_path: Path) -> None:
    store = open_registry("", tmp_path)
    try:
        with pytest.raises(ValueError, match="only a PostgreSQL registry carries changes between nodes"):
            RegistryService(store, instance_id=INSTANCE_ID, listen=True)
    finally:
        store.close()


def test_sqlite_announces_nothing(tmp_path: Path) -> None:
    """On SQLite the events of a write are not even made into notices."""
    store: RegistryStore = open_registry("", tmp_path)

    def never_read() -> Iterator[RegistryEvent]:
        raise AssertionError("the changes were read")
        yield

    try:
        with store.engine.begin() as connection:
            store.announce(connection, never_read())
    finally:
        store.close()
