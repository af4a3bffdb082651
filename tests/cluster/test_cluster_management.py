"""The management surfaces show the cluster: any node lists the connections of every node with
their node, kicks a client wherever it is, counts every node (REST, console, ``$SYS``, metrics),
names a node that does not answer rather than hang, says on ``/readyz`` whether it has NATS; and
the RPC API's signature nonces and rate limit are the cluster's, not each node's.

The tests that only look share one cluster; a test that stops a node or NATS, or that needs
settings of its own, starts a cluster of its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ThrottlingException
from cluster_nodes import ClusterNodes, ClusterServers, readiness
from operated_instance import Instance

from broker_process import RunningBroker
from mqtt_clients import Clients
from paho_client import WAIT, PahoClient
from rpc.live_api import sdk_client
from rpc.signing import VERSION, query_string, sign_rpc

ADMINISTRATIVE_ACTION = 0x98
# A node's entry in the bucket of members lives 10 s after its last renewal.
MEMBER_TTL = 10.0


@pytest.fixture(scope="module")
def shared_cluster(
    servers: ClusterServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterNodes]:
    """Nodes 1, 2 and 3, publishing ``$SYS`` every second, for the tests that leave them running."""
    with servers.cluster(
        tmp_path_factory.mktemp("cluster"), (1, 2, 3), CERTMQ_MQTT_SYS_INTERVAL="1"
    ) as nodes:
        yield nodes


@pytest.fixture
def operators(tmp_path: Path) -> Iterator[Callable[[RunningBroker], Instance]]:
    """An operator's view (CLI, REST API, console) of any node, closed at the end."""
    opened: list[Instance] = []

    def operator(node: RunningBroker) -> Instance:
        instance = Instance(node, tmp_path)
        opened.append(instance)
        return instance

    yield operator
    for instance in opened:
        instance.close()


@pytest.fixture
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[[RunningBroker, str], PahoClient]]:
    """``connect(node, client_id)``: a paho-mqtt 5.0 client connected to ``node``, closed at the end."""
    made: list[Clients] = []

    def connected(node: RunningBroker, client_id: str) -> PahoClient:
        clients = Clients(node, request)
        made.append(clients)
        return clients.connected(client_id=client_id)

    yield connected
    for clients in made:
        clients.close_all()


def until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """``check()`` once it is true, polled; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s (last: {value!r})"
        time.sleep(0.05)


def listed(operator: Instance) -> tuple[dict[str, str], str]:
    """``certmq connections --json`` against ``operator``'s node: client id → node, and stderr."""
    result = operator.cli("connections", "--json")
    return {item["client_id"]: item["node"] for item in json.loads(result.stdout)}, result.stderr


def test_any_node_lists_kicks_and_counts_the_clients_of_every_node(
    shared_cluster: ClusterNodes,
    connect: Callable[[RunningBroker, str], PahoClient],
    operators: Callable[[RunningBroker], Instance],
) -> None:
    cluster = shared_cluster
    suffix = uuid.uuid4().hex[:6]
    on_node = {number: connect(cluster.node(number), f"on-{number}-{suffix}") for number in (1, 2, 3)}
    expected = {f"on-{number}-{suffix}": f"node-{number}" for number in (1, 2, 3)}

    # `certmq connections --json` on each node: every node's clients, each with its node.
    for number in (1, 2, 3):
        seen, warnings = listed(operators(cluster.node(number)))
        assert {client: node for client, node in seen.items() if client.endswith(suffix)} == expected, (
            f"listed by node-{number}: {seen}; {warnings}"
        )
        assert "did not answer" not in warnings

    # The REST API's page counts them all and misses no node.
    operator = operators(cluster.node(1))
    page = operator.api.get("/connections", params={"page_size": 2}).json()
    assert page["total"] >= 3 and len(page["items"]) == 2 and page["missing_nodes"] == []

    # Kicked through node 1, the client on node 2 is disconnected by node 2.
    kicked = operator.cli("connections", "--kick", f"on-2-{suffix}")
    assert kicked.stdout.strip() == f"disconnected on-2-{suffix} from node node-2"
    reason = on_node[2].wait_disconnected(WAIT)
    assert reason is not None and reason.value == ADMINISTRATIVE_ACTION
    on_node[1].assert_connected()
    on_node[3].assert_connected()
    until("the kicked client gone from the listing", lambda: f"on-2-{suffix}" not in listed(operator)[0])
    gone = operator.api.post(f"/connections/on-2-{suffix}/kick")
    assert gone.status_code == 404 and gone.json()["code"] == "ConnectionNotFound"

    # The overview: each node and the sum.
    overview = operator.api.get("/instance").json()
    assert [node["name"] for node in overview["nodes"]] == ["node-1", "node-2", "node-3"]
    assert overview["counts"]["connections"] == sum(node["connections"] for node in overview["nodes"]) >= 2
    assert "node-3" in operator.console_text("/console")

    # Metrics stay each node's own, with the cluster's gauges.
    metrics = until(
        "node-1 counting 3 nodes", lambda: (m := cluster.node(1).metrics())["certmq_cluster_nodes"] == 3 and m
    )
    assert metrics["certmq_cluster_nats_connected"] == 1
    assert metrics['certmq_connections{listener="tcp"}'] == 1  # its own client only

    # $SYS/cluster on node 1: the sums over the nodes, and each node's.
    monitor = connect(cluster.node(1), f"monitor-{suffix}")
    monitor.subscribe("$SYS/cluster/#", qos=0)
    values: dict[str, str] = {}

    def sums_seen() -> bool:
        for message in monitor.drain():
            values[message.topic] = message.payload.decode()
        return (
            values.get("$SYS/cluster/nodes") == "3"
            and values.get("$SYS/cluster/clients/connected") == "3"  # node 1's two, node 3's one
            and values.get("$SYS/cluster/node/node-3/clients/connected") == "1"
        )

    until("$SYS/cluster counting every node", sums_seen, timeout=3 * WAIT)
    assert values["$SYS/cluster/nodes/missing"] == "0"


