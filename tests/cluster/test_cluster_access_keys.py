"""AccessKey pairs are the cluster's (docs/cluster.md, "AccessKey pairs"): a pair created through
one node's REST API signs a Signature-mode CONNECT (paho-mqtt) and an RPC call on another node;
deleted through the first node, it is refused by the other one too. As on a single node, a
connection made with the pair before its deletion stays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cluster_nodes import ClusterNodes
from operated_instance import Instance

from certmq.auth.credentials import signature_password, signature_username
from mqtt_clients import Clients
from paho_client import WAIT, PahoClient
from rpc.signing import sign_rpc

BAD_USER_NAME_OR_PASSWORD = 0x86
# How long a change made on one node may take to reach the other before the test fails: a guard,
# not a measurement (the change feed brings it within milliseconds).
REACHES_THE_OTHER_NODE = WAIT


@dataclass(frozen=True)
class Pair:
    id: str
    secret: str


@dataclass
class TwoNodes:
    nodes: ClusterNodes
    clients: Clients
    operator: Instance  # node 1's REST API

    @property
    def instance_id(self) -> str:
        return str(self.nodes.node(1).init_info["instance_id"])

    def signed_client(self, number: int, pair: Pair) -> PahoClient:
        """A paho-mqtt 5.0 client of node ``number`` whose CONNECT is signed with ``pair``."""
        client_id = f"GID_Test@@@{uuid.uuid4().hex[:8]}"
        client = self.clients.for_broker(self.nodes.node(number)).paho(client_id=client_id)
        client.client.username_pw_set(
            signature_username(pair.id, self.instance_id), signature_password(pair.secret, client_id)
        )
        return client

    def connect_code(self, number: int, pair: Pair) -> tuple[int, PahoClient]:
        client = self.signed_client(number, pair)
        return client.connect(expect_success=False).reason_code, client

    def rpc_call(self, number: int, pair: Pair) -> httpx.Response:
        """GetRegisterCode on node ``number``'s RPC API, signed with ``pair`` (HMAC-SHA1)."""
        node = self.nodes.node(number)
        query = sign_rpc("GET", {"Action": "GetRegisterCode", "MqttInstanceId": self.instance_id}, pair.id,
                         pair.secret)  # fmt: skip
        return httpx.get(f"http://{node.host}:{node.http_port}/", params=query, timeout=10)


def until(condition: Callable[[], bool], what: Callable[[], str]) -> None:
    deadline = time.monotonic() + REACHES_THE_OTHER_NODE
    while not condition():
        assert time.monotonic() < deadline, f"not within {REACHES_THE_OTHER_NODE}s: {what()}"
        time.sleep(0.05)


@pytest.fixture
def two_nodes(
    start_cluster: Callable[..., ClusterNodes], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[TwoNodes]:
    nodes = start_cluster((1, 2), CERTMQ_AUTH_ANONYMOUS="false")
    clients = Clients(nodes.node(1), request)
    operator = Instance(nodes.node(1), tmp_path)
    yield TwoNodes(nodes, clients, operator)
    operator.close()
    clients.close_all()


def test_a_pair_created_on_one_node_signs_on_the_other_until_deleted(two_nodes: TwoNodes) -> None:
    created = two_nodes.operator.api.post("/access-keys")
    assert created.status_code == 201, created.text
    pair = Pair(created.json()["id"], created.json()["secret"])

    codes: list[int] = []

    def accepted() -> bool:
        code, client = two_nodes.connect_code(2, pair)
        codes.append(code)
        client.close()
        return code == 0

    until(accepted, lambda: f"node 2 accepts a CONNECT signed with the new pair (it answered {codes[-3:]})")
    kept = two_nodes.signed_client(2, pair)
    kept.connect()
    answer = two_nodes.rpc_call(2, pair)
    assert answer.status_code == 200, answer.text
    assert answer.json()["RegisterCode"]

    deleted = two_nodes.operator.api.delete(f"/access-keys/{pair.id}")
    assert deleted.status_code == 204, deleted.text
    until(
        lambda: two_nodes.connect_code(2, pair)[0] == BAD_USER_NAME_OR_PASSWORD,
        lambda: "node 2 refuses a CONNECT signed with the deleted pair",
    )
    refused = two_nodes.rpc_call(2, pair)
    assert (refused.status_code, refused.json()["Code"]) == (403, "InvalidAccessKeyId.NotFound"), refused.text
    node_2_lists = Instance(two_nodes.nodes.node(2), two_nodes.operator.work)
    try:
        assert pair.id not in [item["id"] for item in node_2_lists.api.get("/access-keys").json()["items"]]
    finally:
        node_2_lists.close()
    # A connection made before the deletion stays, as on a single node.
    kept.assert_connected()
