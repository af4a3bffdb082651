"""``certmq serve --workers N``: N processes of one node sharing its listening ports, as a cluster
on this machine (docs/cluster.md, "One machine, several cores"), on the run's NATS and PostgreSQL
servers, with paho-mqtt clients. Which worker serves a client is read from the kernel
(:func:`worker_node.connection_owners`)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_nodes import SharedInstance
from worker_node import WORKER_STARTED, WorkerNode, connection_owners, running, wait_until_gone

from broker_process import certmq_command, free_port
from mqtt_clients import Clients
from paho_client import PahoClient

# The kernel spreads connections over the workers by a hash of the client's port: the chance
# that this many all reach one worker of two is 2**-59.
MAX_CLIENTS = 60
GONE_TIMEOUT = 30.0
RUN_TIMEOUT = 60.0
# Servers on a port nobody listens on: the supervisor's checks accept them, every worker fails.
UNREACHABLE_SERVERS = {
    "CERTMQ_STORAGE_URL": "postgresql://certmq@127.0.0.1:1/certmq",
    "CERTMQ_CLUSTER_NATS_SERVERS": "nats://127.0.0.1:1",
}


@pytest.fixture
def clients(request: pytest.FixtureRequest) -> Iterator[Callable[[WorkerNode], Clients]]:
    """``clients(node)``: the clients of a node, closed when the test ends."""
    made: list[Clients] = []

    def make(node: WorkerNode) -> Clients:
        made.append(Clients(node.supervisor, request))
        return made[-1]

    yield make
    for each in made:
        each.close_all()


def connect(clients: Clients, node: WorkerNode) -> tuple[PahoClient, int]:
    """A client connected to the node's MQTT port, and the pid of the worker that serves it."""
    client = clients.connected()
    sock = client.client.socket()
    assert isinstance(sock, socket.socket)
    client_port = sock.getsockname()[1]
    owners = connection_owners(node.tcp_port, node.worker_pids().values())
    assert client_port in owners, f"no worker holds the connection from port {client_port}"
    return client, owners[client_port]


def on_every_worker(clients: Clients, node: WorkerNode, least: int) -> dict[int, list[PahoClient]]:
    """At least ``least`` clients connected, and more until every worker serves some: the
    clients by the pid of their worker."""
    by_worker: dict[int, list[PahoClient]] = {}
    workers = set(node.worker_pids().values())
    count = 0
    while count < least or set(by_worker) != workers:
        assert count < MAX_CLIENTS, f"{MAX_CLIENTS} clients, all on workers {sorted(by_worker)}"
        client, pid = connect(clients, node)
        by_worker.setdefault(pid, []).append(client)
        count += 1
    return by_worker


def test_two_workers_accept_on_one_port_and_route_to_each_other(
    start_workers: Callable[..., WorkerNode], clients: Callable[[WorkerNode], Clients], topic: str
) -> None:
    node = start_workers(2)
    workers = node.workers()
    assert sorted(name for _, name in workers.values()) == ["node-1", "node-2"]
    by_worker = on_every_worker(clients(node), node, least=20)
    first, second = by_worker[workers[1][0]], by_worker[workers[2][0]]
    # A subscriber on each worker, each reached by a publisher on the other, at QoS 1 and 0.
    first[0].subscribe(f"{topic}/#", qos=1)
    second[0].subscribe(f"{topic}/#", qos=1)
    second[-1].publish(f"{topic}/to-first", b"from worker 2", qos=1)
    first[-1].publish(f"{topic}/to-second", b"from worker 1", qos=0)
    assert {message.payload for message in first[0].expect_messages(2)} == {
        b"from worker 1",
        b"from worker 2",
    }
    assert {message.payload for message in second[0].expect_messages(2)} == {
        b"from worker 1",
        b"from worker 2",
    }


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_new_connections_are_spread_evenly_over_the_workers(
    start_workers: Callable[..., WorkerNode], clients: Callable[[WorkerNode], Clients], tls: bool
) -> None:
    # The kernel alone hands a connection to a worker by a hash of its ports (30 connections
    # split 17 to 13 or worse more often than not); a worker that holds two more than the other
    # hands the new one over, TLS handshake and all, before reading a byte of it.
    node = start_workers(2)
    made = clients(node)
    port = node.supervisor.tls_port if tls else node.tcp_port
    counts: dict[int, int] = dict.fromkeys(node.worker_pids().values(), 0)
    opened = []
    for _ in range(30):
        client = made.paho(tls=tls)
        client.connect()
        opened.append(client)
        sock = client.client.socket()
        assert isinstance(sock, socket.socket)
        owners = connection_owners(port, counts)
        counts[owners[sock.getsockname()[1]]] += 1
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    # And the connections handed over work: a message from each client reaches the first one.
    first = opened[0]
    first.subscribe("spread/#", qos=1)
    for index, client in enumerate(opened):
        client.publish(f"spread/{index}", b"x", qos=1)
    assert len(first.expect_messages(30)) == 30


