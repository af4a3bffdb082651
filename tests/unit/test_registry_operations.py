"""The operations log of the RPC API in the registry: batched writes, search, odd values made to
fit, retention by rows and age, and the bound on page numbers that both APIs rely on."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from certmq.registry import Operation, ParameterFieldCheckFailed, RegistryService
from certmq.registry.store import RegistryStore

from .registry_fixtures import INSTANCE_ID, Clock, clock, postgresql_server, registry, store

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures


def operation(n: int, **fields: object) -> Operation:
    values: dict[str, object] = {
        "request_id": f"REQUEST-{n:04d}",
        "action": "InactivateDeviceCertificate" if n % 2 else "ListCaCertificate",
        "status": 200,
        "code": "Success",
        "access_key_id": "LTAIkey1" if n % 3 else "LTAIkey2",
        "authenticated": True,
        "signature_method": "ACS3-HMAC-SHA256",
        "peer": f"10.0.0.{n % 250}:4{n:04d}",
        "parameters": {"MqttInstanceId": INSTANCE_ID, "CaSn": "0a0b", "DeviceSn": f"{n:04x}"},
        "duration_ms": n,
    }
    values.update(fields)
    return Operation(**values)  # type: ignore[arg-type]


async def test_recorded_calls_are_written_in_a_batch_and_found_newest_first(
    registry: RegistryService, clock: Clock
) -> None:
    base = clock.now
    for n in range(6):
        registry.record_operation(operation(n, time=base + datetime.timedelta(seconds=n)))
    assert await registry.search_operations() == []  # queued, not written yet
    await registry.flush_operations()
    found = await registry.search_operations()
    assert [record.request_id for record in found] == [f"REQUEST-{n:04d}" for n in reversed(range(6))]
    newest = found[0]
    assert newest.time == base + datetime.timedelta(seconds=5) and newest.time.tzinfo is datetime.UTC
    assert (newest.action, newest.status, newest.code, newest.access_key_id) == (
        "InactivateDeviceCertificate",
        200,
        "Success",
        "LTAIkey1",
    )
    assert newest.authenticated and newest.signature_method == "ACS3-HMAC-SHA256"
    assert newest.parameters == {"MqttInstanceId": INSTANCE_ID, "CaSn": "0a0b", "DeviceSn": "0005"}


async def test_search_filters(registry: RegistryService, clock: Clock) -> None:
    base = clock.now
    for n in range(12):
        registry.record_operation(operation(n, time=base + datetime.timedelta(seconds=n)))
    registry.record_operation(
        operation(
            99, code="SignatureDoesNotMatch", status=403, authenticated=False, access_key_id="LTAIguess"
        )
    )
    await registry.flush_operations()
    by_key = await registry.search_operations(access_key_id="LTAIkey2")
    assert {record.request_id for record in by_key} == {
        "REQUEST-0000",
        "REQUEST-0003",
        "REQUEST-0006",
        "REQUEST-0009",
    }
    by_action = await registry.search_operations(action="ListCaCertificate", limit=2, offset=1)
    assert [record.request_id for record in by_action] == ["REQUEST-0008", "REQUEST-0006"]
    (refused,) = await registry.search_operations(code="SignatureDoesNotMatch")
    assert not refused.authenticated and refused.status == 403 and refused.access_key_id == "LTAIguess"
    window = await registry.search_operations(
        since=base + datetime.timedelta(seconds=3), until=base + datetime.timedelta(seconds=5)
    )
    assert [record.request_id for record in window] == ["REQUEST-0004", "REQUEST-0003"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"since": datetime.datetime(2025, 1, 1)}):
        with pytest.raises(ParameterFieldCheckFailed):
            await registry.search_operations(**bad)  # type: ignore[arg-type]


async def test_odd_values_are_made_to_fit(registry: RegistryService) -> None:
    registry.record_operation(
        operation(
            1,
            request_id="R" * 500,
            action="A" * 500,
            access_key_id="K" * 500,
            peer="P" * 500,
            code="C" * 500,
            status=10**9,
            duration_ms=-5,
            message="M" * 10_000,
            parameters={"Sn": "ab" * 1000, "Ünïcode": "välue"},
            time=datetime.datetime(2025, 1, 1, 12, 0),  # naive: taken as UTC
        )
    )
    await registry.flush_operations()
    (record,) = await registry.search_operations()
    assert (len(record.request_id), len(record.action), len(record.access_key_id)) == (64, 64, 128)
    assert (len(record.peer), len(record.code), record.status, record.duration_ms) == (128, 64, 32767, 0)
    assert len(record.message) == 2000 and len(record.parameters["Sn"]) == 256
    assert record.parameters["Ünïcode"] == "välue"
    assert record.time == datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)


async def test_retention_by_rows_and_age(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(
        store,
        instance_id=INSTANCE_ID,
        operation_max_rows=10,
        operation_max_age=datetime.timedelta(days=365),
        clock=clock,
    )
    await registry.open()
    try:
        base = clock.now
        registry.record_operation(operation(0, time=base - datetime.timedelta(days=400)))
        for n in range(1, 26):
            registry.record_operation(operation(n, time=base + datetime.timedelta(milliseconds=n)))
        await registry.flush_operations()
        await registry.enforce_retention()
        kept = await registry.search_operations(limit=100)
        assert [record.request_id for record in kept] == [f"REQUEST-{n:04d}" for n in reversed(range(16, 26))]
        assert store.count_operations() == 10
    finally:
        await registry.close()


async def test_the_background_writer_writes_them_and_close_writes_the_rest(store: RegistryStore) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, decision_flush_interval=0.02)
    await registry.open()
    registry.record_operation(operation(1))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if store.count_operations() == 1:
            break
    assert store.count_operations() == 1
    registry.record_operation(operation(2))
    await registry.close()
    assert store.count_operations() == 2


async def test_page_numbers_are_bounded(registry: RegistryService) -> None:
    for page_no in (0, -1, 1_000_000_001, 2**63, True):
        with pytest.raises(ParameterFieldCheckFailed, match="PageNo"):
            await registry.list_cas(page_no, 10)  # type: ignore[arg-type]
        with pytest.raises(ParameterFieldCheckFailed, match="PageNo"):
            await registry.list_devices(page_no, 10)  # type: ignore[arg-type]
    assert (await registry.list_devices(1_000_000_000, 100)).items == ()
