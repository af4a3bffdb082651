"""Registry changes reach every node: what an operator does through one node's REST API or CLI
takes effect on the devices connected to the others, in mutual TLS with real certificates.

The tests that leave every node running share one cluster; each keeps apart by devices of its
own, and a test that changes a CA registers a CA of its own. The tests that stop a node start a
cluster of their own.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cluster_nodes import ClusterNodes, ClusterServers, RegisteredCa
from openssl_pki import Issued, make_ca, make_device
from operated_instance import Instance, device_sn_of, refused_at_connect

from paho_client import WAIT, PahoClient
from raw_mqtt import ConnectionClosed, RawClient

NOT_AUTHORIZED = 0x87


@dataclass
class MutualCluster:
    """The nodes of a cluster in mutual mode, an operator's view of each (its REST API and
    CLI), and the two CAs of the registry template."""

    nodes: ClusterNodes
    fleet: RegisteredCa
    other: RegisteredCa
    work: Path
    operators: dict[int, Instance] = field(default_factory=dict)

    def operator(self, number: int) -> Instance:
        if number not in self.operators:
            self.operators[number] = Instance(self.nodes.node(number), self.work)
        return self.operators[number]

    def new_device(self, ca: RegisteredCa | None = None) -> Issued:
        name = f"sensor-{uuid.uuid4().hex[:8]}"
        return make_device(self.work / name, (ca or self.fleet).issued, name)

    def new_ca(self, number: int) -> RegisteredCa:
        """A CA of the test's own, made by openssl and registered through node ``number``."""
        name = f"line-{uuid.uuid4().hex[:8]}"
        issued = make_ca(self.work / name, f"{name}-ca")
        return RegisteredCa(issued, self.operator(number).register_ca(issued, name))

    def connected(self, number: int, device: Issued) -> PahoClient:
        """``device`` connected to node ``number``, over mutual TLS with its certificate."""
        client = self.operator(number).device_client(device)
        client.connect()
        return client

    def close(self) -> None:
        for operator in self.operators.values():
            operator.close()


# Mutual mode, no anonymous access, every decision a row of its own in the decision log.
MUTUAL_SETTINGS = {
    "CERTMQ_INSTANCE_AUTH_MODE": "mutual",
    "CERTMQ_AUTH_ANONYMOUS": "false",
    "CERTMQ_AUDIT_FOLD_WINDOW": "0",
}


