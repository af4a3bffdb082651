"""Fixtures of the cluster tests: real servers under several certmq nodes.

One NATS cluster (three ``nats-server`` processes with JetStream) and one PostgreSQL server serve
the whole run; each test's cluster has a database of its own and a NATS subject prefix of its own.
The nodes share one instance made by ``certmq init`` once. Clients are paho-mqtt and Debian's
mosquitto_pub and mosquitto_sub, as in the single node's tests.
"""

from __future__ import annotations

import contextlib
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mtls"))

from cluster_nodes import ClusterNodes, ClusterServers, SharedInstance, registry_template
from nats_servers import NatsCluster
from worker_node import WorkerNode

from mqtt_clients import Clients
from unit.registry_fixtures import postgresql_server

__all__ = ["postgresql_server"]  # a fixture

DEFAULT_TEST_TIMEOUT = 90
NODE_LOG_LINES = 40


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nodes(*numbers): the nodes a cluster test starts (default: 1, 2, 3)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in item.nodeid and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed cluster test's report ends with what its nodes logged last."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        nodes = value if isinstance(value, ClusterNodes) else getattr(value, "nodes", None)
        if isinstance(nodes, ClusterNodes):
            for number, node in sorted(nodes.nodes.items()):
                report.sections.append((f"node-{number} log (last lines)", node.log_tail(NODE_LOG_LINES)))
            return


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three NATS servers routed to each other, JetStream on, ready."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def postgresql(postgresql_server: str | None) -> str:
    """The URL of the PostgreSQL server the run's registries live on."""
    if postgresql_server is None:
        pytest.fail(
            "no PostgreSQL server: set CERTMQ_TEST_POSTGRESQL_URL or install PostgreSQL (initdb, pg_ctl)"
        )
    return postgresql_server


@pytest.fixture(scope="session")
def shared_instance(tmp_path_factory: pytest.TempPathFactory) -> SharedInstance:
    """The instance every node of every cluster of the run holds a copy of."""
    return SharedInstance.create(tmp_path_factory.mktemp("instance"))


@pytest.fixture(scope="session")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
    nats_cluster: NatsCluster,
    postgresql: str,
    shared_instance: SharedInstance,
) -> Iterator[ClusterServers]:
    """Everything a cluster of the run stands on, and the registry its databases are copied from."""
    with registry_template(postgresql, shared_instance, tmp_path_factory.mktemp("template")) as template:
        yield ClusterServers(nats_cluster, postgresql, shared_instance, template)


@pytest.fixture
def start_cluster(
    tmp_path_factory: pytest.TempPathFactory, servers: ClusterServers, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ClusterNodes]]:
    """Start a cluster of the test's own: ``start_cluster((1, 2, 3), CERTMQ_…=…)``, on a copy of
    the registry template (or, with ``empty_registry=True``, on an empty database the nodes
    set up themselves). Without numbers, the nodes the test's ``nodes`` mark names (default: 1,
    2 and 3). Stopped when the test ends."""
    marked = request.node.get_closest_marker("nodes")
    with contextlib.ExitStack() as stack:

        def start(
            numbers: tuple[int, ...] | None = None, empty_registry: bool = False, **settings: Any
        ) -> ClusterNodes:
            work = tmp_path_factory.mktemp("cluster")
            if numbers is None:
                numbers = marked.args if marked else (1, 2, 3)
            return stack.enter_context(
                servers.cluster(work, numbers, empty_registry=empty_registry, **settings)
            )

        yield start


@pytest.fixture
def start_workers(
    tmp_path_factory: pytest.TempPathFactory, servers: ClusterServers
) -> Iterator[Callable[..., WorkerNode]]:
    """Start a node of the test's own as ``certmq serve --workers COUNT``: ``start_workers(2,
    CERTMQ_…=…)``, on a copy of the registry template. Stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(count: int = 2, **settings: Any) -> WorkerNode:
            work = tmp_path_factory.mktemp("workers")
            return stack.enter_context(servers.workers(work, count, **settings))

        yield start


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test uses: ``cluster/<test name>/<random>``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"cluster/{name}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def clients(cluster: ClusterNodes, request: pytest.FixtureRequest) -> Iterator[Clients]:
    """Clients of the module's ``cluster`` (``clients.for_broker(cluster.node(2)).connected()``),
    closed when the test ends."""
    made = Clients(next(iter(cluster.nodes.values())), request)
    yield made
    made.close_all()
