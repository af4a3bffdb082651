"""What one row of the audit logs holds, and how much waits in memory to be written
(certmq.registry.pending): long texts are cut with a visible marker, a call keeps a few
parameters, and the queues stay within their bounds whatever clients send."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from certmq.registry import DecisionEntry, OperationEntry, RegistryService
from certmq.registry.pending import (
    MAX_PARAMETERS,
    MORE_PARAMETERS,
    PARAMETER_NAME_LIMIT,
    PARAMETER_VALUE_LIMIT,
    TEXT_LIMIT,
    PendingRows,
    bounded_decision,
    bounded_operation,
    cut_text,
    measured_decision,
)
from certmq.registry.store import RegistryStore

from .registry_fixtures import INSTANCE_ID


def test_a_long_text_is_cut_to_the_limit_with_a_marker_that_says_how_long_it_was() -> None:
    cut = cut_text("x" * 61_440)
    assert len(cut) == TEXT_LIMIT
    assert cut == "x" * (TEXT_LIMIT - 28) + "…[cut from 61440 characters]"
    assert cut_text("short") == "short"
    assert cut_text("y" * TEXT_LIMIT) == "y" * TEXT_LIMIT  # at the limit: whole
    assert cut_text("z" * 100, limit=10) == "…[cut from"  # a limit below the marker's length
    assert cut_text(None) is None  # type: ignore[arg-type]


def test_a_decision_with_a_client_id_of_60_kb_keeps_its_beginning_and_says_it_was_cut() -> None:
    decision = DecisionEntry(client_id="c" * 61_440, detail="d" * 3000, cn="n" * 2000, peer="10.0.0.1:1")
    bounded = bounded_decision(decision)
    assert bounded.client_id.startswith("c" * 900) and bounded.client_id.endswith(
        "…[cut from 61440 characters]"
    )
    assert (len(bounded.client_id), len(bounded.detail), len(bounded.cn)) == (TEXT_LIMIT,) * 3
    assert bounded.peer == "10.0.0.1:1" and bounded.time == decision.time
    assert bounded_decision(bounded) is bounded  # bounding again changes nothing
    usual = DecisionEntry(client_id="GID_sensors@@@device-0001", detail="new device")
    assert bounded_decision(usual) is usual  # nothing to cut: the same object


def test_a_call_keeps_a_few_parameters_each_of_a_bounded_length() -> None:
    operation = OperationEntry(
        request_id="R",
        action="",
        status=400,
        code="ParameterFieldCheckFailed",
        parameters={f"{n:02d}{'N' * 200}": "v" * 16_384 for n in range(64)},
        message="m" * 5000,
    )
    bounded = bounded_operation(operation)
    assert len(bounded.parameters) == MAX_PARAMETERS + 1
    assert bounded.parameters[MORE_PARAMETERS] == f"{64 - MAX_PARAMETERS} more parameters not kept"
    assert all(len(name) <= PARAMETER_NAME_LIMIT for name in bounded.parameters)
    assert all(len(value) <= PARAMETER_VALUE_LIMIT for value in bounded.parameters.values())
    assert len(bounded.message) == TEXT_LIMIT
    assert bounded_operation(bounded) is bounded  # bounding again changes nothing
    alike = bounded_operation(operation_with({f"{'N' * 200}{n:02d}": "v" for n in range(3)}))
    assert alike.parameters == {
        cut_text("N" * 202, PARAMETER_NAME_LIMIT): "v",
        MORE_PARAMETERS: "2 more parameters not kept",
    }
    usual = OperationEntry(request_id="R", action="ListCaCertificate", status=200, code="Success",
                      parameters={"PageNo": "1"})  # fmt: skip
    assert bounded_operation(usual) is usual


def operation_with(parameters: dict[str, str]) -> OperationEntry:
    return OperationEntry(
        request_id="R", action="", status=403, code="SignatureDoesNotMatch", parameters=parameters
    )


def test_the_queue_drops_its_oldest_rows_beyond_its_bound_in_bytes() -> None:
    pending = PendingRows[DecisionEntry](
        "decision log", "decisions", measured_decision, max_bytes=1024 * 1024
    )
    for n in range(2000):
        pending.append(DecisionEntry(client_id=f"{n:05d}" + "c" * 60_000))
    assert pending.bytes <= 1024 * 1024
    kept = pending.take()
    assert len(kept) + pending.dropped == 2000 and 100 < len(kept) < 1000
    assert kept[-1].client_id.startswith("01999") and kept[0].client_id.startswith(f"{pending.dropped:05d}")
    assert all(len(decision.client_id) == TEXT_LIMIT for decision in kept)
    assert pending.bytes == 0 and len(pending) == 0


# The queue's bound in the memory tests, and the rows sent into it: four times what it holds or
# more. What is held, as a share of the bound, is the same at any scale (measured at 16 MiB and
# 20,000 rows too); at this one tracemalloc takes seconds rather than half a minute.
MEMORY_BOUND = 4 * 1024 * 1024
MEMORY_ROWS = 5_000


@pytest.mark.parametrize("character", ["c", "\U0001f600"], ids=["ascii", "four-byte-characters"])
async def test_memory_of_the_pending_decisions_stays_within_the_bound(
    store: RegistryStore, character: str
) -> None:
    """Known devices with long client ids and details while the database is away: what waits
    in memory stays within the queue's bound in bytes, measured, not only estimated."""
    bound = MEMORY_BOUND
    registry = RegistryService(store, instance_id=INSTANCE_ID, pending_max_bytes=bound)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(MEMORY_ROWS):  # unopened: nothing is written, everything waits
            registry.record_decision(
                DecisionEntry(
                    client_id=f"{n}" + character * 4000, detail=character * 4000, identity_known=True
                )
            )
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert registry.decision_log.pending_bytes <= bound
    assert held <= bound, f"{held / 2**20:.1f} MiB held for a bound of {bound / 2**20:.0f} MiB"
    assert registry.decision_log.dropped > 0
    assert registry.decision_log.pending + registry.decision_log.dropped == MEMORY_ROWS


async def test_memory_of_the_pending_calls_stays_within_the_bound(store: RegistryStore) -> None:
    """Calls with many small parameters, the rows whose memory is least in their texts."""
    bound = MEMORY_BOUND
    registry = RegistryService(store, instance_id=INSTANCE_ID, pending_max_bytes=bound)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(MEMORY_ROWS):
            registry.record_operation(
                OperationEntry(request_id=f"R{n}", action="ListCaCertificate", status=200, code="Success",
                          authenticated=True, parameters={f"P{index:02d}-{n}": f"{n}" for index in range(64)})
            )  # fmt: skip
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert registry.operations_log.pending_bytes <= bound
    assert held <= bound, f"{held / 2**20:.1f} MiB held for a bound of {bound / 2**20:.0f} MiB"
    assert registry.operations_log.pending + registry.operations_log.dropped == MEMORY_ROWS
    assert registry.operations_log.dropped > 0


@pytest.fixture
def store(tmp_path: object) -> RegistryStore:
    from pathlib import Path

    from certmq.registry import open_registry

    assert isinstance(tmp_path, Path)
    return open_registry("", tmp_path)
