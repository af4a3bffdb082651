"""certmq nodes as one cluster, each a real ``certmq serve`` process on loopback.

The nodes share one instance: ``certmq init`` runs once, and each node's data directory holds
a copy of the instance's files (``INSTANCE_FILES``: the configuration with the instance id, the
instance key, the admin token and AccessKeys, the server CA and certificate). What a node keeps
for itself (its journal and broker state) starts empty in its own directory. Every node gets its
own free ports, the test's PostgreSQL database as its registry (``CERTMQ_STORAGE_URL``), the NATS
cluster's URLs (``CERTMQ_CLUSTER_NATS_SERVERS``), its name (``node-1``, ``node-2`` …) and a
subject prefix of this cluster's own, so that clusters of different tests share the NATS servers
without hearing each other.

A node is ready when it listens on its ports and its readiness endpoint (``READINESS_PATH``)
answers 200; a node without that endpoint is taken as ready once it listens.

A node may also be run as ``certmq serve --workers N`` (:meth:`ClusterServers.workers`): its
workers are the nodes of the cluster then, ``node-1`` … ``node-N``, on one data directory.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from nats_servers import NatsCluster, delete_streams
from openssl_pki import Issued, make_ca
from operated_instance import Instance
from worker_node import WorkerNode

from broker_process import RunningBroker, init_certmq, serve_certmq
from certmq.config import CONFIG_FILE_NAME
from certmq.instance import CREDENTIALS_FILE, INSTANCE_KEY_FILE, SERVER_CA_DIR, SERVER_DIR
from unit.registry_fixtures import postgresql_database

INSTANCE_FILES = (CONFIG_FILE_NAME, INSTANCE_KEY_FILE, CREDENTIALS_FILE, SERVER_CA_DIR, SERVER_DIR)
READINESS_PATH = "/api/v1/readyz"
READY_TIMEOUT = 30.0


def new_subject_prefix() -> str:
    """A NATS subject prefix of a cluster's own, so that it hears no other test's cluster."""
    return f"test{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class SharedInstance:
    """An instance made once by ``certmq init``, whose files every node of a cluster holds."""

    directory: Path
    info: dict[str, Any]  # what `certmq init --json` printed

    @classmethod
    def create(cls, directory: Path) -> SharedInstance:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory, init_certmq(directory))

    def copy_to(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in INSTANCE_FILES:
            source = self.directory / name
            if source.is_dir():
                shutil.copytree(source, data_dir / name)
            else:
                shutil.copy2(source, data_dir / name)


def readiness(node: RunningBroker) -> httpx.Response:
    """The node's answer to its readiness endpoint."""
    return httpx.get(f"http://{node.host}:{node.http_port}{READINESS_PATH}", timeout=5)


