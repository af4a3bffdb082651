"""The operations log of the RPC API in the registry: batched writes, search, odd values made to
fit, retention by rows and age, and the bound on page numbers that both APIs rely on."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from certmq.registry import OperationEntry, OperationQuery, ParameterFieldCheckFailed, RegistryService
from certmq.registry.pending import PARAMETER_VALUE_LIMIT, TEXT_LIMIT
from certmq.registry.store import RegistryStore

from .registry_fixtures import INSTANCE_ID, Clock, clock, postgresql_server, registry, store

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures


def operation(n: int, **fields: object) -> OperationEntry:
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
    return OperationEntry(**values)  # type: ignore[arg-type]


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
    by_key = await registry.search_operations(OperationQuery(access_key_id="LTAIkey2"))
    assert {record.request_id for record in by_key} == {
        "REQUEST-0000",
        "REQUEST-0003",
        "REQUEST-0006",
        "REQUEST-0009",
    }
    by_action = await registry.search_operations(
        OperationQuery(action="ListCaCertificate", limit=2, offset=1)
    )
    assert [record.request_id for record in by_action] == ["REQUEST-0008", "REQUEST-0006"]
    (refused,) = await registry.search_operations(OperationQuery(code="SignatureDoesNotMatch"))
    assert not refused.authenticated and refused.status == 403 and refused.access_key_id == "LTAIguess"
    window = await registry.search_operations(
        OperationQuery(since=base + datetime.timedelta(seconds=3), until=base + datetime.timedelta(seconds=5))
    )
    assert [record.request_id for record in window] == ["REQUEST-0004", "REQUEST-0003"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"since": datetime.datetime(2025, 1, 1)}):
        with pytest.raises(ParameterFieldCheckFailed):
            await registry.search_operations(OperationQuery(**bad))


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
    assert len(record.message) == TEXT_LIMIT and record.message.endswith("M…[cut from 10000 characters]")
    assert len(record.parameters["Sn"]) == PARAMETER_VALUE_LIMIT
    assert record.parameters["Sn"].endswith("…[cut from 2000 characters]")
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
        kept = await registry.search_operations(OperationQuery(limit=100))
        assert [record.request_id for record in kept] == [f"REQUEST-{n:04d}" for n in reversed(range(16, 26))]
        assert store.operations.count() == 10
    finally:
        await registry.close()


async def test_the_background_writer_writes_them_and_close_writes_the_rest(store: RegistryStore) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, decision_flush_interval=0.02)
    await registry.open()
    registry.record_operation(operation(1))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if store.operations.count() == 1:
            break
    assert store.operations.count() == 1
    registry.record_operation(operation(2))
    await registry.close()
    assert store.operations.count() == 2


async def test_page_numbers_are_bounded(registry: RegistryService) -> None:
    for page_no in (0, -1, 1_000_000_001, 2**63, True):
        with pytest.raises(ParameterFieldCheckFailed, match="PageNo"):
            await registry.list_cas(page_no, 10)  # type: ignore[arg-type]
        with pytest.raises(ParameterFieldCheckFailed, match="PageNo"):
            await registry.list_devices(page_no, 10)  # type: ignore[arg-type]
    assert (await registry.list_devices(1_000_000_000, 100)).items == ()


# --- folding and retention of calls that were not authenticated (docs/registry.md) --------------


def refused_call(n: int, moment: datetime.datetime, code: str = "SignatureDoesNotMatch") -> OperationEntry:
    return operation(
        n,
        authenticated=False,
        access_key_id=f"LTAI-guess-{n}",
        status=403,
        code=code,
        action="DeleteCaCertificate",
        peer=f"203.0.113.7:{1024 + n}",
        time=moment,
    )


async def test_calls_that_were_not_authenticated_are_folded_before_they_are_written(
    registry: RegistryService, store: RegistryStore, clock: Clock
) -> None:
    base = clock.now
    for n in range(1000):
        registry.record_operation(refused_call(n, base + datetime.timedelta(milliseconds=n)))
        if n % 250 == 0:  # authenticated calls in between, refused and allowed
            moment = base + datetime.timedelta(milliseconds=n)
            registry.record_operation(operation(n, time=moment))
            registry.record_operation(operation(n + 1, code="FindCaBySnError", status=404, time=moment))
    await registry.flush_operations()
    assert store.operations.count() == 8 + 1  # the authenticated ones, and the stranger's first call
    assert registry.calls_folded == {"SignatureDoesNotMatch": 999}

    clock.advance(seconds=61)  # the window closes
    await registry.flush_operations()
    rows = await registry.search_operations(OperationQuery(code="SignatureDoesNotMatch"))
    assert [(row.peer, row.count, row.authenticated, row.access_key_id) for row in rows] == [
        ("203.0.113.7", 999, False, "LTAI-guess-999"),
        ("203.0.113.7:1024", 1, False, "LTAI-guess-0"),
    ]
    assert (rows[0].first_seen, rows[0].last_seen) == (
        base + datetime.timedelta(milliseconds=1),
        base + datetime.timedelta(milliseconds=999),
    )
    assert (rows[1].first_seen, rows[1].last_seen) == (base, base)
    authenticated = [row for row in await registry.search_operations() if row.authenticated]
    assert [(row.count, row.first_seen) for row in authenticated] == [(1, row.time) for row in authenticated]
    assert len(authenticated) == 8


async def test_close_writes_the_open_windows_of_calls(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, clock=clock, decision_flush_interval=3600)
    await registry.open()
    for n in range(50):
        registry.record_operation(refused_call(n, clock.now))
        registry.record_operation(refused_call(n, clock.now, code="Throttling.User"))
    await registry.close()
    assert store.operations.count() == 4
    assert sum(row.count for row in store.operations.search(OperationQuery())) == 100


async def test_retention_by_size_deletes_the_rows_of_calls_not_authenticated_first(
    store: RegistryStore, clock: Clock
) -> None:
    """The oldest rows are authenticated calls; a newer flood of refused calls fills the log: the
    size limit is met by deleting the refused calls' rows, the authenticated ones stay until
    their age limit."""
    registry = RegistryService(
        store,
        instance_id=INSTANCE_ID,
        operation_max_rows=10,
        fold_window=datetime.timedelta(0),  # one row per call: the worst case
        clock=clock,
    )
    await registry.open()
    try:
        base = clock.now - datetime.timedelta(hours=1)
        for n in range(8):
            registry.record_operation(operation(n, time=base + datetime.timedelta(seconds=n)))
        for n in range(30):
            registry.record_operation(refused_call(n, base + datetime.timedelta(minutes=1, seconds=n)))
        await registry.flush_operations()
        await registry.enforce_retention()
        kept = await registry.search_operations(OperationQuery(limit=100))
        assert [row.authenticated for row in kept] == [False, False] + [True] * 8
        assert [row.access_key_id for row in kept[:2]] == ["LTAI-guess-29", "LTAI-guess-28"]

        # Authenticated calls alone beyond the limit: then their oldest go.
        for n in range(8, 20):
            registry.record_operation(operation(n, time=base + datetime.timedelta(minutes=2, seconds=n)))
        await registry.flush_operations()
        await registry.enforce_retention()
        kept = await registry.search_operations(OperationQuery(limit=100))
        assert [row.request_id for row in kept] == [f"REQUEST-{n:04d}" for n in reversed(range(10, 20))]
        assert store.operations.count() == 10
    finally:
        await registry.close()


async def test_the_upgrade_keeps_the_calls_logged_before_it(store: RegistryStore) -> None:
    """Rows of the schema before folding read back as single calls."""
    from alembic import command

    from certmq.registry.database import alembic_config

    config = alembic_config()
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    moment = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO api_operation (time, request_id, peer, access_key_id, authenticated,"
            " signature_method, action, parameters, status, code, message, duration_ms) VALUES ("
            + ("'2030-01-01 12:00:00.000000'" if store.dialect == "sqlite" else "'2030-01-01 12:00:00+00'")
            + ", 'R-OLD', '10.0.0.1:1', 'LTAIkey1', "
            + ("1" if store.dialect == "sqlite" else "true")
            + ", 'HMAC-SHA1', 'ListCaCertificate', '{}', 200, 'Success', '', 3)"
        )
    store.migrate()
    (row,) = store.operations.search(OperationQuery())
    assert (row.request_id, row.count, row.first_seen, row.last_seen, row.authenticated) == (
        "R-OLD",
        1,
        moment,
        moment,
        True,
    )
