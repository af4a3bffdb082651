"""The decision log: cheap recording, batched background writes, search, retention."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from certmq.registry import DecisionEntry, DecisionQuery, ParameterFieldCheckFailed, RegistryService
from certmq.registry.log_store import LOG_ROWS_PER_STATEMENT
from certmq.registry.pending import TEXT_LIMIT
from certmq.registry.store import RegistryStore

from .registry_fixtures import INSTANCE_ID, Clock, clock, postgresql_server, registry, store

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures


def decision(n: int, **fields: object) -> DecisionEntry:
    values: dict[str, object] = {
        "listener": "tls",
        "peer": f"10.0.0.{n % 250}:5{n:04d}",
        "client_id": f"GID_test@@@device-{n}",
        "ca_sn": "0a0b",
        "device_sn": f"{n:04x}",
        "cn": f"device-{n}",
        "step": 6,
        "result": "allow",
        "reason": "new-device",
        "detail": "registered on its first connection",
    }
    values.update(fields)
    return DecisionEntry(**values)  # type: ignore[arg-type]


async def test_flush_and_search(registry: RegistryService, clock: Clock) -> None:
    base = clock.now
    for n in range(10):
        registry.record_decision(decision(n, time=base + datetime.timedelta(seconds=n)))
    assert registry.decision_log.pending == 10
    await registry.flush_decisions()
    assert registry.decision_log.pending == 0

    found = await registry.search_decisions()
    assert [record.device_sn for record in found] == [f"{n:04x}" for n in reversed(range(10))]  # newest first
    newest = found[0]
    assert newest.time == base + datetime.timedelta(seconds=9)
    assert newest.time.tzinfo is datetime.UTC
    assert (newest.listener, newest.client_id, newest.cn, newest.step, newest.result, newest.reason) == (
        "tls",
        "GID_test@@@device-9",
        "device-9",
        6,
        "allow",
        "new-device",
    )
    assert newest.detail == "registered on its first connection"


async def test_a_flush_larger_than_one_statement(
    registry: RegistryService, store: RegistryStore, clock: Clock
) -> None:
    """More decisions than one INSERT statement carries: every one is written, in order, with
    its own values."""
    count = 2 * LOG_ROWS_PER_STATEMENT + 3
    base = clock.now
    for n in range(count):
        registry.record_decision(decision(n, time=base + datetime.timedelta(milliseconds=n)))
    await registry.flush_decisions()
    assert store.decisions.count() == count
    found = await registry.search_decisions(DecisionQuery(limit=1000))
    found += await registry.search_decisions(DecisionQuery(limit=1000, offset=1000))
    assert [record.device_sn for record in found] == [f"{n:04x}" for n in reversed(range(count))]
    assert [record.time for record in found[:2]] == [
        base + datetime.timedelta(milliseconds=count - 1),
        base + datetime.timedelta(milliseconds=count - 2),
    ]


async def test_search_filters(registry: RegistryService, clock: Clock) -> None:
    base = clock.now - datetime.timedelta(hours=1)
    registry.record_decision(decision(1, time=base, result="deny", reason="device-inactive", step=2))
    registry.record_decision(decision(2, time=base + datetime.timedelta(minutes=1)))
    registry.record_decision(
        decision(
            3, time=base + datetime.timedelta(minutes=2), result="deny", reason="ca-not-registered", step=3
        )
    )
    registry.record_decision(
        decision(
            4,
            time=base + datetime.timedelta(minutes=3),
            step=0,
            reason="bad-credentials",
            result="deny",
            ca_sn="",
        )
    )
    await registry.flush_decisions()

    async def device_sns(**filters: object) -> list[str]:
        return [record.device_sn for record in await registry.search_decisions(DecisionQuery(**filters))]  # type: ignore[arg-type]

    assert await device_sns(result="deny") == ["0004", "0003", "0001"]
    assert await device_sns(result="allow") == ["0002"]
    assert await device_sns(reason="device-inactive") == ["0001"]
    assert await device_sns(device_sn="0003") == ["0003"]
    assert await device_sns(client_id="GID_test@@@device-2") == ["0002"]
    assert await device_sns(ca_sn="0a0b") == ["0003", "0002", "0001"]
    assert await device_sns(since=base + datetime.timedelta(minutes=1)) == ["0004", "0003", "0002"]
    assert await device_sns(until=base + datetime.timedelta(minutes=1)) == ["0001"]
    assert await device_sns(result="deny", since=base + datetime.timedelta(seconds=30)) == ["0004", "0003"]
    assert await device_sns(limit=2) == ["0004", "0003"]
    assert await device_sns(limit=2, offset=2) == ["0002", "0001"]


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"result": "maybe"},
        {"since": datetime.datetime(2024, 1, 1)},
    ],
)
async def test_search_is_validated(registry: RegistryService, filters: dict[str, object]) -> None:
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.search_decisions(DecisionQuery(**filters))  # type: ignore[arg-type]


async def test_background_writer_flushes_on_its_own(store: RegistryStore) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, decision_flush_interval=0.05)
    await registry.open()
    try:
        registry.record_decision(decision(1))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if await registry.search_decisions():
                break
        assert [record.device_sn for record in await registry.search_decisions()] == ["0001"]
    finally:
        await registry.close()


async def test_a_full_batch_is_written_before_the_interval(store: RegistryStore) -> None:
    registry = RegistryService(
        store, instance_id=INSTANCE_ID, decision_flush_interval=3600, decision_flush_rows=50
    )
    await registry.open()
    try:
        for n in range(50):
            registry.record_decision(decision(n))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if (
                registry.decision_log.pending == 0
                and len(await registry.search_decisions(DecisionQuery(limit=100))) == 50
            ):
                break
        assert len(await registry.search_decisions(DecisionQuery(limit=100))) == 50
    finally:
        await registry.close()


async def test_close_writes_pending_decisions(store: RegistryStore) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, decision_flush_interval=3600)
    await registry.open()
    for n in range(7):
        registry.record_decision(decision(n))
    await registry.close()
    assert store.decisions.count() == 7


async def test_long_values_are_cut_to_their_columns(registry: RegistryService) -> None:
    registry.record_decision(
        decision(1, peer="p" * 500, reason="r" * 500, listener="l" * 100, detail="d" * 5000)
    )
    await registry.flush_decisions()
    (record,) = await registry.search_decisions()
    assert (len(record.peer), len(record.reason), len(record.listener), len(record.detail)) == (
        128,
        64,
        32,
        TEXT_LIMIT,
    )
    assert record.detail.endswith("d…[cut from 5000 characters]")


async def test_retention_by_rows(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, decision_max_rows=10, clock=clock)
    await registry.open()
    try:
        for n in range(25):
            registry.record_decision(decision(n, time=clock.now + datetime.timedelta(milliseconds=n)))
        await registry.flush_decisions()
        assert await registry.enforce_retention() == 15
        kept = await registry.search_decisions(DecisionQuery(limit=100))
        assert [record.device_sn for record in kept] == [f"{n:04x}" for n in reversed(range(15, 25))]
    finally:
        await registry.close()


async def test_retention_by_age(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, clock=clock)
    await registry.open()
    try:
        registry.record_decision(decision(1, time=clock.now - datetime.timedelta(days=31)))
        registry.record_decision(decision(2, time=clock.now - datetime.timedelta(days=29)))
        await registry.flush_decisions()
        assert await registry.enforce_retention() == 1
        assert [record.device_sn for record in await registry.search_decisions()] == ["0002"]
        clock.advance(days=2)
        assert await registry.enforce_retention() == 1
        assert await registry.search_decisions() == []
    finally:
        await registry.close()


async def test_retention_runs_periodically(store: RegistryStore) -> None:
    registry = RegistryService(
        store,
        instance_id=INSTANCE_ID,
        decision_max_rows=5,
        decision_flush_interval=0.02,
        retention_interval=0.05,
    )
    await registry.open()
    try:
        for n in range(20):
            registry.record_decision(decision(n))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if registry.decision_log.pending == 0 and store.decisions.count() == 5:
                break
        assert store.decisions.count() == 5
    finally:
        await registry.close()


async def test_buffer_is_bounded_when_the_database_cannot_keep_up(store: RegistryStore) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, pending_max_rows=100)
    await registry.open()
    try:
        for n in range(150):
            registry.record_decision(decision(n))
        assert registry.decision_log.pending == 100
        assert registry.decision_log.dropped == 50
        await registry.flush_decisions()
        kept = await registry.search_decisions(DecisionQuery(limit=1000))
        assert len(kept) == 100 and kept[-1].device_sn == f"{50:04x}"  # the oldest went
    finally:
        await registry.close()


async def test_a_burst_of_decisions_is_queued_and_written_whole(registry: RegistryService) -> None:
    # What recording costs the event loop is measured by bench/, not asserted here.
    sample = decision(1)
    for _ in range(10_000):
        registry.record_decision(sample)
    await registry.flush_decisions()
    assert store_count(registry) == 10_000


def store_count(registry: RegistryService) -> int:
    return registry.store.decisions.count()


async def test_odd_decisions_do_not_spoil_a_batch(registry: RegistryService) -> None:
    registry.record_decision(decision(1, time=datetime.datetime(2030, 1, 1, 12, 0)))  # naive: taken as UTC
    registry.record_decision(decision(2, cn=None, client_id=None, step="x"))
    registry.record_decision(decision(3, step=99999))
    await registry.flush_decisions()
    records = {record.device_sn: record for record in await registry.search_decisions()}
    assert records["0001"].time == datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
    assert (records["0002"].cn, records["0002"].client_id, records["0002"].step) == ("", "", 0)
    assert records["0003"].step == 32767


# --- folding and retention of the strangers' refusals (docs/registry.md, "Retention and folding") ---


def stranger(n: int, moment: datetime.datetime, reason: str = "bad-credentials") -> DecisionEntry:
    return DecisionEntry(
        listener="tcp",
        peer=f"203.0.113.7:{1024 + n}",
        client_id=f"guess-{n}",
        step=0,
        result="deny",
        reason=reason,
        detail="unknown AccessKeyId",
        identity_known=False,
        time=moment,
    )


async def test_a_strangers_refusals_are_folded_before_they_are_written(
    registry: RegistryService, store: RegistryStore, clock: Clock
) -> None:
    base = clock.now
    for n in range(1000):
        registry.record_decision(stranger(n, base + datetime.timedelta(milliseconds=n)))
        if n % 250 == 0:  # known identities in between, refused and allowed
            registry.record_decision(decision(n, time=base + datetime.timedelta(milliseconds=n)))
            registry.record_decision(
                decision(n + 1, result="deny", reason="device-inactive", step=2,
                         time=base + datetime.timedelta(milliseconds=n))
            )  # fmt: skip
    await registry.flush_decisions()
    assert store.decisions.count() == 8 + 1  # the known ones, and the stranger's first refusal
    assert registry.refusals_folded == {"bad-credentials": 999}

    clock.advance(seconds=61)  # the window closes
    await registry.flush_decisions()
    rows = await registry.search_decisions(DecisionQuery(reason="bad-credentials"))
    assert [(row.peer, row.count, row.identity_known) for row in rows] == [
        ("203.0.113.7", 999, False),
        ("203.0.113.7:1024", 1, False),
    ]
    assert (rows[0].first_seen, rows[0].last_seen) == (
        base + datetime.timedelta(milliseconds=1),
        base + datetime.timedelta(milliseconds=999),
    )
    assert (rows[1].first_seen, rows[1].last_seen) == (base, base)
    known = await registry.search_decisions(DecisionQuery(reason="device-inactive"))
    assert [(row.count, row.identity_known) for row in known] == [(1, True)] * 4


async def test_close_writes_the_open_windows(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, clock=clock, decision_flush_interval=3600)
    await registry.open()
    for n in range(50):
        registry.record_decision(stranger(n, clock.now))
    await registry.close()
    assert store.decisions.count() == 2
    assert sum(row.count for row in store.decisions.search(DecisionQuery())) == 50


async def test_a_fold_window_of_zero_writes_every_refusal(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, clock=clock, fold_window=datetime.timedelta(0))
    await registry.open()
    try:
        for n in range(20):
            registry.record_decision(stranger(n, clock.now))
        await registry.flush_decisions()
        assert store.decisions.count() == 20
    finally:
        await registry.close()


async def test_retention_by_size_deletes_the_strangers_rows_first(store: RegistryStore, clock: Clock) -> None:
    """The oldest rows are the known identities'; a newer flood of strangers fills the log: the
    size limit is met by deleting the strangers' rows, the known ones stay until their age limit."""
    registry = RegistryService(
        store,
        instance_id=INSTANCE_ID,
        decision_max_rows=10,
        fold_window=datetime.timedelta(0),  # one row per refusal: the worst case
        clock=clock,
    )
    await registry.open()
    try:
        base = clock.now - datetime.timedelta(hours=1)
        for n in range(8):
            registry.record_decision(decision(n, time=base + datetime.timedelta(seconds=n)))
        for n in range(30):
            registry.record_decision(stranger(n, base + datetime.timedelta(minutes=1, seconds=n)))
        await registry.flush_decisions()
        assert await registry.enforce_retention() == 28
        kept = await registry.search_decisions(DecisionQuery(limit=100))
        assert [row.identity_known for row in kept] == [False, False] + [True] * 8
        assert [row.client_id for row in kept[:2]] == ["guess-29", "guess-28"]

        # Known identities alone beyond the limit: then their oldest go.
        for n in range(8, 20):
            registry.record_decision(decision(n, time=base + datetime.timedelta(minutes=2, seconds=n)))
        await registry.flush_decisions()
        assert await registry.enforce_retention() == 12
        kept = await registry.search_decisions(DecisionQuery(limit=100))
        assert [row.device_sn for row in kept] == [f"{n:04x}" for n in reversed(range(10, 20))]
    finally:
        await registry.close()