def wait_ready(node: RunningBroker, name: str, timeout: float = READY_TIMEOUT) -> None:
    """Wait until the node says it is ready (or, without a readiness endpoint, listens)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = readiness(node)
            if answer.status_code in (200, 404):
                return
            state = f"{READINESS_PATH} answered {answer.status_code}: {answer.text[:300]}"
        except httpx.HTTPError as error:
            state = f"{READINESS_PATH} failed: {error}"
        if node.process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {node.process.returncode}\n{node.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready within {timeout}s: {state}\n{node.log_tail()}")
        time.sleep(0.05)


class ClusterNodes:
    """The nodes of one cluster, numbered from 1 as they are named (``node(2)`` is ``node-2``)."""

    def __init__(
        self,
        instance: SharedInstance,
        work: Path,
        *,
        storage_url: str,
        nats_servers: str,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.instance = instance
        self.work = work
        self.subject_prefix = new_subject_prefix()
        self.settings = {
            "CERTMQ_STORAGE_URL": storage_url,
            "CERTMQ_CLUSTER_NATS_SERVERS": nats_servers,
            "CERTMQ_CLUSTER_SUBJECT_PREFIX": self.subject_prefix,
            **(settings or {}),
        }
        self.nodes: dict[int, RunningBroker] = {}

    def add(self, *numbers: int) -> list[RunningBroker]:
        """Start new nodes (``add(1, 2, 3)``), side by side, and wait until each is ready."""
        with ThreadPoolExecutor(len(numbers)) as pool:
            starting = {number: pool.submit(self._serve, number) for number in numbers}
        failures = []
        for number, future in starting.items():
            try:
                self.nodes[number] = future.result()
            except Exception as error:
                failures.append(error)
        if failures:
            raise failures[0]
        return [self.nodes[number] for number in numbers]

    def _serve(self, number: int) -> RunningBroker:
        data_dir = self.work / f"node-{number}"
        self.instance.copy_to(data_dir)
        settings = {**self.settings, "CERTMQ_CLUSTER_NODE_NAME": f"node-{number}"}
        node = serve_certmq(data_dir, settings, self.instance.info)
        try:
            wait_ready(node, f"node-{number}")
        except BaseException:
            node.kill()
            raise
        return node

    def node(self, number: int) -> RunningBroker:
        return self.nodes[number]

    def kill(self, number: int) -> None:
        """SIGKILL, as a power cut would stop the node."""
        self.nodes[number].kill()

    def stop(self, number: int) -> None:
        """SIGTERM; the node must exit cleanly."""
        node = self.nodes[number]
        code = node.stop()
        assert code == 0, f"node-{number} exited with code {code} after SIGTERM\n{node.log_tail()}"

    def start(self, number: int) -> None:
        """Start a stopped or killed node again on its data directory and ports."""
        node = self.nodes[number]
        node.start()
        wait_ready(node, f"node-{number}")

    def restart(self, number: int) -> None:
        self.stop(number)
        self.start(number)

    def close(self) -> None:
        """Stop every node. Each must exit cleanly, unless the test stopped or killed it itself:
        a node that died on its own fails the test too."""
        failures = []
        for number, node in sorted(self.nodes.items()):
            halted_by_the_test = node.exit_code is not None
            code = node.stop()
            if not halted_by_the_test and code != 0:
                failures.append(f"node-{number} exited with code {code}\n{node.log_tail()}")
        assert not failures, "\n".join(failures)


@contextlib.contextmanager
def running_cluster(
    instance: SharedInstance,
    work: Path,
    *,
    storage_url: str,
    nats_servers: str,
    numbers: tuple[int, ...] = (1, 2, 3),
    **settings: str,
) -> Iterator[ClusterNodes]:
    """The nodes ``numbers`` started side by side, stopped (cleanly) when the block ends."""
    cluster = ClusterNodes(
        instance, work, storage_url=storage_url, nats_servers=nats_servers, settings=settings
    )
    try:
        cluster.add(*numbers)
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            delete_streams(nats_servers, cluster.subject_prefix)


@dataclass(frozen=True)
class RegisteredCa:
    """A CA made by the openssl command line and registered through the code flow."""

    issued: Issued
    sn: str


@dataclass(frozen=True)
class RegistryTemplate:
    """A registry every test's cluster starts from a copy of: set up by the shared instance's
    first start, with two CAs registered (``fleet``, and ``other`` for bystanders)."""

    url: str
    fleet: RegisteredCa
    other: RegisteredCa


@contextlib.contextmanager
def registry_template(server: str, instance: SharedInstance, work: Path) -> Iterator[RegistryTemplate]:
    """Made by one node of ``instance`` on a new database of ``server``; the node is stopped
    before the template is used, since PostgreSQL copies only a database no one is connected to."""
    with postgresql_database(server) as url:
        data_dir = work / "node"
        instance.copy_to(data_dir)
        node = serve_certmq(data_dir, {"CERTMQ_STORAGE_URL": url}, instance.info)
        operator = Instance(node, work)
        try:
            registered = {}
            for name in ("fleet", "other"):
                ca = make_ca(work / name, f"{name}-ca")
                registered[name] = RegisteredCa(ca, operator.register_ca(ca, name))
        finally:
            operator.close()
            code = node.stop()
        assert code == 0, f"the node that set up the registry template exited {code}\n{node.log_tail()}"
        yield RegistryTemplate(url, **registered)


@dataclass(frozen=True)
class ClusterServers:
    """What every cluster of a test run stands on: the NATS cluster, the PostgreSQL server, the
    shared instance and the registry template."""

    nats: NatsCluster
    postgresql: str
    instance: SharedInstance
    registry: RegistryTemplate

    @contextlib.contextmanager
    def cluster(
        self,
        work: Path,
        numbers: tuple[int, ...] = (1, 2, 3),
        *,
        empty_registry: bool = False,
        **settings: Any,
    ) -> Iterator[ClusterNodes]:
        """The nodes ``numbers`` on a database of their own (a copy of the template, or empty), with
        these ``CERTMQ_*`` settings; stopped, and the database dropped, when the block ends."""
        template = None if empty_registry else self.registry.url
        with (
            postgresql_database(self.postgresql, template) as url,
            running_cluster(
                self.instance,
                work,
                storage_url=url,
                nats_servers=self.nats.urls,
                numbers=numbers,
                **{name: str(value) for name, value in settings.items()},
            ) as cluster,
        ):
            yield cluster

    @contextlib.contextmanager
    def workers(self, work: Path, count: int = 2, **settings: Any) -> Iterator[WorkerNode]:
        """One node run as ``certmq serve --workers COUNT`` (``node-1`` … ``node-COUNT``) on a
        database of its own (a copy of the template), with these ``CERTMQ_*`` settings, its
        workers ready; stopped, and the database dropped, when the block ends."""
        with postgresql_database(self.postgresql, self.registry.url) as url:
            data_dir = work / "node"
            self.instance.copy_to(data_dir)
            prefix = new_subject_prefix()
            environment = {
                "CERTMQ_STORAGE_URL": url,
                "CERTMQ_CLUSTER_NATS_SERVERS": self.nats.urls,
                "CERTMQ_CLUSTER_SUBJECT_PREFIX": prefix,
                "CERTMQ_CLUSTER_NODE_NAME": "node",
                **{name: str(value) for name, value in settings.items()},
            }
            supervisor = serve_certmq(data_dir, environment, self.instance.info, ("--workers", str(count)))
            node = WorkerNode(supervisor, count)
            try:
                node.wait_ready()
                yield node
            finally:
                try:
                    node.close()
                finally:
                    delete_streams(self.nats.urls, prefix)
