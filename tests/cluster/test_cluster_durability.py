"""What a node's sessions survive: each node keeps them in JetStream (cluster.state_storage =
"nats"), not in its data directory, and its clients find them again after a kill -9 or a
rolling restart of every node."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from cluster_nodes import ClusterNodes
from paho.mqtt.packettypes import PacketTypes

from broker_process import RunningBroker
from mqtt_clients import Clients
from paho_client import WAIT, PahoClient, properties

# A message of the stream that a killed node had not acknowledged is sent to it again once
# the stream's acknowledgement wait (30 s) is over.
REDELIVERY = 30 + 3 * WAIT


@pytest.fixture
def cluster(start_cluster: Callable[..., ClusterNodes]) -> ClusterNodes:
    return start_cluster()


def receive_all(client: PahoClient, expected: list[bytes], timeout: float = REDELIVERY) -> list[bytes]:
    """What ``client`` receives until it has every payload of ``expected``."""
    received: list[bytes] = []
    deadline = time.monotonic() + timeout
    while set(expected) - set(received):
        assert time.monotonic() < deadline, f"missing: {sorted(set(expected) - set(received))}"
        received += [message.payload for message in client.drain()]
        time.sleep(0.02)
    return received


@pytest.mark.nodes(1, 2)
def test_a_killed_node_has_its_sessions_and_their_queued_messages_from_jetstream_not_its_disk(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    client_id = f"durable-{uuid.uuid4().hex[:8]}"
    expiry = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    subscriber = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    subscriber.connect(clean_start=True, props=expiry)
    assert subscriber.subscribe(f"{topic}/#", qos=1) == [1]
    subscriber.disconnect()

    # Published on node 2, acknowledged once the cluster's stream has them, queued on node 1.
    publisher = clients.for_broker(cluster.node(2)).connected()
    sent = [f"queued {number}".encode() for number in range(5)]
    for payload in sent:
        publisher.publish(f"{topic}/readings", payload, qos=1)
    deadline = time.monotonic() + WAIT
    while cluster.node(1).metrics()["certmq_queued_messages"] < len(sent):
        assert time.monotonic() < deadline, "node 1 did not queue the messages"
        time.sleep(0.02)

    cluster.kill(1)
    data_dir = cluster.node(1).data_dir
    assert not (data_dir / "journal").exists() and not (data_dir / "broker-state.db").exists()
    # What a node with cluster.state_storage = "local" would have left: not read, and said so.
    (data_dir / "broker-state.db").write_bytes(b"")
    cluster.start(1)
    assert f"{data_dir} holds sessions and retained messages kept there before" in cluster.node(1).log_tail(
        200
    )

    back = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    result = back.connect(clean_start=False, props=expiry)
    assert result.session_present
    # All of them, in order; one may come twice (QoS 1) if the node was killed between writing
    # it to its journal and acknowledging it to the stream.
    assert list(dict.fromkeys(receive_all(back, sent))) == sent


def reconnecting_client(node: RunningBroker, client_id: str) -> mqtt.Client:
    """A paho client that keeps its session (MQTT 5, expiry 600 s) and reconnects by itself,
    as devices do, when its node goes away; connected."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(min_delay=0.2, max_delay=1)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect_async(
        node.host,
        node.tcp_port,
        clean_start=False,
        properties=properties(PacketTypes.CONNECT, SessionExpiryInterval=600),
    )
    client.loop_start()
    assert connected.wait(WAIT), f"{client_id} did not connect"
    return client


