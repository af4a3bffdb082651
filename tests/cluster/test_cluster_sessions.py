"""What a single broker shares between its clients, shared by the nodes of a cluster: the members
of a shared subscription, the retained messages, the client ids and the sessions they name.

The nodes of this module share one cluster; tests keep apart by their topics and client ids.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator

import pytest
from cluster_nodes import ClusterNodes, ClusterServers
from paho.mqtt.packettypes import PacketTypes

from broker_process import RunningBroker
from mqtt_clients import Clients
from paho_client import WAIT, PahoClient, properties

SESSION_TAKEN_OVER = 0x8E


@pytest.fixture(scope="module")
def cluster(servers: ClusterServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    with servers.cluster(tmp_path_factory.mktemp("cluster"), (1, 2)) as nodes:
        yield nodes


def on(clients: Clients, node: RunningBroker, client_id: str | None = None, **connect: object) -> PahoClient:
    return clients.for_broker(node).connected(client_id=client_id, **connect)


@pytest.mark.parametrize("qos", [0, 1])
def test_each_message_of_a_shared_subscription_goes_to_one_member_of_all_the_nodes(
    cluster: ClusterNodes, clients: Clients, topic: str, qos: int
) -> None:
    members = {(number, index): on(clients, cluster.node(number)) for number in (1, 2) for index in range(2)}
    for member in members.values():
        assert member.subscribe(f"$share/workers/{topic}/#", qos=1) == [1]
    publisher = on(clients, cluster.node(1))
    count = 200
    sent = set()
    for index in range(count):
        sent.add(payload := f"job {index}".encode())
        publisher.publish(f"{topic}/job", payload, qos=qos)
        if index % 10 == 9:
            # A round trip now and then: what a node routes in one turn of its loop travels
            # to one node of the group together (docs/cluster.md), so bursts of one turn each.
            sent.add(fence := f"fence {index}".encode())
            publisher.publish(f"{topic}/job", fence, qos=1)
    publisher.publish(f"{topic}/job", b"last", qos=1)
    received: collections.Counter[bytes] = collections.Counter()
    by_node: collections.Counter[int] = collections.Counter()
    deadline = time.monotonic() + WAIT
    expected = sent | {b"last"}
    while sum(received.values()) < len(expected) and time.monotonic() < deadline:
        for (number, _), member in members.items():
            for message in member.drain():
                received[message.payload] += 1
                by_node[number] += 1
        time.sleep(0.02)
    assert set(received) == expected, f"missing: {sorted(expected - set(received))[:5]}"
    assert max(received.values()) == 1, "a message went to two members"
    # The group is spread over both nodes' members: NATS picks a node, the node a member.
    assert set(by_node) == {1, 2}, by_node


def test_a_subscriber_on_another_node_gets_what_was_retained_and_not_what_was_cleared(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    publisher = on(clients, cluster.node(1))
    publisher.publish(f"{topic}/kept", b"kept at qos 1", qos=1, retain=True)
    publisher.publish(f"{topic}/cleared", b"soon gone", qos=1, retain=True)
    publisher.publish(f"{topic}/cleared", b"", qos=1, retain=True)
    subscriber = on(clients, cluster.node(2))
    subscriber.subscribe(f"{topic}/#", qos=1)
    message = subscriber.expect_message()
    assert (message.topic, message.payload, message.retain) == (f"{topic}/kept", b"kept at qos 1", True)
    subscriber.assert_connected()
    assert subscriber.drain() == []


def test_a_node_started_later_has_the_retained_messages_of_the_cluster(
    servers: ClusterServers,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    topic: str,
) -> None:
    with servers.cluster(tmp_path_factory.mktemp("cluster"), (1,)) as nodes:
        clients = Clients(nodes.node(1), request)
        try:
            publisher = on(clients, nodes.node(1))
            publisher.publish(f"{topic}/a", b"retained before node 2 started", qos=0, retain=True)
            publisher.publish(f"{topic}/b", b"also", qos=1, retain=True)
            # Routed to a subscriber on node 1: then it has surely been handed to the cluster.
            check = on(clients, nodes.node(1))
            check.subscribe(f"{topic}/#", qos=1)
            assert len(check.expect_messages(2)) == 2
            nodes.add(2)
            subscriber = on(clients, nodes.node(2))
            subscriber.subscribe(f"{topic}/#", qos=1)
            got = {message.topic: message.payload for message in subscriber.expect_messages(2)}
            assert got == {f"{topic}/a": b"retained before node 2 started", f"{topic}/b": b"also"}
        finally:
            clients.close_all()


def test_a_client_id_connected_on_one_node_is_taken_over_by_a_connect_on_another_with_its_session(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    client_id = f"roaming-{uuid.uuid4().hex[:8]}"
    expiry = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    first = on(clients, cluster.node(1), client_id, clean_start=True, props=expiry)
    first.will_set(f"{topic}/will", b"gone")  # set for the next connect: not this one
    assert first.subscribe(f"{topic}/orders/#", qos=1) == [1]
    second = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
    result = second.connect(clean_start=False, props=expiry)
    # The session moved with the client: present, with its subscription.
    assert result.session_present
    assert first.wait_disconnected() == SESSION_TAKEN_OVER
    publisher = on(clients, cluster.node(1))
    publisher.publish(f"{topic}/orders/1", b"to the roaming client", qos=1)
    message = second.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/orders/1", b"to the roaming client")
    assert first.drain() == []


# 8 short messages travel in the takeover's answer; 24 of 64 KiB do not fit in one NATS
# message (1 MiB by default) and go through the object store.
@pytest.mark.parametrize("count, size", [(8, 16), (24, 65536)])
def test_a_session_taken_over_by_another_node_brings_its_queued_and_in_flight_messages(
    cluster: ClusterNodes, clients: Clients, topic: str, count: int, size: int
) -> None:
    client_id = f"laden-{uuid.uuid4().hex[:8]}"
    # 3 messages at a time, none acknowledged: 3 in flight, the rest queued behind them.
    first = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    first.client.manual_ack_set(True)
    first.connect(
        clean_start=True, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=600, ReceiveMaximum=3)
    )
    assert first.subscribe(f"{topic}/#", qos=1) == [1]
    publisher = on(clients, cluster.node(2))
    sent = [f"{number:04d}".encode().ljust(size, b".") for number in range(count)]
    for payload in sent:
        publisher.publish(f"{topic}/load", payload, qos=1)
    assert [message.payload for message in first.expect_messages(3)] == sent[:3]

    second = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
    assert second.connect(
        clean_start=False, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    ).session_present
    assert first.wait_disconnected() == SESSION_TAKEN_OVER
    # Those in flight first, sent again; then the queue, in order.
    assert [message.payload for message in second.expect_messages(count)] == sent
    assert second.drain() == []


def test_a_clean_start_on_another_node_takes_the_client_id_and_not_its_session(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    client_id = f"fresh-{uuid.uuid4().hex[:8]}"
    expiry = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    first = on(clients, cluster.node(2), client_id, props=expiry)
    first.subscribe(f"{topic}/old/#", qos=1)
    second = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    assert not second.connect(clean_start=True, props=expiry).session_present
    assert first.wait_disconnected() == SESSION_TAKEN_OVER
    on(clients, cluster.node(2)).publish(f"{topic}/old/1", b"for the old session", qos=1)
    second.assert_connected()
    assert second.drain() == []


def test_the_will_of_a_client_taken_over_from_another_node_goes_out(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    watcher = on(clients, cluster.node(2))
    watcher.subscribe(f"{topic}/will", qos=1)
    client_id = f"willing-{uuid.uuid4().hex[:8]}"
    first = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    first.will_set(f"{topic}/will", b"taken over")
    first.connect()
    on(clients, cluster.node(2), client_id)
    assert first.wait_disconnected() == SESSION_TAKEN_OVER
    message = watcher.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/will", b"taken over")
