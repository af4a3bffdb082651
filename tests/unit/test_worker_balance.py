"""certmq.broker.worker_balance: the connection counts the workers of a node share."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from certmq.broker import worker_balance
from certmq.broker.worker_balance import MAX_WORKERS, WorkerLoads, handoff_address


def _counts(loads: WorkerLoads) -> dict[int, int]:
    return {other.number: other.connections for other in loads.others()}


def test_each_worker_sees_the_counts_of_the_others(tmp_path: Path) -> None:
    first, second, third = (WorkerLoads(tmp_path, number) for number in (1, 2, 3))
    assert _counts(first) == {}  # nobody else has written yet
    first.write(10)
    second.write(7)
    third.write(4)
    assert _counts(first) == {2: 7, 3: 4}
    assert _counts(third) == {1: 10, 2: 7}
    third.leave()
    assert _counts(first) == {2: 7}


def test_a_worker_that_stopped_writing_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = WorkerLoads(tmp_path, 1), WorkerLoads(tmp_path, 2)
    second.write(0)
    assert _counts(first) == {2: 0}
    later = time.monotonic() + worker_balance.STALE_AFTER + 1
    monkeypatch.setattr(worker_balance.time, "monotonic", lambda: later)
    assert _counts(first) == {}  # killed, say: it no longer counts


def test_worker_numbers_and_addresses(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WorkerLoads(tmp_path, 0)
    with pytest.raises(ValueError):
        WorkerLoads(tmp_path, MAX_WORKERS + 1)
    # One node's workers share an address prefix; another node's differ.
    assert handoff_address(tmp_path / "a", 1) != handoff_address(tmp_path / "a", 2)
    assert handoff_address(tmp_path / "a", 1) != handoff_address(tmp_path / "b", 1)
    assert handoff_address(tmp_path / "a", 1).startswith(b"\0certmq-")


def test_a_worker_counts_the_connections_it_took_over_from_each_other(tmp_path: Path) -> None:
    first, second = WorkerLoads(tmp_path, 1), WorkerLoads(tmp_path, 2)
    second.write(3)
    second.took_over_from(1)
    second.took_over_from(1)
    (seen,) = first.others()
    assert (seen.number, seen.connections, seen.taken_from_reader) == (2, 3, 2)
    # Started again (a new slot): it has taken nothing from anyone, and says when it started.
    again = WorkerLoads(tmp_path, 2)
    again.write(0)
    (seen_again,) = first.others()
    assert seen_again.taken_from_reader == 0 and seen_again.started > seen.started
