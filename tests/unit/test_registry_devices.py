"""Device certificates: auto-registration (step 6 of the decision procedure) and its races, serial collisions,
statuses, deletion, listing, events after commit, and the index after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from certmq import pki
from certmq.registry import (
    CaDeleted,
    DeviceAdded,
    DeviceDeleted,
    DeviceRecord,
    DeviceStatusChanged,
    FindCaBySnError,
    FindDeviceBySnError,
    ParameterFieldCheckFailed,
    RegistryEvent,
    RegistryService,
    SerialCollision,
    SettingChanged,
    Status,
    open_registry,
)
from certmq.registry.store import NewDevice, RegistryStore

from .registry_fixtures import (
    INSTANCE_ID,
    clock,
    make_ca,
    make_device,
    pem,
    postgresql_server,
    register,
    registry,
    store,
    synthetic_devices,
)

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures


def device_rows(store: RegistryStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM device_certificate").scalar_one())


async def test_register_device(registry: RegistryService) -> None:
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    ca = make_ca()
    ca_record = await register(registry, ca)
    certificate = make_device(ca, "sensor-0001")

    record = await registry.register_device(ca_record.sn, certificate)

    assert record.ca_sn == ca_record.sn
    assert record.device_sn == pki.serial_hex(certificate)
    assert record.name == "sensor-0001"
    assert record.status == Status.ACTIVE and record.active
    assert record.fingerprint == pki.fingerprint_sha256(certificate)
    assert record.pem == pem(certificate)
    assert record.valid_begin == certificate.not_valid_before_utc
    assert record.valid_end == certificate.not_valid_after_utc
    assert await registry.get_device(ca_record.sn, record.device_sn) == record
    entry = registry.index.device(ca_record.sn, record.device_sn)
    assert entry is not None and entry.active and entry.fingerprint == bytes.fromhex(record.fingerprint)
    assert events[-1] == DeviceAdded(ca_record.sn, record.device_sn)

    # Registering it again is harmless: the same record, no new event.
    assert await registry.register_device(ca_record.sn, certificate) == record
    assert events.count(DeviceAdded(ca_record.sn, record.device_sn)) == 1


async def test_serial_with_high_bit_keeps_its_sign_octet(registry: RegistryService) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    record = await registry.register_device(ca_record.sn, make_device(ca, serial=0x80FF))
    assert record.device_sn == "0080ff"
    assert registry.index.device(ca_record.sn, "0080ff") is not None
    assert registry.index.device(ca_record.sn, "80ff") is None


async def test_concurrent_first_connections_register_once(
    registry: RegistryService, store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    ca = make_ca()
    ca_record = await register(registry, ca)
    certificate = make_device(ca)

    with caplog.at_level(logging.INFO, logger="certmq.registry"):
        records = await asyncio.gather(
            *(registry.register_device(ca_record.sn, certificate) for _ in range(20))
        )

    assert len(set(records)) == 1
    assert device_rows(store) == 1
    assert events.count(DeviceAdded(ca_record.sn, records[0].device_sn)) == 1
    lines = [r.getMessage() for r in caplog.records if records[0].device_sn in r.getMessage()]
    assert lines == [f"registered 1 device: {records[0].device_sn} of CA {ca_record.sn} ({records[0].name})"]


def reopen(store: RegistryStore) -> RegistryStore:
    """The same database opened again, as after a restart: what it returns was committed."""
    return open_registry(store.engine.url.render_as_string(hide_password=False))


class HeldStore:
    """Holds the registry's database thread in its first ``add_devices`` until ``release``, so
    that the registrations made meanwhile queue up; records the size of every batch."""

    def __init__(self, store: RegistryStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self._add_devices = store.add_devices
        monkeypatch.setattr(store, "add_devices", self.add_devices)

    def add_devices(
        self, devices: Sequence[NewDevice], now: datetime.datetime
    ) -> list[tuple[DeviceRecord, bool] | Exception]:
        self.entered.set()
        self.gate.wait(30)
        self.batches.append(len(devices))
        return self._add_devices(devices, now)

    async def occupy(self, call: Coroutine[Any, Any, DeviceRecord]) -> asyncio.Task[DeviceRecord]:
        """Start ``call`` and wait until its registration holds the database thread."""
        task = asyncio.create_task(call)
        while not self.entered.is_set():
            await asyncio.sleep(0.001)
        return task

    async def queue(self, *calls: Coroutine[Any, Any, DeviceRecord]) -> list[asyncio.Task[DeviceRecord]]:
        tasks = [asyncio.create_task(call) for call in calls]
        for _ in range(3):
            await asyncio.sleep(0)  # every call reaches its registration's future
        return tasks

    def release(self) -> None:
        self.gate.set()


def registered(result: DeviceRecord | BaseException) -> DeviceRecord:
    assert isinstance(result, DeviceRecord), result
    return result


async def test_concurrent_registrations_of_distinct_devices_share_one_commit(
    registry: RegistryService, store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First connections that arrive while the database thread is busy are written in one
    transaction, with one INSERT; each caller gets its own record once it is durable."""
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    ca = make_ca()
    ca_record = await register(registry, ca)
    certificates = [make_device(ca, f"sensor-{n:02d}") for n in range(30)]
    inserts: list[str] = []

    def count_inserts(connection: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DEVICE_CERTIFICATE"):
            inserts.append(statement)

    event.listen(store.engine, "before_cursor_execute", count_inserts)
    held = HeldStore(store, monkeypatch)
    first = await held.occupy(registry.register_device(ca_record.sn, certificates[0]))
    tasks = await held.queue(*(registry.register_device(ca_record.sn, c) for c in certificates[1:]))
    held.release()
    records = await asyncio.gather(first, *tasks)
    event.remove(store.engine, "before_cursor_execute", count_inserts)

    # The first registration took the thread alone; the 29 that waited went in together.
    assert held.batches == [1, 29]
    assert len(inserts) == 2
    assert [record.name for record in records] == [f"sensor-{n:02d}" for n in range(30)]
    added = [change.device_sn for change in events if isinstance(change, DeviceAdded)]
    assert sorted(added) == sorted(record.device_sn for record in records)
    for record in records:
        entry = registry.index.device(ca_record.sn, record.device_sn)
        assert entry is not None and entry.active
    reopened = reopen(store)
    try:
        stored, total = reopened.list_devices(0, 100, ca_sn=ca_record.sn)
        assert total == 30
        assert sorted(stored, key=lambda r: r.device_sn) == sorted(records, key=lambda r: r.device_sn)
    finally:
        reopened.close()


async def test_one_failing_registration_does_not_fail_its_batch(
    registry: RegistryService, store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device whose CA is not registered fails the batch's transaction (its foreign key):
    the others are written again one by one and only it fails."""
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    ca = make_ca()
    ca_record = await register(registry, ca)
    good = [make_device(ca, f"good-{n}") for n in range(6)]
    held = HeldStore(store, monkeypatch)
    first = await held.occupy(registry.register_device(ca_record.sn, make_device(ca, "first")))
    tasks = await held.queue(
        *(registry.register_device(ca_record.sn, c) for c in good[:3]),
        registry.register_device("00aa", make_device(make_ca("Unknown"), "orphan")),
        *(registry.register_device(ca_record.sn, c) for c in good[3:]),
    )
    held.release()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)

    assert held.batches == [1, 7]
    assert isinstance(results.pop(4), FindCaBySnError)
    assert [registered(result).name for result in results] == ["first"] + [f"good-{n}" for n in range(6)]
    assert sum(isinstance(change, DeviceAdded) for change in events) == 7
    assert registry.index.device_count == 7
    reopened = reopen(store)
    try:
        assert reopened.list_devices(0, 100, ca_sn=ca_record.sn)[1] == 7
        assert reopened.list_devices(0, 100, ca_sn="00aa")[1] == 0
    finally:
        reopened.close()


async def test_idempotency_and_collisions_within_one_batch(
    registry: RegistryService, store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, other = make_ca(), make_ca("Other")
    ca_record, other_record = await register(registry, ca), await register(registry, other)
    known = make_device(ca, "known")
    known_record = await registry.register_device(ca_record.sn, known)
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    fresh, original, impostor = (
        make_device(ca, "fresh"),
        make_device(ca, "a", serial=7),
        make_device(ca, "b", serial=7),
    )
    held = HeldStore(store, monkeypatch)
    occupant = await held.occupy(registry.register_device(ca_record.sn, make_device(ca, "first")))
    tasks = await held.queue(
        registry.register_device(ca_record.sn, fresh),
        registry.register_device(ca_record.sn, fresh),  # shares the registration above
        registry.register_device(ca_record.sn, known),  # registered before: its record
        registry.register_device(ca_record.sn, original),
        registry.register_device(ca_record.sn, impostor),  # the serial of a pending registration
        registry.register_device(other_record.sn, fresh),  # the same certificate under another CA
    )
    held.release()
    results = await asyncio.gather(occupant, *tasks, return_exceptions=True)

    first, fresh_record, fresh_again, known_again, original_record = map(registered, results[:5])
    assert fresh_record == fresh_again and fresh_record.name == "fresh"
    assert known_again == known_record
    assert original_record.name == "a"
    assert isinstance(results[5], SerialCollision)
    assert isinstance(results[6], SerialCollision)
    assert held.batches == [1, 4]  # fresh, known, original, and fresh under the other CA
    added = sorted(change.device_sn for change in events if isinstance(change, DeviceAdded))
    assert added == sorted([first.device_sn, fresh_record.device_sn, original_record.device_sn])
    assert registry.index.device(other_record.sn, fresh_record.device_sn) is None
    assert device_rows(store) == 4


async def test_store_batch_keeps_each_result(registry: RegistryService, store: RegistryStore) -> None:
    """``add_devices`` straight on the store: created, idempotent, collisions and rows the
    database refuses, each with its own result, in order; what went in is durable."""
    now = datetime.datetime.now(datetime.UTC)
    ca_sn = (await register(registry, make_ca())).sn
    first, second, third, fourth = synthetic_devices(ca_sn, 4)
    (before,) = store.add_devices([first], now)
    assert not isinstance(before, Exception) and before[1]
    naive = dataclasses.replace(third, valid_begin=third.valid_begin.replace(tzinfo=None))
    impostor = dataclasses.replace(first, fingerprint=second.fingerprint[::-1])
    twin = dataclasses.replace(second, device_sn="0b" + second.device_sn)
    orphan = dataclasses.replace(fourth, ca_sn="0c")

    results = store.add_devices([second, first, naive, impostor, twin, orphan, fourth], now)

    assert results[0] == (store.get_device(ca_sn, second.device_sn), True)  # as stored, not read back
    assert results[1] == (before[0], False)
    assert isinstance(results[2], Exception) and "timezone-aware" in str(results[2])
    assert isinstance(results[3], SerialCollision)  # another certificate with first's serial
    assert isinstance(results[4], SerialCollision)  # second's certificate under another serial
    assert isinstance(results[5], FindCaBySnError)
    assert results[6] == (store.get_device(ca_sn, fourth.device_sn), True)
    reopened = reopen(store)
    try:
        stored, total = reopened.list_devices(0, 100, ca_sn=ca_sn)
        assert total == 3
        assert {record.device_sn for record in stored} == {
            first.device_sn,
            second.device_sn,
            fourth.device_sn,
        }
    finally:
        reopened.close()


async def test_store_batch_with_a_row_already_stored(registry: RegistryService, store: RegistryStore) -> None:
    """A batch in which one device is already stored (another node registered it first): the
    others go in, in the same commit, and that one gives the stored record, not created."""
    now = datetime.datetime.now(datetime.UTC)
    ca_sn = (await register(registry, make_ca())).sn
    first, second, third = synthetic_devices(ca_sn, 3)
    (before,) = store.add_devices([second], now)
    assert not isinstance(before, Exception)

    results = store.add_devices([first, second, third], now + datetime.timedelta(seconds=1))

    assert results == [
        (store.get_device(ca_sn, first.device_sn), True),
        (before[0], False),
        (store.get_device(ca_sn, third.device_sn), True),
    ]
    assert device_rows(store) == 3


async def test_concurrent_registration_from_two_services(tmp_path: Path) -> None:
    """Two services on one file (as two processes): the unique constraint decides, and both
    return the one stored record."""
    stores = [open_registry("", tmp_path) for _ in range(2)]
    services = [RegistryService(store, instance_id=INSTANCE_ID) for store in stores]
    for service in services:
        await service.open()
    try:
        ca = make_ca()
        ca_record = await register(services[0], ca)
        await services[1].rebuild_index()
        for n in range(10):
            certificate = make_device(ca, f"device-{n}")
            records = await asyncio.gather(
                *(
                    service.register_device(ca_record.sn, certificate)
                    for service in services
                    for _ in range(3)
                )
            )
            assert len(set(records)) == 1
        assert device_rows(stores[0]) == 10
        assert services[0].index.device_count == services[1].index.device_count == 10
    finally:
        for service in services:
            await service.close()
        for store in stores:
            store.close()


async def test_serial_collision(registry: RegistryService, store: RegistryStore) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    original = make_device(ca, "original", serial=4242)
    impostor = make_device(ca, "impostor", serial=4242)
    stored = await registry.register_device(ca_record.sn, original)

    with pytest.raises(SerialCollision) as caught:
        await registry.register_device(ca_record.sn, impostor)
    assert (caught.value.ca_sn, caught.value.device_sn) == (ca_record.sn, stored.device_sn)
    assert await registry.get_device(ca_record.sn, stored.device_sn) == stored
    assert device_rows(store) == 1


async def test_serial_collision_while_registering(registry: RegistryService) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    first = make_device(ca, "first", serial=77)
    second = make_device(ca, "second", serial=77)
    results = await asyncio.gather(
        registry.register_device(ca_record.sn, first),
        registry.register_device(ca_record.sn, second),
        return_exceptions=True,
    )
    assert results[0] == await registry.get_device(ca_record.sn, "4d")
    assert isinstance(results[1], SerialCollision)


async def test_serial_collision_found_in_the_store(tmp_path: Path) -> None:
    """Another node registered a different certificate under the serial; this node's index does
    not know it yet, the store does."""
    stores = [open_registry("", tmp_path) for _ in range(2)]
    services = [RegistryService(store, instance_id=INSTANCE_ID) for store in stores]
    for service in services:
        await service.open()
    try:
        ca = make_ca()
        ca_record = await register(services[0], ca)
        await services[1].rebuild_index()
        await services[0].register_device(ca_record.sn, make_device(ca, "a", serial=99))
        with pytest.raises(SerialCollision):
            await services[1].register_device(ca_record.sn, make_device(ca, "b", serial=99))
    finally:
        for service in services:
            await service.close()
        for store in stores:
            store.close()


async def test_register_device_of_unknown_ca(registry: RegistryService) -> None:
    ca = make_ca()
    with pytest.raises(FindCaBySnError):
        await registry.register_device("00aa", make_device(ca))


async def test_device_statuses(registry: RegistryService) -> None:
    events: list[RegistryEvent] = []
    ca = make_ca()
    ca_record = await register(registry, ca)
    record = await registry.register_device(ca_record.sn, make_device(ca))
    registry.events.subscribe(events.append)

    inactive = await registry.inactivate_device(ca_record.sn, record.device_sn)
    assert inactive.status == Status.INACTIVE
    entry = registry.index.device(ca_record.sn, record.device_sn)
    assert entry is not None and not entry.active
    await registry.inactivate_device(ca_record.sn, record.device_sn)
    active = await registry.activate_device(ca_record.sn, record.device_sn)
    assert active.active
    entry = registry.index.device(ca_record.sn, record.device_sn)
    assert entry is not None and entry.active
    assert events == [
        DeviceStatusChanged(ca_record.sn, record.device_sn, False),
        DeviceStatusChanged(ca_record.sn, record.device_sn, True),
    ]


async def test_unknown_device(registry: RegistryService) -> None:
    ca_record = await register(registry, make_ca())
    operations = (
        registry.get_device,
        registry.activate_device,
        registry.inactivate_device,
        registry.delete_device,
    )
    unknown_device = rf"^no device certificate is registered with CA Sn '{ca_record.sn}' and DeviceSn '0123';"
    for operation in operations:
        with pytest.raises(FindDeviceBySnError, match=unknown_device):
            await operation(ca_record.sn, "0123")
        with pytest.raises(FindCaBySnError, match=r"^no CA certificate is registered with Sn '00ffee';"):
            await operation("00ffee", "0123")
        with pytest.raises(ParameterFieldCheckFailed, match=r"^DeviceSn is required$"):
            await operation(ca_record.sn, "")
        with pytest.raises(ParameterFieldCheckFailed, match=r"^CaSn is required$"):
            await operation("", "0123")


async def test_a_status_change_touches_only_the_device_of_that_ca(registry: RegistryService) -> None:
    """Serials are unique per CA only: two CAs may each have a device with the same serial."""
    cas = [make_ca("First"), make_ca("Second")]
    records = [await register(registry, ca) for ca in cas]
    devices = [
        await registry.register_device(record.sn, make_device(ca, serial=0x1234))
        for ca, record in zip(cas, records, strict=True)
    ]
    assert devices[0].device_sn == devices[1].device_sn
    (first, second), device_sn = records, devices[0].device_sn
    for named, other in ((second, first), (first, second)):
        await registry.inactivate_device(named.sn, device_sn)
        assert not (await registry.get_device(named.sn, device_sn)).active
        assert (await registry.get_device(other.sn, device_sn)).active
        await registry.activate_device(named.sn, device_sn)
    await registry.delete_device(first.sn, device_sn)
    assert (await registry.get_device(second.sn, device_sn)).active
    entry = registry.index.device(second.sn, device_sn)
    assert entry is not None and entry.active


async def test_delete_device_then_it_registers_again(registry: RegistryService) -> None:
    events: list[RegistryEvent] = []
    ca = make_ca()
    ca_record = await register(registry, ca)
    certificate = make_device(ca)
    record = await registry.register_device(ca_record.sn, certificate)
    await registry.inactivate_device(ca_record.sn, record.device_sn)
    registry.events.subscribe(events.append)

    await registry.delete_device(ca_record.sn, record.device_sn)

    assert events == [DeviceDeleted(ca_record.sn, record.device_sn)]
    assert registry.index.device(ca_record.sn, record.device_sn) is None
    assert registry.index.device_count == 0 and registry.index.inactive_device_count == 0
    again = await registry.register_device(ca_record.sn, certificate)
    assert again.active and again.device_sn == record.device_sn


async def test_list_devices_filters_and_paging(registry: RegistryService) -> None:
    first_ca, second_ca = make_ca("First"), make_ca("Second")
    first, second = await register(registry, first_ca), await register(registry, second_ca)
    records = [await registry.register_device(first.sn, make_device(first_ca, f"f{n}")) for n in range(7)]
    records += [await registry.register_device(second.sn, make_device(second_ca, f"s{n}")) for n in range(4)]
    records += [await registry.register_device(second.sn, make_device(second_ca, "twin"))]
    records += [await registry.register_device(first.sn, make_device(first_ca, "twin"))]
    inactive = {records[1].device_sn, records[8].device_sn}
    for record in records:
        if record.device_sn in inactive:
            await registry.inactivate_device(record.ca_sn, record.device_sn)
    expected = sorted(
        [await registry.get_device(r.ca_sn, r.device_sn) for r in records],
        key=lambda r: (r.ca_sn, r.device_sn),
    )

    pages = [await registry.list_devices(page_no, 5) for page_no in (1, 2, 3, 4)]
    assert [page.total for page in pages] == [13] * 4
    assert [len(page.items) for page in pages] == [5, 5, 3, 0]
    assert [item for page in pages for item in page.items] == expected

    by_ca = await registry.list_devices(1, 100, ca_sn=second.sn)
    assert by_ca.total == 5 and list(by_ca.items) == [r for r in expected if r.ca_sn == second.sn]
    assert (await registry.list_devices(2, 3, ca_sn=second.sn)).items == by_ca.items[3:]

    only_inactive = await registry.list_devices(1, 100, status="inactive")
    assert only_inactive.total == 2 and {r.device_sn for r in only_inactive.items} == inactive
    active_of_first = await registry.list_devices(1, 100, ca_sn=first.sn, status=Status.ACTIVE)
    assert active_of_first.total == 7 and all(r.active and r.ca_sn == first.sn for r in active_of_first.items)

    twins = await registry.list_devices(1, 100, name="twin")
    assert twins.total == 2 and [r.name for r in twins.items] == ["twin", "twin"]
    assert (await registry.list_devices(1, 100, name="twin", ca_sn=first.sn)).total == 1
    assert (await registry.list_devices(1, 100, name="nobody")).total == 0

    with pytest.raises(ParameterFieldCheckFailed):
        await registry.list_devices(1, 10, status="revoked")
    with pytest.raises(FindCaBySnError):
        await registry.list_devices(1, 10, ca_sn="00ab")


async def test_events_fire_after_commit_and_index_update(
    registry: RegistryService, store: RegistryStore
) -> None:
    """A subscriber sees the change in the store and in the index when its event arrives."""
    observed: list[tuple[RegistryEvent, bool, bool]] = []
    ca = make_ca()

    def check(event: RegistryEvent) -> None:
        if isinstance(event, DeviceAdded | DeviceStatusChanged | DeviceDeleted):
            stored = store.get_device(event.ca_sn, event.device_sn)
            indexed = registry.index.device(event.ca_sn, event.device_sn)
            if isinstance(event, DeviceDeleted):
                observed.append((event, stored is None, indexed is None))
            else:
                expected = event.active if isinstance(event, DeviceStatusChanged) else True
                observed.append(
                    (
                        event,
                        stored is not None and stored.active == expected,
                        indexed is not None and indexed.active == expected,
                    )
                )
        elif isinstance(event, CaDeleted):
            observed.append((event, store.get_ca(event.sn) is None, registry.index.ca(event.sn) is None))
        elif isinstance(event, SettingChanged):
            observed.append((event, store.get_setting(event.key) == "mutual", True))
        else:
            observed.append(
                (event, store.get_ca(event.sn) is not None, registry.index.ca(event.sn) is not None)
            )

    registry.events.subscribe(check)
    ca_record = await register(registry, ca)
    record = await registry.register_device(ca_record.sn, make_device(ca))
    await registry.inactivate_device(ca_record.sn, record.device_sn)
    await registry.delete_device(ca_record.sn, record.device_sn)
    await registry.set_setting("auth_mode", "mutual")
    await registry.inactivate_ca(ca_record.sn)
    await registry.delete_ca(ca_record.sn)

    assert len(observed) == 7
    assert all(in_store and in_index for _, in_store, in_index in observed), observed


async def test_index_stays_coherent_when_the_caller_is_cancelled(registry: RegistryService) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    record = await registry.register_device(ca_record.sn, make_device(ca))
    task = asyncio.create_task(registry.inactivate_device(ca_record.sn, record.device_sn))
    await asyncio.sleep(0)  # submitted to the worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await registry.get_device(ca_record.sn, record.device_sn)  # runs after the cancelled work
    assert not stored.active
    entry = registry.index.device(ca_record.sn, record.device_sn)
    assert entry is not None and not entry.active


async def test_index_after_restart(tmp_path: Path) -> None:
    store = open_registry("", tmp_path)
    registry = RegistryService(store, instance_id=INSTANCE_ID)
    await registry.open()
    first, second = make_ca("First"), make_ca("Second", "rsa")
    first_record, second_record = await register(registry, first), await register(registry, second)
    devices = [await registry.register_device(first_record.sn, make_device(first, f"a{n}")) for n in range(5)]
    devices += [
        await registry.register_device(second_record.sn, make_device(second, f"b{n}")) for n in range(3)
    ]
    await registry.inactivate_device(devices[2].ca_sn, devices[2].device_sn)
    await registry.delete_device(devices[3].ca_sn, devices[3].device_sn)
    await registry.inactivate_ca(second_record.sn)
    await registry.set_setting("auth_mode", "mutual")
    await registry.set_setting(
        "server_certificate", {"cert_file": "/x/server.pem", "key_file": "/x/server.key"}
    )
    before_devices = {(d.ca_sn, d.device_sn): registry.index.device(d.ca_sn, d.device_sn) for d in devices}
    before_cas = {
        ca.sn: (ca.active, ca.certificate, ca.subject_key_identifier) for ca in registry.index.cas()
    }
    counts = (registry.index.device_count, registry.index.inactive_device_count)
    await registry.close()
    store.close()

    store = open_registry("", tmp_path)
    reopened = RegistryService(store, instance_id=INSTANCE_ID)
    await reopened.open()
    try:
        assert {
            (d.ca_sn, d.device_sn): reopened.index.device(d.ca_sn, d.device_sn) for d in devices
        } == before_devices
        assert before_devices[(devices[3].ca_sn, devices[3].device_sn)] is None
        assert {
            ca.sn: (ca.active, ca.certificate, ca.subject_key_identifier) for ca in reopened.index.cas()
        } == before_cas
        assert (reopened.index.device_count, reopened.index.inactive_device_count) == counts == (7, 1)
        assert await reopened.get_setting("auth_mode") == "mutual"
        assert (await reopened.get_setting("server_certificate"))["key_file"] == "/x/server.key"
        issuer = reopened.index.issuer_of(make_device(second))
        assert issuer is not None and issuer.sn == second_record.sn and not issuer.active
    finally:
        await reopened.close()
        store.close()


async def test_settings(registry: RegistryService) -> None:
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    assert await registry.get_setting("auth_mode") is None
    await registry.set_setting("auth_mode", "one-way")
    await registry.set_setting("auth_mode", "mutual")
    value = {"paths": ["a", "b"], "n": 1}
    await registry.set_setting("nested", value)
    value["paths"].append("c")  # the stored value is a copy
    assert await registry.get_setting("auth_mode") == "mutual"
    assert await registry.get_setting("nested") == {"paths": ["a", "b"], "n": 1}
    assert events == [SettingChanged("auth_mode"), SettingChanged("auth_mode"), SettingChanged("nested")]
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.set_setting("bad", object())
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.set_setting("", 1)


async def test_a_setting_added_keeps_the_first_value(registry: RegistryService, store: RegistryStore) -> None:
    """add_setting stores a key that has no value, and leaves one that has: the first value wins,
    and only the write that stored it emits an event."""
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    assert await registry.add_setting("access_key/LTAI1", {"id": "LTAI1"})
    assert not await registry.add_setting("access_key/LTAI1", {"id": "other"})
    await registry.set_setting("auth_mode", "mutual")
    assert not await registry.add_setting("auth_mode", "one-way")
    assert events == [SettingChanged("access_key/LTAI1"), SettingChanged("auth_mode")]
    assert await registry.get_setting("access_key/LTAI1") == {"id": "LTAI1"}
    assert store.get_setting("access_key/LTAI1") == {"id": "LTAI1"}
    assert store.get_setting("auth_mode") == "mutual"
    assert registry.settings.starting_with("access_key/") == {"access_key/LTAI1": {"id": "LTAI1"}}
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.add_setting("bad", object())


async def test_counts(registry: RegistryService, store: RegistryStore) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    soon = pki.issue_device_certificate(
        ca.certificate, ca.key, "soon", pki.generate_key("ec").public_key(), valid_days=10
    )
    await registry.register_device(ca_record.sn, soon)
    later = await registry.register_device(ca_record.sn, make_device(ca, "later"))
    await registry.inactivate_device(ca_record.sn, later.device_sn)
    await register(registry, make_ca("Other"))
    await registry.inactivate_ca(ca_record.sn)

    counts = await registry.counts()

    assert (counts.cas_active, counts.cas_inactive, counts.cas) == (1, 1, 2)
    assert (counts.devices_active, counts.devices_inactive, counts.devices) == (1, 1, 2)
    assert (counts.cas_expiring, counts.devices_expiring) == (0, 1)


async def test_registrations_started_together_share_a_commit_and_reads_see_them(
    registry: RegistryService, store: RegistryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="certmq.registry")
    ca = make_ca()
    ca_record = await register(registry, ca)
    # The statements that write devices (reads commit too, on PostgreSQL: they are not counted).
    inserts: list[str] = []

    def count_inserts(connection: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.startswith("INSERT INTO device_certificate"):
            inserts.append(statement)

    event.listen(store.engine, "before_cursor_execute", count_inserts)
    certificates = [make_device(ca, f"burst-{n}") for n in range(12)]
    # Started without waiting, as the broker does for first-time devices it lets in.
    started = [registry.begin_registration(ca_record.sn, certificate) for certificate in certificates]
    assert not any(future.done() for future in started)
    # A read that starts meanwhile is not served before them: it sees every one.
    listed = await registry.get_device(ca_record.sn, pki.serial_hex(certificates[-1]))
    assert listed.name == "burst-11"
    more = [make_device(ca, f"late-{n}") for n in range(3)]
    started += [registry.begin_registration(ca_record.sn, certificate) for certificate in more]
    page = await registry.list_devices(1, 50, ca_sn=ca_record.sn)  # its total from the index
    assert (page.total, len(page.items)) == (15, 15)
    records = await asyncio.gather(*started)
    assert [record.name for record in records][:12] == [f"burst-{n}" for n in range(12)]
    assert len(inserts) == 2, "one statement, in one transaction, for each burst"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registered ")]
    assert lines[0].startswith("registered 12 devices: ") and lines[0].endswith("; and 2 more")
    assert "(burst-0)" in lines[0] and "(burst-10)" not in lines[0]
    assert device_rows(store) == 15


async def test_a_registration_waits_no_longer_than_its_delay(registry: RegistryService) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    registration = registry.begin_registration(ca_record.sn, make_device(ca, "alone"))
    record = await asyncio.wait_for(registration, registry.registration_delay + 5)
    assert registry.index.device(ca_record.sn, record.device_sn) is not None


async def test_a_clash_with_a_registration_under_way_is_known_at_once(registry: RegistryService) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    first = registry.begin_registration(ca_record.sn, make_device(ca, "first", serial=0x4242))
    with pytest.raises(SerialCollision):
        registry.begin_registration(ca_record.sn, make_device(ca, "second", serial=0x4242))
    assert (await first).name == "first"


async def test_closing_the_service_writes_the_registrations_still_waiting(
    registry: RegistryService, store: RegistryStore
) -> None:
    ca = make_ca()
    ca_record = await register(registry, ca)
    registration = registry.begin_registration(ca_record.sn, make_device(ca, "last-minute"))
    await registry.close()
    assert (await registration).name == "last-minute"
    assert device_rows(store) == 1


async def test_listings_by_status_page_in_order(registry: RegistryService, store: RegistryStore) -> None:
    """Active and inactive listings, with and without a CA, page through exactly the devices with
    that status in (CA, serial) order."""
    now = datetime.datetime.now(datetime.UTC)
    ca_sns = [(await register(registry, make_ca(f"Status CA {n}"))).sn for n in range(2)]
    devices = [device for ca_sn in ca_sns for device in synthetic_devices(ca_sn, 30)]
    assert store.import_devices(devices, now) == 60
    await registry.rebuild_index()
    inactive = {(device.ca_sn, device.device_sn) for device in devices[::4]}
    for ca_sn, device_sn in sorted(inactive):
        await registry.inactivate_device(ca_sn, device_sn)
    keys = sorted((device.ca_sn, device.device_sn) for device in devices)

    for status in ("active", "inactive"):
        for ca_sn in (None, *ca_sns):
            expected = [
                key for key in keys if (key in inactive) == (status == "inactive") and ca_sn in (None, key[0])
            ]
            listed = []
            for page_no in range(1, len(expected) // 7 + 2):
                page = await registry.list_devices(page_no, 7, ca_sn=ca_sn, status=status)
                assert page.total == len(expected)
                assert all(item.status == status for item in page.items)
                listed += [(item.ca_sn, item.device_sn) for item in page.items]
            assert listed == expected


def test_status_listings_read_an_index_without_sorting(tmp_path: Path) -> None:
    """SQLite's plans for the page keys of each status listing, with or without a CA: the
    status index alone, in listing order (a deep page skips index entries, not table rows)."""
    store = open_registry("", tmp_path)
    try:
        with store.engine.connect() as connection:
            index = "COVERING INDEX ix_device_certificate_status_ca_sn_device_sn"
            for status in ("active", "inactive"):
                for where in (f"status = '{status}'", f"ca_sn = 'ab' AND status = '{status}'"):
                    plan = connection.exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT ca_sn, device_sn FROM device_certificate "
                        f"WHERE {where} ORDER BY ca_sn, device_sn LIMIT 100 OFFSET 1000"
                    ).all()
                    details = " ".join(row[-1] for row in plan)
                    assert index in details and "TEMP B-TREE" not in details, (where, details)
    finally:
        store.close()