def accepted(port: int, pids: list[int], ports: set[int]) -> dict[int, int]:
    """Waits until the connections from ``ports`` are all held by the workers ``pids``: their owners."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not ports <= set(owners := connection_owners(port, pids)):
        assert time.monotonic() < deadline, f"{len(ports - set(owners))} connections not accepted"
        time.sleep(0.02)
    return owners


def test_a_burst_of_connections_is_spread_evenly_too(start_workers: Callable[..., WorkerNode]) -> None:
    # Forty connections made at once, before either worker has accepted the first: each worker
    # counts what it accepted from the accept on, not from the MQTT CONNECT.
    node = start_workers(2)
    pids = list(node.worker_pids().values())
    burst = [socket.create_connection(("127.0.0.1", node.tcp_port)) for _ in range(40)]
    try:
        ports = {sock.getsockname()[1] for sock in burst}
        owners = accepted(node.tcp_port, pids, ports)
        counts = [sum(1 for port in ports if owners[port] == pid) for pid in pids]
        assert max(counts) - min(counts) <= 2, counts
    finally:
        for sock in burst:
            sock.close()


def test_connections_that_just_closed_do_not_count(start_workers: Callable[..., WorkerNode]) -> None:
    # A fleet that drops off one worker and comes back at once: a worker counts a connection
    # until it is lost, and says so to the others at that moment, not a while later.
    node = start_workers(2)
    pids = list(node.worker_pids().values())
    first = [socket.create_connection(("127.0.0.1", node.tcp_port)) for _ in range(40)]
    again: list[socket.socket] = []
    try:
        owners = accepted(node.tcp_port, pids, {sock.getsockname()[1] for sock in first})
        # Every connection of the first worker closes, and the first worker lets go of them.
        leaving = [sock for sock in first if owners[sock.getsockname()[1]] == pids[0]]
        gone = {sock.getsockname()[1] for sock in leaving}
        staying = {sock.getsockname()[1] for sock in first} - gone
        for sock in leaving:
            sock.close()
        deadline = time.monotonic() + RUN_TIMEOUT
        while gone & set(connection_owners(node.tcp_port, pids)):
            assert time.monotonic() < deadline, "the first worker still holds connections that closed"
            time.sleep(0.01)
        # As many come back at once: the first worker holds none now, the second about 20.
        again = [socket.create_connection(("127.0.0.1", node.tcp_port)) for _ in range(len(leaving))]
        owners = accepted(node.tcp_port, pids, staying | {sock.getsockname()[1] for sock in again})
        counts = [sum(1 for holder in owners.values() if holder == pid) for pid in pids]
        assert max(counts) - min(counts) <= 2, counts
        # About half of those that came back reached the second worker, which handed them over:
        # each worker's metrics (the shared HTTP port answers from either) count its share.
        seen: dict[str, set[float]] = {"handed_over": set(), "taken_over": set()}
        for _ in range(40):
            samples = node.supervisor.metrics()
            for kind in seen:
                seen[kind].add(samples[f"certmq_worker_connections_{kind}_total"])
        assert max(seen["handed_over"]) >= 1 and max(seen["taken_over"]) >= 1, seen
    finally:
        for sock in first + again:
            sock.close()


def test_a_killed_worker_is_started_again_and_the_port_keeps_accepting(
    start_workers: Callable[..., WorkerNode], clients: Callable[[WorkerNode], Clients]
) -> None:
    node = start_workers(2)
    survivor, killed = node.worker_pids()[1], node.worker_pids()[2]
    since = len(node.log())
    os.kill(killed, signal.SIGKILL)
    node.wait_for(rf"worker 2 \(node node-2, pid {killed}\) was killed by SIGKILL", since=since)
    # While worker 2 is down, the port accepts every connection, all on worker 1.
    while_down = clients(node)
    assert {connect(while_down, node)[1] for _ in range(5)} == {survivor}
    restarted = int(node.wait_for(r"worker 2 ready again: pid (\d+), node node-2", since=since)[1])
    assert restarted != killed and not running(killed)
    # The worker started again shares the port: new connections reach it too.
    assert set(on_every_worker(clients(node), node, least=1)) == {survivor, restarted}


def test_sighup_reloads_every_worker_and_sigterm_stops_them_all(
    start_workers: Callable[..., WorkerNode],
) -> None:
    node = start_workers(2)
    pids = list(node.worker_pids().values())
    since = len(node.log())
    node.supervisor.process.send_signal(signal.SIGHUP)
    for name in ("node-1", "node-2"):
        node.wait_for(rf"\[{name}\] certmq: SIGHUP: reload done", since=since)
    assert node.supervisor.stop() == 0, node.supervisor.log_tail()
    assert wait_until_gone(pids, GONE_TIMEOUT) == [], f"workers left behind\n{node.supervisor.log_tail()}"
    for name in ("node-1", "node-2"):
        assert f"[{name}] certmq: stopped" in node.log()
        # Each worker kept its sessions apart, in JetStream under its own name; nothing of them
        # is in the data directory.
        assert re.search(
            rf"\[{name}\] certmq.cluster: node {name} keeps its sessions .* in JetStream", node.log()
        )
        assert not node.state_directory(name).exists()
    assert not (node.data_dir / "journal").exists()


def test_workers_stop_when_their_supervisor_is_killed(start_workers: Callable[..., WorkerNode]) -> None:
    node = start_workers(2)
    pids = list(node.worker_pids().values())
    node.supervisor.kill()
    assert wait_until_gone(pids, GONE_TIMEOUT) == [], f"workers left behind\n{node.supervisor.log_tail()}"
    for name in ("node-1", "node-2"):
        assert f"[{name}] certmq: the supervisor is gone: stopping" in node.log()


def serve_workers(instance: SharedInstance, data_dir: Path, **settings: str) -> tuple[int, str]:
    """``certmq serve --workers 2`` run to its end (every listener on a free port unless
    ``settings`` say otherwise): its exit status and output. Killed after RUN_TIMEOUT; its
    workers then see their supervisor gone, and stop."""
    instance.copy_to(data_dir)
    command, environment = certmq_command()
    for name in ("tcp", "tls", "ws", "wss", "http"):
        environment[f"CERTMQ_LISTENERS_{name.upper()}"] = f"127.0.0.1:{free_port()}"
    environment.update(settings)
    result = subprocess.run(
        [*command, "serve", "--data-dir", str(data_dir), "--workers", "2"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT,
        check=False,
    )  # fmt: skip
    return result.returncode, result.stdout


def test_workers_without_nats_servers_are_refused(shared_instance: SharedInstance, tmp_path: Path) -> None:
    status, output = serve_workers(
        shared_instance, tmp_path / "node", CERTMQ_STORAGE_URL=UNREACHABLE_SERVERS["CERTMQ_STORAGE_URL"]
    )
    assert status == 1, output
    assert "--workers 2 runs 2 processes of one node as a cluster on this machine" in output
    assert "cluster.nats_servers is empty" in output and "CERTMQ_CLUSTER_NATS_SERVERS" in output
    assert not WORKER_STARTED.search(output), "a worker was started"


def test_a_port_another_process_holds_is_refused(shared_instance: SharedInstance, tmp_path: Path) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        status, output = serve_workers(
            shared_instance,
            tmp_path / "node",
            **UNREACHABLE_SERVERS,
            CERTMQ_LISTENERS_WSS=f"127.0.0.1:{port}",
        )
    assert status == 1, output
    assert f"listeners.wss 127.0.0.1:{port}: Address already in use" in output
    assert not WORKER_STARTED.search(output), "a worker was started"


def test_workers_that_keep_failing_at_start_stop_the_supervisor(
    shared_instance: SharedInstance, tmp_path: Path
) -> None:
    status, output = serve_workers(shared_instance, tmp_path / "node", **UNREACHABLE_SERVERS)
    assert status == 1, output
    assert "exited with status 1 before it was ready, 3 times in a row: stopping every worker" in output
    # The first worker, three times; the others wait for it to be ready.
    pids = [int(pid) for number, pid, _ in WORKER_STARTED.findall(output) if number == "1"]
    assert len(pids) == 3 == len(WORKER_STARTED.findall(output)), output
    assert wait_until_gone(pids, GONE_TIMEOUT) == []