def test_a_stopped_node_leaves_and_a_killed_one_is_named_missing_at_once_then_left_out(
    start_cluster: Callable[..., ClusterNodes],
    connect: Callable[[RunningBroker, str], PahoClient],
    operators: Callable[[RunningBroker], Instance],
) -> None:
    cluster = start_cluster((1, 2, 3))
    connect(cluster.node(1), "stays")
    connect(cluster.node(3), "on-the-killed-node")
    operator = operators(cluster.node(1))
    assert set(listed(operator)[0]) >= {"stays", "on-the-killed-node"}

    # A node that stops cleanly leaves the cluster at once: not missing, just gone.
    cluster.stop(2)
    assert "did not answer" not in listed(operator)[1]

    cluster.kill(3)
    seen, warnings = listed(operator)
    assert "stays" in seen and "on-the-killed-node" not in seen
    assert "node(s) node-3 did not answer" in warnings
    page = operator.api.get("/connections").json()
    assert page["missing_nodes"] == ["node-3"]
    assert operator.api.get("/instance").json()["missing_nodes"] == ["node-3"]
    # Another node's clients are kicked as before; node 3's cannot be found, and the answer says why.
    refused = operator.api.post("/connections/on-the-killed-node/kick")
    assert refused.status_code == 404 and "node-3" in refused.json()["message"]

    # Once its entry expires it is no longer a member: no longer missing.
    until(
        "node-3 left out of the listing",
        lambda: operator.api.get("/connections").json()["missing_nodes"] == [],
        timeout=MEMBER_TTL + 2 * WAIT,
    )
    assert "did not answer" not in listed(operator)[1]


def test_readyz_says_503_while_nats_is_down_and_200_once_it_is_back(
    start_cluster: Callable[..., ClusterNodes], servers: ClusterServers
) -> None:
    cluster = start_cluster((1,))
    node = cluster.node(1)
    assert readiness(node).status_code == 200
    nats = servers.nats
    try:
        for index in range(len(nats.servers)):
            nats.stop(index)
        down = until(
            "/readyz answering 503", lambda: (answer := readiness(node)).status_code == 503 and answer
        )
        assert down.json() == {"ready": False, "missing": ["nats"]}
        assert node.metrics()["certmq_cluster_nats_connected"] == 0
    finally:
        nats.start()
    until("/readyz answering 200 again", lambda: readiness(node).status_code == 200, timeout=3 * WAIT)
    metrics = node.metrics()
    assert metrics["certmq_cluster_nats_connected"] == 1
    assert metrics["certmq_cluster_nats_reconnects_total"] >= 1


def signed_call(node: RunningBroker, parameters: dict[str, str]) -> httpx.Response:
    """A signed GET of the RPC API on ``node``, with the parameters (and nonce) given."""
    return httpx.get(f"http://{node.host}:{node.http_port}/?{query_string(parameters)}", timeout=10)


def test_a_signed_request_is_accepted_once_by_the_cluster(shared_cluster: ClusterNodes) -> None:
    cluster = shared_cluster
    info = cluster.node(1).init_info
    parameters = {
        "Action": "ListCaCertificate",
        "Version": VERSION,
        "MqttInstanceId": info["instance_id"],
        "PageNo": "1",
        "PageSize": "10",
    }
    request = sign_rpc("GET", parameters, info["access_key_id"], info["access_key_secret"])
    first = signed_call(cluster.node(1), request)
    assert first.status_code == 200, first.text
    # The same request, its nonce and all, to the other node, and back to the first.
    for node in (2, 1):
        replayed = signed_call(cluster.node(node), request)
        assert (replayed.status_code, replayed.json().get("Code")) == (403, "SignatureNonceUsed"), (
            replayed.text
        )


def test_the_rate_limit_counts_the_calls_on_every_node(start_cluster: Callable[..., ClusterNodes]) -> None:
    burst = 4
    # Hardly any refill: the burst is all an AccessKey has during the test.
    cluster = start_cluster((1, 2, 3), CERTMQ_API_RATE_LIMIT="0.001", CERTMQ_API_RATE_BURST=str(burst))
    info = cluster.node(1).init_info
    sdks = [
        sdk_client(f"{node.host}:{node.http_port}", info["access_key_id"], info["access_key_secret"])
        for node in (cluster.node(number) for number in (1, 2, 3))
    ]
    request = models.GetCaCertificateRequest(mqtt_instance_id=info["instance_id"], sn="00")
    outcomes = []
    for call in range(burst + 2):
        try:
            sdks[call % 3].get_ca_certificate(request)
        except ThrottlingException:
            outcomes.append("throttled")
        except Exception as error:  # the CA does not exist: the call was counted and answered
            outcomes.append(getattr(error, "code", type(error).__name__))
        else:
            outcomes.append("answered")
    assert outcomes[:burst] == ["FindCaBySnError"] * burst
    assert outcomes[burst:] == ["throttled", "throttled"]