def test_a_rolling_restart_of_every_node_loses_no_acknowledged_message(
    cluster: ClusterNodes, topic: str
) -> None:
    # Node 1 holds the subscriber's session, node 2 the publisher's; each node is restarted in
    # turn (SIGTERM, then started again) while the publisher goes on, both reconnecting alone.
    received: list[bytes] = []
    subscriber = reconnecting_client(cluster.node(1), f"rolling-sub-{uuid.uuid4().hex[:6]}")
    subscriber.on_message = lambda _client, _userdata, message: received.append(message.payload)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe(f"{topic}/steady", qos=1)
    assert subscribed.wait(WAIT)
    publisher = reconnecting_client(cluster.node(2), f"rolling-pub-{uuid.uuid4().hex[:6]}")
    published: list[tuple[bytes, mqtt.MQTTMessageInfo]] = []
    stop = threading.Event()

    def publish() -> None:
        number = 0
        while not stop.is_set():
            if publisher.is_connected():
                payload = f"steady {number}".encode()
                # In flight when its node goes away: sent again by paho once it is back.
                published.append((payload, publisher.publish(f"{topic}/steady", payload, qos=1)))
                number += 1
            time.sleep(0.02)

    sender = threading.Thread(target=publish)
    sender.start()
    try:
        for number in (1, 2, 3):
            time.sleep(1)
            cluster.restart(number)
        time.sleep(1)
    finally:
        stop.set()
        sender.join()
    try:
        # Those paho refused at once (its node went away between the check and the publish)
        # were never the broker's to keep.
        taken = [(payload, info) for payload, info in published if info.rc == mqtt.MQTT_ERR_SUCCESS]
        for _, info in taken:
            info.wait_for_publish(REDELIVERY)
        acknowledged = [payload for payload, info in taken if info.is_published()]
        assert len(acknowledged) == len(taken) > 100, "paho gave up on some messages"
        deadline = time.monotonic() + REDELIVERY
        while set(acknowledged) - set(received):
            missing = set(acknowledged) - set(received)
            assert time.monotonic() < deadline, (
                f"{len(missing)} of {len(acknowledged)} lost: {sorted(missing)[:5]}"
            )
            time.sleep(0.1)
        # In the order published (a message may come twice, as QoS 1 allows).
        kept = set(acknowledged)
        assert [payload for payload in dict.fromkeys(received) if payload in kept] == acknowledged
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()


@pytest.mark.nodes(1, 2)
def test_a_killed_node_that_stays_down_has_its_sessions_adopted_where_their_clients_reconnect(
    cluster: ClusterNodes, clients: Clients, topic: str
) -> None:
    # The subscriber takes 3 messages at a time and acknowledges none: 3 are in flight on node
    # 1 when it is killed, 5 queued behind them.
    client_id = f"adopted-{uuid.uuid4().hex[:8]}"
    subscriber = clients.for_broker(cluster.node(1)).paho(client_id=client_id)
    subscriber.client.manual_ack_set(True)
    subscriber.connect(
        clean_start=True, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=600, ReceiveMaximum=3)
    )
    assert subscriber.subscribe(f"{topic}/#", qos=1) == [1]
    publisher = clients.for_broker(cluster.node(2)).connected()
    before = [f"before {number}".encode() for number in range(8)]
    for payload in before:
        publisher.publish(f"{topic}/readings", payload, qos=1)
    assert [message.payload for message in subscriber.expect_messages(3)] == before[:3]
    deadline = time.monotonic() + WAIT
    while cluster.node(1).metrics()["certmq_queued_messages"] < 5:
        assert time.monotonic() < deadline, "node 1 did not queue the messages"
        time.sleep(0.02)

    cluster.kill(1)
    # Acknowledged by node 2 while node 1 is gone and its sessions are not adopted yet.
    after = [f"after {number}".encode() for number in range(3)]
    for payload in after:
        publisher.publish(f"{topic}/readings", payload, qos=1)

    back = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
    assert back.connect(
        clean_start=False, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    ).session_present
    received = receive_all(back, before + after)
    assert list(dict.fromkeys(received)) == before + after
    assert "adopted 1 sessions of node" in cluster.node(2).log_tail(200)
    # The session is node 2's now, in its journal: it survives node 2 too.
    back.disconnect()
    publisher.publish(f"{topic}/readings", b"queued on node 2", qos=1)
    cluster.kill(2)
    cluster.start(2)
    again = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
    assert again.connect(
        clean_start=False, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    ).session_present
    assert again.expect_message().payload == b"queued on node 2"


