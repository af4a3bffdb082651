"""The RPC API's signature nonces and rate buckets kept in the registry, as the nodes of a
cluster share them (certmq.registry.api_guards), on SQLite and PostgreSQL: each store below is
opened twice on one database, as two nodes open it, and what one spends the other sees."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from certmq.api.rpc.rate_limit import RateLimiter
from certmq.registry import open_registry
from certmq.registry.api_guards import prune_nonces, spend_nonce, take_call
from certmq.registry.store import RegistryStore

from .registry_fixtures import postgresql_server, store

__all__ = ["postgresql_server", "store"]  # fixtures


@pytest.fixture
def other_node(store: RegistryStore) -> Iterator[RegistryStore]:
    """The same database, opened again as another node opens it."""
    opened = open_registry(store.engine.url.render_as_string(hide_password=False))
    yield opened
    opened.close()


def test_a_nonce_is_accepted_once_by_every_node_until_it_expires(
    store: RegistryStore, other_node: RegistryStore
) -> None:
    assert spend_nonce(store, "key", "n1", expires_at=100.0, now=0.0) is True
    assert spend_nonce(other_node, "key", "n1", expires_at=100.0, now=1.0) is False
    assert spend_nonce(store, "key", "n1", expires_at=100.0, now=2.0) is False
    # Another key may use the same nonce.
    assert spend_nonce(other_node, "other key", "n1", expires_at=100.0, now=3.0) is True
    # Once expired, its request's time is out of the window: the nonce may serve again.
    assert spend_nonce(other_node, "key", "n1", expires_at=250.0, now=100.0) is True
    assert spend_nonce(store, "key", "n1", expires_at=250.0, now=101.0) is False


def test_expired_nonces_are_pruned(store: RegistryStore) -> None:
    for number in range(5):
        spend_nonce(store, "key", f"n{number}", expires_at=10.0 * number, now=0.0)
    assert prune_nonces(store, now=25.0) == 3
    assert spend_nonce(store, "key", "n4", expires_at=100.0, now=25.0) is False
    assert spend_nonce(store, "key", "n0", expires_at=100.0, now=25.0) is True


def _spend_at_once(nodes: list[RegistryStore], nonce: str) -> list[bool]:
    """Each node spends ``nonce`` in a thread of its own, all at once."""
    outcomes: list[bool] = []
    start = threading.Barrier(len(nodes))

    def spend(node: RegistryStore) -> None:
        start.wait()
        outcomes.append(spend_nonce(node, "key", nonce, expires_at=100.0, now=0.0))

    threads = [threading.Thread(target=spend, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_nodes_spending_one_nonce_at_once_accept_it_once(
    store: RegistryStore, other_node: RegistryStore
) -> None:
    for attempt in range(20):
        assert sorted(_spend_at_once([store, other_node], f"race-{attempt}")) == [False, True]


# The same bucket, whatever keeps it: (seconds to move the clock by, key, the wait expected).
BUCKET_STEPS: list[tuple[float, str, float]] = [
    (0.0, "key", 0.0),
    (0.0, "key", 0.0),
    (0.0, "key", 0.0),  # the burst, 3
    (0.0, "key", 0.5),  # then 2 calls a second
    (0.0, "another key", 0.0),
    (0.5, "key", 0.0),
    (0.0, "key", 0.5),
    (100.0, "key", 0.0),  # refilled up to the burst, no further
    (0.0, "key", 0.0),
    (0.0, "key", 0.0),
    (0.0, "key", 0.5),
    (-30.0, "key", 0.5),  # a clock behind the bucket's last use refills nothing
]


def _run_steps(take: Callable[[str, float], float]) -> list[float]:
    now, waits = 1000.0, []
    for move, key, _ in BUCKET_STEPS:
        now += move
        waits.append(take(key, now))
    return waits


EXPECTED_WAITS = [pytest.approx(wait) for _, _, wait in BUCKET_STEPS]


def test_the_shared_bucket_counts_as_the_one_in_memory_does(store: RegistryStore) -> None:
    clock = [0.0]
    memory = RateLimiter(2.0, 3, clock=lambda: clock[0])

    def in_memory(key: str, now: float) -> float:
        clock[0] = max(clock[0], now)  # a monotonic clock does not go back
        return memory.acquire(key)

    assert _run_steps(in_memory) == EXPECTED_WAITS
    assert _run_steps(lambda key, now: take_call(store, key, rate=2.0, burst=3, now=now)) == EXPECTED_WAITS


def test_the_calls_of_every_node_count_against_one_bucket(
    store: RegistryStore, other_node: RegistryStore
) -> None:
    nodes = [store, other_node]
    waits = [take_call(nodes[number % 2], "key", rate=1.0, burst=4, now=50.0) for number in range(6)]
    assert waits == [0.0, 0.0, 0.0, 0.0, pytest.approx(1.0), pytest.approx(1.0)]
    assert take_call(other_node, "key", rate=1.0, burst=4, now=51.0) == 0.0
