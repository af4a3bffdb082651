"""The registry's database: URLs, migrations on SQLite and PostgreSQL, SQLite settings,
durability of acknowledged changes, and the change events' wire format."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from certmq.registry import (
    CaAdded,
    CaDeleted,
    CaStatusChanged,
    DeviceAdded,
    DeviceDeleted,
    DeviceStatusChanged,
    RegistryEvent,
    RegistryEvents,
    RegistryService,
    SettingChanged,
    open_registry,
)
from certmq.registry.database import MIGRATIONS_DIR, REGISTRY_FILE, alembic_config, registry_url
from certmq.registry.events import event_from_json, event_to_json
from certmq.registry.models import Base
from certmq.registry.store import RegistryStore

from .registry_fixtures import (
    INSTANCE_ID,
    clock,
    make_ca,
    make_device,
    postgresql_server,
    register,
    registry,
    store,
)

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures

TABLES = {
    "ca_certificate",
    "device_certificate",
    "registration_code",
    "setting",
    "decision",
    "alembic_version",
}


def test_registry_urls(tmp_path: Path) -> None:
    assert registry_url("", tmp_path).database == str(tmp_path / REGISTRY_FILE)
    assert registry_url("", tmp_path).drivername == "sqlite+pysqlite"
    assert registry_url(tmp_path / "r.db").database == str(tmp_path / "r.db")
    assert registry_url("/var/lib/certmq/r.db").database == "/var/lib/certmq/r.db"
    assert registry_url("sqlite:////tmp/x.db").drivername == "sqlite+pysqlite"
    url = registry_url("postgresql://certmq:secret@db.example:5433/certmq")
    assert (url.drivername, url.host, url.port, url.database, url.password) == (
        "postgresql+psycopg",
        "db.example",
        5433,
        "certmq",
        "secret",
    )
    assert registry_url("postgres://db/certmq").drivername == "postgresql+psycopg"
    assert registry_url("postgresql+psycopg://db/certmq").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="data_dir"):
        registry_url("")


def test_migrations_create_the_schema(store: RegistryStore) -> None:
    assert set(inspect(store.engine).get_table_names()) >= TABLES
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with store.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head


def test_models_agree_with_the_migrations(store: RegistryStore) -> None:
    """A change to models.py without a migration fails here."""
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_reopening_is_harmless(tmp_path: Path) -> None:
    for _ in range(3):
        open_registry("", tmp_path).close()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name == REGISTRY_FILE) == [REGISTRY_FILE]


def test_migrations_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("v*.py"))


def test_sqlite_settings(tmp_path: Path) -> None:
    store = open_registry("", tmp_path / "nested" / "dir")
    try:
        with store.engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA synchronous").scalar() == 2  # FULL: a commit is on disk
            assert int(pragma("PRAGMA busy_timeout").scalar() or 0) >= 5000
        assert (tmp_path / "nested" / "dir" / REGISTRY_FILE).exists()
    finally:
        store.close()


async def test_acknowledged_changes_are_visible_to_a_new_connection(tmp_path: Path) -> None:
    store = open_registry("", tmp_path)
    registry = RegistryService(store, instance_id=INSTANCE_ID)
    await registry.open()
    try:
        ca = make_ca()
        record = await register(registry, ca)
        device = await registry.register_device(record.sn, make_device(ca))
        await registry.set_setting("auth_mode", "mutual")
        # Another engine, as another process would open the file, sees every change at once.
        other = create_engine(f"sqlite:///{tmp_path / REGISTRY_FILE}")
        with other.connect() as connection:
            assert connection.exec_driver_sql("SELECT sn FROM ca_certificate").scalar() == record.sn
            assert (
                connection.exec_driver_sql("SELECT device_sn FROM device_certificate").scalar()
                == device.device_sn
            )
            assert connection.exec_driver_sql("SELECT value FROM setting").scalar() == '"mutual"'
        other.dispose()
    finally:
        await registry.close()
        store.close()


def test_event_wire_format() -> None:
    events: list[RegistryEvent] = [
        CaAdded("0a"),
        CaStatusChanged("0a", False),
        CaDeleted("0a"),
        DeviceAdded("0a", "00ff"),
        DeviceStatusChanged("0a", "00ff", True),
        DeviceDeleted("0a", "00ff"),
        SettingChanged("auth_mode"),
    ]
    for event in events:
        assert event_from_json(event_to_json(event)) == event
    for bad in ("", "{}", '{"type": "Nope"}', '{"type": "CaAdded"}', "[]"):
        with pytest.raises(ValueError):
            event_from_json(bad)


def test_event_fan_out() -> None:
    events = RegistryEvents()
    seen: list[tuple[str, RegistryEvent]] = []

    def failing(event: RegistryEvent) -> None:
        raise RuntimeError("a broken subscriber")

    unsubscribe_first = events.subscribe(lambda event: seen.append(("first", event)))
    events.subscribe(failing)
    events.subscribe(lambda event: seen.append(("second", event)))
    events.emit(CaAdded("01"))
    unsubscribe_first()
    unsubscribe_first()
    events.emit(CaDeleted("01"))
    assert seen == [("first", CaAdded("01")), ("second", CaAdded("01")), ("second", CaDeleted("01"))]
    assert len(events) == 2


async def test_apply_change_from_another_node(tmp_path: Path) -> None:
    """What a LISTEN/NOTIFY listener would do: another node's change reaches this node's index
    and subscribers through apply_change."""
    stores = [open_registry("", tmp_path) for _ in range(2)]
    writer, follower = (RegistryService(store, instance_id=INSTANCE_ID) for store in stores)
    await writer.open()
    await follower.open()
    changes: list[RegistryEvent] = []
    seen: list[RegistryEvent] = []
    writer.events.subscribe(changes.append)
    follower.events.subscribe(seen.append)
    try:
        ca = make_ca()
        record = await register(writer, ca)
        device = await writer.register_device(record.sn, make_device(ca))
        await writer.inactivate_device(record.sn, device.device_sn)
        await writer.inactivate_ca(record.sn)
        await writer.set_setting("auth_mode", "mutual")
        for change in changes:
            await follower.apply_change(event_from_json(event_to_json(change)))
        assert seen == changes
        entry = follower.index.device(record.sn, device.device_sn)
        assert entry is not None and not entry.active
        ca_entry = follower.index.ca(record.sn)
        assert ca_entry is not None and not ca_entry.active
        assert await follower.get_setting("auth_mode") == "mutual"

        await writer.delete_ca(record.sn)
        await follower.apply_change(changes[-1])
        assert follower.index.ca(record.sn) is None and follower.index.device_count == 0
    finally:
        await writer.close()
        await follower.close()
        for store in stores:
            store.close()


async def test_changes_from_another_node_applied_as_they_come(tmp_path: Path) -> None:
    """Each change applied as soon as it is made, and a change read back after a later one:
    a status change of what was deleted since removes it from the index."""
    stores = [open_registry("", tmp_path) for _ in range(2)]
    writer, follower = (RegistryService(store, instance_id=INSTANCE_ID) for store in stores)
    await writer.open()
    await follower.open()
    changes: list[RegistryEvent] = []
    writer.events.subscribe(changes.append)

    async def passed_on() -> None:
        for change in changes:
            await follower.apply_change(change)
        changes.clear()

    try:
        ca = make_ca()
        record = await register(writer, ca)
        first, second = [await writer.register_device(record.sn, make_device(ca, f"d{n}")) for n in range(2)]
        await passed_on()
        entry = follower.index.device(record.sn, first.device_sn)
        assert entry is not None and entry.active
        added = follower.index.ca(record.sn)
        assert added is not None and added.fingerprint == bytes.fromhex(record.fingerprint)
        await writer.inactivate_ca(record.sn)
        await passed_on()
        ca_entry = follower.index.ca(record.sn)
        assert ca_entry is not None and not ca_entry.active
        await writer.activate_ca(record.sn)
        await passed_on()
        ca_entry = follower.index.ca(record.sn)
        assert ca_entry is not None and ca_entry.active is True
        await writer.inactivate_ca(record.sn)
        await passed_on()

        await writer.inactivate_device(record.sn, first.device_sn)
        await writer.delete_device(record.sn, first.device_sn)
        await follower.apply_change(changes[0])  # the inactivation, read back after the deletion
        assert follower.index.device(record.sn, first.device_sn) is None
        assert follower.index.device(record.sn, second.device_sn) is not None
        changes.clear()
        await writer.delete_device(record.sn, second.device_sn)
        await passed_on()
        assert follower.index.device(record.sn, second.device_sn) is None
        assert follower.index.device_count == 0

        await writer.activate_ca(record.sn)
        await writer.delete_ca(record.sn)
        await follower.apply_change(changes[0])  # the activation, read back after the deletion
        assert follower.index.ca(record.sn) is None

        await follower.apply_change(SettingChanged("never-set"))
        assert await follower.get_setting("never-set") is None
    finally:
        await writer.close()
        await follower.close()
        for store in stores:
            store.close()


async def test_the_service_runs_on_postgresql_and_sqlite(registry: RegistryService) -> None:
    """The same flow on both databases (the store fixture runs every test on each)."""
    ca = make_ca("Both Databases")
    record = await register(registry, ca)
    device = await registry.register_device(record.sn, make_device(ca))
    await registry.inactivate_device(record.sn, device.device_sn)
    page = await registry.list_devices(1, 10, ca_sn=record.sn, status="inactive")
    assert page.total == 1 and page.items[0].device_sn == device.device_sn
    await registry.delete_ca(record.sn)
    assert (await registry.list_devices(1, 10)).total == 0
