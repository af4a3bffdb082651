"""What an operator switches at run time on one node is switched on every node: the auth mode
(the listeners it opens, the client certificates it asks for) and the server certificate.

The tests share one cluster: the auth mode is set back to one-way after each test, whatever
happened, and the test that sets a server certificate compares with the one presented before it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_nodes import ClusterNodes, ClusterServers
from operated_instance import Instance, new_server_pair, presented_serial

from mqtt_clients import Clients
from paho_client import WAIT


@pytest.fixture(scope="module")
def nodes(servers: ClusterServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    with servers.cluster(
        tmp_path_factory.mktemp("cluster"), (1, 2), CERTMQ_INSTANCE_AUTH_MODE="one-way"
    ) as made:
        yield made


@pytest.fixture
def operators(nodes: ClusterNodes, tmp_path: Path) -> Iterator[dict[int, Instance]]:
    made = {number: Instance(nodes.node(number), tmp_path / f"operator-{number}") for number in (1, 2)}
    yield made
    # Whatever mode a test left the cluster in, the next one finds one-way mode on every node.
    made[1].api.put("/auth-mode", json={"mode": "one-way"}).raise_for_status()
    eventually(lambda: all(accepts_tcp(operator) for operator in made.values()), "one-way mode not back")
    for operator in made.values():
        operator.close()


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {WAIT}s"
        time.sleep(0.05)


def accepts_tcp(operator: Instance) -> bool:
    try:
        socket.create_connection(("127.0.0.1", operator.broker.tcp_port), timeout=2).close()
    except OSError:
        return False
    return True


def test_the_auth_mode_set_on_one_node_is_the_mode_of_every_node(operators: dict[int, Instance]) -> None:
    assert accepts_tcp(operators[2])
    assert operators[1].cli_json("mode", "set", "mutual")["mode"] == "mutual"
    # Node 2 closes plain TCP, as mutual mode does, and says it is in mutual mode.
    eventually(lambda: not accepts_tcp(operators[2]), "node 2 still accepts plain TCP")
    assert operators[2].cli_json("mode", "show")["mode"] == "mutual"
    assert operators[2].cli_json("mode", "set", "one-way")["mode"] == "one-way"
    eventually(lambda: accepts_tcp(operators[1]), "node 1 does not accept plain TCP again")


def test_switching_with_disconnect_nonconforming_counts_and_cuts_such_clients_on_every_node(
    operators: dict[int, Instance], request: pytest.FixtureRequest
) -> None:
    clients = Clients(operators[1].broker, request)
    try:
        # Plain TCP clients, which mutual mode refuses: one on each node.
        over_tcp = {number: clients.for_broker(operators[number].broker).connected() for number in (1, 2)}
        # The console's confirmation counts what the switch would cut on every node.
        confirmation = operators[2].console_text("/console/server-certificate/auth-mode?mode=mutual")
        assert "Ticked, 2 live connections will be disconnected." in confirmation
        switched = operators[1].api.put(
            "/auth-mode", json={"mode": "mutual", "disconnect_nonconforming": True}
        )
        assert switched.status_code == 200
        assert switched.json()["disconnected"] == 2
        for client in over_tcp.values():
            client.wait_disconnected()
        assert operators[2].api.get("/connections").json()["total"] == 0
    finally:
        clients.close_all()


def test_a_server_certificate_set_on_one_node_is_presented_by_every_node(
    operators: dict[int, Instance], tmp_path: Path
) -> None:
    before = presented_serial(operators[2])
    chain, key, serial = new_server_pair(operators[1], tmp_path / "new")
    operators[1].cli("server-cert", "set", "--cert", str(chain), "--key", str(key))
    assert presented_serial(operators[1]) == serial != before
    eventually(lambda: presented_serial(operators[2]) == serial, "node 2 presents its old certificate")
    assert operators[2].api.get("/server-certificate").json()["sn"] == serial