@pytest.fixture(scope="module")
def shared_nodes(servers: ClusterServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    """Nodes 1, 2 and 3 in mutual mode, shared by the tests that leave them running."""
    with servers.cluster(tmp_path_factory.mktemp("cluster"), (1, 2, 3), **MUTUAL_SETTINGS) as nodes:
        yield nodes


@contextlib.contextmanager
def operated(nodes: ClusterNodes, servers: ClusterServers, work: Path) -> Iterator[MutualCluster]:
    cluster = MutualCluster(nodes, servers.registry.fleet, servers.registry.other, work)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def mutual(shared_nodes: ClusterNodes, servers: ClusterServers, tmp_path: Path) -> Iterator[MutualCluster]:
    """The module's nodes 1, 2 and 3, with the test's own operators."""
    with operated(shared_nodes, servers, tmp_path) as cluster:
        yield cluster


@pytest.fixture
def own_mutual(
    start_cluster: Callable[..., ClusterNodes], servers: ClusterServers, tmp_path: Path
) -> Iterator[MutualCluster]:
    """A cluster of the test's own, of the nodes its ``nodes`` mark names, in mutual mode: for a
    test that stops a node."""
    with operated(start_cluster(**MUTUAL_SETTINGS), servers, tmp_path) as cluster:
        yield cluster


def registered_sn(operator: Instance, ca: RegisteredCa, device: Issued) -> str:
    """The device's serial, once ``operator``'s node lists the device among ``ca``'s: a node
    registers a first-time device within a fraction of a second after letting it in."""
    device_sn = device_sn_of(operator, device)
    deadline = time.monotonic() + WAIT
    while operator.api.get(f"/device-certificates/{ca.sn}/{device_sn}").status_code == 404:
        assert time.monotonic() < deadline, f"{device.cert.stem} is not registered after {WAIT}s"
        time.sleep(0.05)
    return device_sn


def assert_cut_as_not_authorized(client: PahoClient, where: str) -> None:
    try:
        reason = client.wait_disconnected(WAIT)
    except AssertionError:
        raise AssertionError(f"the device on {where} is still connected") from None
    assert reason is not None and reason.value == NOT_AUTHORIZED, f"the device on {where}: {reason}"


def inactivate_through_the_rest_api(operator: Instance, ca_sn: str, device_sn: str) -> None:
    answer = operator.api.post(f"/device-certificates/{ca_sn}/{device_sn}/inactivate")
    assert answer.status_code == 200, answer.text


def inactivate_with_the_cli(operator: Instance, ca_sn: str, device_sn: str) -> None:
    operator.cli("device", "inactivate", ca_sn, device_sn)


# Each way an operator inactivates a device, on a node other than the device's (node 2).
INACTIVATIONS = [
    pytest.param(1, inactivate_through_the_rest_api, id="rest-api-of-node-1"),
    pytest.param(3, inactivate_with_the_cli, id="cli-pointed-at-node-3"),
]


@pytest.mark.parametrize(("operated", "inactivate"), INACTIVATIONS)
def test_a_device_on_node_2_is_cut_when_it_is_inactivated_through_another_node(
    mutual: MutualCluster, operated: int, inactivate: Callable[[Instance, str, str], None]
) -> None:
    device = mutual.new_device()
    client = mutual.connected(2, device)
    device_sn = registered_sn(mutual.operator(operated), mutual.fleet, device)

    inactivate(mutual.operator(operated), mutual.fleet.sn, device_sn)

    assert_cut_as_not_authorized(client, "node 2")
    assert "inactivated" in str(getattr(client.disconnect_properties, "ReasonString", ""))
    assert refused_at_connect(mutual.operator(2), device) == NOT_AUTHORIZED


def test_a_ca_inactivated_on_node_1_cuts_its_devices_on_every_node(mutual: MutualCluster) -> None:
    line = mutual.new_ca(1)
    devices = {number: mutual.new_device(line) for number in (1, 2, 3)}
    for number, device in devices.items():
        wait_until_accepted(mutual.operator(number), device, f"node {number}")
    clients = {number: mutual.connected(number, device) for number, device in devices.items()}
    bystander = mutual.connected(2, mutual.new_device(mutual.other))

    mutual.operator(1).cli("ca", "inactivate", line.sn)

    for number, client in clients.items():
        assert_cut_as_not_authorized(client, f"node {number}")
    bystander.assert_connected()
    for number in (2, 3):
        assert refused_at_connect(mutual.operator(number), devices[number]) == NOT_AUTHORIZED


def test_a_device_registered_on_its_first_connection_to_node_1_is_listed_by_node_2(
    mutual: MutualCluster,
) -> None:
    device = mutual.new_device()
    mutual.connected(1, device)

    device_sn = registered_sn(mutual.operator(2), mutual.fleet, device)
    listing = mutual.operator(2).api.get(
        "/device-certificates", params={"ca_sn": mutual.fleet.sn, "name": device.cert.stem}
    )
    assert listing.status_code == 200, listing.text
    assert [(item["device_sn"], item["status"]) for item in listing.json()["items"]] == [
        (device_sn, "active")
    ]


@pytest.mark.nodes(1, 3)
@pytest.mark.parametrize("halt", ["stop", "kill"], ids=["stopped", "killed"])
def test_a_node_that_was_down_while_a_device_was_inactivated_refuses_the_device_once_restarted(
    own_mutual: MutualCluster, halt: str
) -> None:
    device = own_mutual.new_device()
    own_mutual.connected(3, device).disconnect()
    device_sn = registered_sn(own_mutual.operator(1), own_mutual.fleet, device)

    getattr(own_mutual.nodes, halt)(3)  # SIGTERM, or SIGKILL as a power cut would
    own_mutual.operator(1).cli("device", "inactivate", own_mutual.fleet.sn, device_sn)
    own_mutual.nodes.start(3)

    assert refused_at_connect(own_mutual.operator(3), device) == NOT_AUTHORIZED


def connect_accepted(instance: Instance, device: Issued) -> bool:
    """Whether ``device`` gets a successful CONNACK from the instance now."""
    try:
        client = RawClient("127.0.0.1", instance.broker.tls_port, tls=instance.tls_context(device))
    except (ssl.SSLError, ConnectionError):
        return False
    try:
        return client.connect(f"probe-{uuid.uuid4().hex[:6]}").reason_code == 0
    except (ssl.SSLError, ConnectionClosed, ConnectionError):
        return False
    finally:
        client.close()


def wait_until_accepted(operator: Instance, device: Issued, where: str) -> None:
    """A node learns of a new CA as the registry tells it: the device tries until it is let in."""
    deadline = time.monotonic() + WAIT
    while not connect_accepted(operator, device):
        assert time.monotonic() < deadline, f"{where} still refuses a device of a CA registered {WAIT}s ago"
        time.sleep(0.1)


def test_a_ca_registered_through_node_1_lets_its_devices_connect_to_node_2(mutual: MutualCluster) -> None:
    line = mutual.new_ca(1)
    device = mutual.new_device(line)

    wait_until_accepted(mutual.operator(2), device, "node 2")
    mutual.connected(2, device).assert_connected()
