"""What an operator sees and does in the running broker: its listeners, its live connections, its
counters, and disconnecting one client. The management interfaces reach these through
:class:`certmq.control.BrokerControl`, which :class:`certmq.instance_control.InstanceControl`
implements with the functions here."""

from __future__ import annotations

from collections.abc import Callable

from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.broker.connection import MQTTConnection
from certmq.broker.server import Broker
from certmq.control import ConnectionInfo, ListenerInfo
from certmq.mqtt.reason_codes import ReasonCode


def listeners(broker: Broker) -> list[ListenerInfo]:
    """The listeners open now, with the port each is bound to."""
    return [ListenerInfo(bound.name, bound.host, bound.port) for bound in broker.listeners]


def unopened_listeners(broker: Broker, closed: frozenset[str]) -> list[str]:
    """The MQTT listeners configured, and not kept ``closed`` by the auth mode, that are not
    open: none once the broker has started."""
    listeners = broker.config.listeners
    bound = {listener.name for listener in broker.listeners}
    return [
        name
        for name in MQTT_LISTENERS
        if getattr(listeners, name) and name not in closed and name not in bound
    ]


def connections(broker: Broker, node: str) -> list[ConnectionInfo]:
    """The live connections whose CONNECT was accepted; ``node`` is this node's name."""
    return [
        ConnectionInfo(
            client_id=connection.client_id,
            listener=connection.listener.name,
            peer=connection.peer,
            protocol_version=connection.protocol_version,
            connected_at=connection.connected_at,
            identity=connection.identity,
            node=node,
        )
        for connection in broker.core.connections
        if connection.session is not None
    ]


def count_connections(broker: Broker, matches: Callable[[MQTTConnection], bool]) -> int:
    """How many live connections ``matches`` picks."""
    return sum(1 for connection in broker.core.connections if matches(connection))


def kick(broker: Broker, client_id: str) -> bool:
    """Disconnect the client ``client_id`` as an operator does (5.0: DISCONNECT 0x98), its will
    published; False when it is not connected."""
    connection = broker.core.ownership.connection_of(client_id)
    if connection is None:
        return False
    connection.close(ReasonCode.ADMINISTRATIVE_ACTION, "disconnected by the operator", publish_will=True)
    return True


def stats(broker: Broker) -> dict[str, int]:
    """The broker's counters by metric name: connections by listener, messages, refusals, and
    what its sessions hold."""
    core = broker.core
    counters = core.stats
    # Each listener counted even without a connection, so that no metric disappears; a
    # connection counts once its CONNECT was accepted, as in connections().
    counts = {f"connections_{name}": 0 for name in MQTT_LISTENERS}
    for connection in core.connections:
        if connection.session is not None:
            name = f"connections_{connection.listener.name}"
            counts[name] = counts.get(name, 0) + 1
    counts.update(
        clients_connected=counters.clients_connected,
        messages_received=counters.messages_received,
        messages_sent=counters.messages_sent,
        messages_dropped=counters.messages_dropped,
        bytes_received=counters.bytes_received,
        bytes_sent=counters.bytes_sent,
        tls_handshake_failures=counters.tls_handshake_failures,
        malformed_packets=counters.malformed_packets,
        publishes_denied=counters.publishes_denied,
        wills_dropped=counters.wills_dropped,
        messages_dropped_queue_full=counters.messages_dropped_queue_full,
        retained_refused=counters.retained_refused,
        subscriptions_over_limit=counters.subscriptions_over_limit,
        topics_over_limit=counters.topics_over_limit,
        sessions_over_limit=counters.sessions_over_limit,
    )
    counts.update(core.holdings())
    if broker.balance is not None:
        counts.update(
            worker_connections_handed_over=broker.balance.handed_over,
            worker_connections_taken_over=broker.balance.taken_over,
        )
    return counts