def test_the_will_of_a_session_on_a_node_that_stays_down_is_published_once_by_another(
    start_cluster: Callable[..., ClusterNodes], request: pytest.FixtureRequest, topic: str
) -> None:
    cluster = start_cluster((1, 2), CERTMQ_CLUSTER_ADOPTION_GRACE="2")
    clients = Clients(cluster.node(1), request)
    try:
        watcher = clients.for_broker(cluster.node(2)).connected()
        assert watcher.subscribe(f"{topic}/will", qos=1) == [1]
        device = clients.for_broker(cluster.node(1)).paho(client_id=f"will-{uuid.uuid4().hex[:8]}")
        device.will_set(
            f"{topic}/will", b"gone", qos=1, props=properties(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
        )
        device.connect(clean_start=True, props=properties(PacketTypes.CONNECT, SessionExpiryInterval=60))

        cluster.kill(1)
        # No client comes back: node 2 adopts node 1's sessions once it has been gone
        # cluster.adoption_grace seconds, and the will, due by then, goes out from there.
        assert watcher.expect_message(timeout=30).payload == b"gone"
        time.sleep(2)
        assert watcher.drain() == []
    finally:
        clients.close_all()


def test_a_full_stream_refuses_new_messages_with_0x97_and_drops_none_acknowledged(
    start_cluster: Callable[..., ClusterNodes], request: pytest.FixtureRequest, topic: str
) -> None:
    cluster = start_cluster((1, 2), CERTMQ_CLUSTER_MESSAGE_STREAM_BYTES=str(64 * 1024))
    clients = Clients(cluster.node(1), request)
    try:
        client_id = f"lagging-{uuid.uuid4().hex[:8]}"
        expiry = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
        subscriber = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
        subscriber.connect(clean_start=True, props=expiry)
        assert subscriber.subscribe(f"{topic}/#", qos=1) == [1]
        subscriber.disconnect()
        # Node 2 is gone: its consumer of the stream takes nothing, and the stream fills up.
        cluster.kill(2)

        publisher = clients.for_broker(cluster.node(1)).connected()
        answers: dict[int, int] = {}
        publisher.client.on_publish = lambda _client, _userdata, mid, reason, _props: answers.update(
            {mid: reason.value}
        )
        sent: list[tuple[bytes, int]] = []
        while len(sent) < 400 and not any(code == 0x97 for code in answers.values()):
            payload = f"{len(sent):04d}".encode().ljust(1024, b".")
            info = publisher.publish(f"{topic}/load", payload, qos=1)
            sent.append((payload, info.mid))
        for number in range(3):  # still refused: nothing old is dropped to make room
            payload = f"more {number}".encode().ljust(1024, b".")
            sent.append((payload, publisher.publish(f"{topic}/load", payload, qos=1).mid))
        accepted = [payload for payload, mid in sent if answers[mid] == 0]
        refused = [payload for payload, mid in sent if answers[mid] == 0x97]
        assert len(accepted) + len(refused) == len(sent)
        assert 30 < len(accepted) < 70 and len(refused) >= 4, (len(accepted), len(refused))
        assert cluster.node(1).metrics()["certmq_cluster_store_full_total"] == len(refused)

        cluster.start(2)
        back = clients.for_broker(cluster.node(2)).paho(client_id=client_id)
        assert back.connect(clean_start=False, props=expiry).session_present
        received = receive_all(back, accepted)
        assert list(dict.fromkeys(received)) == accepted
        # Every node has taken them now: the stream lets them go, and takes new messages again.
        deadline = time.monotonic() + 30
        while True:
            info = publisher.publish(f"{topic}/load", b"after".ljust(1024, b"."), qos=1)
            if answers[info.mid] == 0:
                break
            assert time.monotonic() < deadline, "the stream stayed full"
            time.sleep(1)
        assert back.expect_message().payload.startswith(b"after")
    finally:
        clients.close_all()