async def test_retention_by_age_takes_a_folded_row_by_its_last_refusal(
    registry: RegistryService, clock: Clock
) -> None:
    limit = clock.now - datetime.timedelta(days=30)
    registry.record_decision(stranger(0, limit - datetime.timedelta(seconds=30)))  # written at once
    registry.record_decision(stranger(1, limit - datetime.timedelta(seconds=20)))  # folded...
    registry.record_decision(stranger(2, limit + datetime.timedelta(seconds=20)))  # ...up to here
    registry.record_decision(decision(1, time=limit - datetime.timedelta(seconds=1)))
    await registry.flush_decisions()  # the window is long closed by the clock
    assert await registry.enforce_retention() == 2
    (row,) = await registry.search_decisions()
    assert (row.count, row.first_seen, row.last_seen) == (
        2,
        limit - datetime.timedelta(seconds=20),
        limit + datetime.timedelta(seconds=20),
    )


async def test_the_upgrade_keeps_the_rows_written_before_it(store: RegistryStore) -> None:
    """Rows of the schema before folding read back as single decisions of known identities."""
    from alembic import command

    from certmq.registry.database import alembic_config

    config = alembic_config()
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    moment = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO decision (time, listener, peer, client_id, ca_sn, device_sn, cn, step, result,"
            " reason, detail) VALUES ("
            + ("'2030-01-01 12:00:00.000000'" if store.dialect == "sqlite" else "'2030-01-01 12:00:00+00'")
            + ", 'tls', '10.0.0.1:1', 'c', 'aa', '01', 'd', 2, 'deny', 'device-inactive', 'old')"
        )
    store.migrate()
    (row,) = store.decisions.search(DecisionQuery())
    assert (row.reason, row.count, row.first_seen, row.last_seen, row.identity_known) == (
        "device-inactive",
        1,
        moment,
        moment,
        True,
    )
