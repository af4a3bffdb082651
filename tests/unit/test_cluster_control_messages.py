"""The management view of a cluster without I/O: which connections a query picks, how the answers
of several nodes merge, the messages the nodes exchange for it, and a node's connections read in
parts (certmq.control, certmq.cluster.control_messages, certmq.cluster.control)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.auth.mode import AuthMode
from certmq.cluster import control_messages as messages
from certmq.cluster.control import PartedListing, read_in_parts
from certmq.cluster.control_messages import PART_BYTES, PART_ITEMS, ControlMessageError
from certmq.control import (
    ClusterStatus,
    ConnectionInfo,
    ConnectionQuery,
    LiveConnections,
    NodeStatus,
    merge_connections,
    select_connections,
)

CONNECTED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEVICE = Identity(
    ca_sn="0a", device_sn="01", cn="sensor", certificate_not_after=datetime(2030, 1, 1, tzinfo=UTC)
)


def connection(
    client_id: str, node: str = "node-1", listener: str = "tls", identity: Identity = DEVICE
) -> ConnectionInfo:
    return ConnectionInfo(client_id, listener, "127.0.0.1:50000", 5, CONNECTED_AT, identity, node)


def ids(connections: list[ConnectionInfo]) -> list[str]:
    return [item.client_id for item in connections]


# --- picking and merging --------------------------------------------------------------------------


def test_a_query_picks_by_listener_client_id_and_part_and_sorts_by_client_id() -> None:
    live = [connection("c"), connection("a", listener="tcp"), connection("b/x"), connection("ab")]
    assert ids(select_connections(live, ConnectionQuery()).items) == ["a", "ab", "b/x", "c"]
    assert ids(select_connections(live, ConnectionQuery(listener="tcp")).items) == ["a"]
    assert ids(select_connections(live, ConnectionQuery(client_id="ab")).items) == ["ab"]
    assert ids(select_connections(live, ConnectionQuery(client_id_contains="b")).items) == ["ab", "b/x"]
    assert ids(select_connections(live, ConnectionQuery(after="ab")).items) == ["b/x", "c"]
    first = select_connections(live, ConnectionQuery(first=2))
    assert ids(first.items) == ["a", "ab"] and first.total == 4


def test_the_answers_of_several_nodes_merge_in_client_id_order() -> None:
    one = select_connections([connection("d", "node-1"), connection("a", "node-1")], ConnectionQuery())
    two = select_connections([connection("c", "node-2"), connection("b", "node-2")], ConnectionQuery())
    gone = LiveConnections([], 0, ["node-3"])
    merged = merge_connections([one, two, gone], ConnectionQuery())
    assert [(item.client_id, item.node) for item in merged.items] == [
        ("a", "node-1"),
        ("b", "node-2"),
        ("c", "node-2"),
        ("d", "node-1"),
    ]
    assert merged.total == 4 and merged.missing_nodes == ["node-3"]
    page = merge_connections([one, two], ConnectionQuery(first=3))
    assert ids(page.items) == ["a", "b", "c"] and page.total == 4


def test_a_cluster_status_sums_each_counter_over_the_nodes() -> None:
    status = ClusterStatus(
        [
            NodeStatus("node-1", "", CONNECTED_AT, {"clients_connected": 2, "sessions": 3}),
            NodeStatus("node-2", "", CONNECTED_AT, {"clients_connected": 5}),
        ],
        ["node-3"],
    )
    assert status.total("clients_connected") == 7
    assert status.total("sessions") == 3
    assert status.total("absent") == 0


# --- the messages ---------------------------------------------------------------------------------


def test_a_connections_request_reads_back_as_the_query_sent() -> None:
    query = ConnectionQuery(listener="wss", client_id="x", client_id_contains="y", first=7, after="m")
    assert messages.read_connections_request(messages.connections_request(query)) == query
    assert (
        messages.read_connections_request(messages.connections_request(ConnectionQuery()))
        == ConnectionQuery()
    )


@pytest.mark.parametrize("identity", [DEVICE, ANONYMOUS, Identity(access_key_id="LTAI5")])
def test_connections_read_back_as_sent_identity_and_node_included(identity: Identity) -> None:
    sent = [connection("GID_x@@@dev 1/ü", "node-2", "wss", identity), connection("z", "node-2")]
    reply = messages.connections_reply(LiveConnections(sent, 2))
    received = messages.read_connections_reply(reply)
    assert received.items == sent and received.total == 2


def test_a_part_stops_growing_at_its_size_but_holds_one_connection_at_least() -> None:
    long_id = "x" * 60_000
    many = [connection(f"{long_id}{number:03}") for number in range(10)]
    reply = messages.connections_reply(LiveConnections(many, len(many)))
    part = messages.read_connections_reply(reply)
    assert len(reply) <= PART_BYTES + 1024
    assert 1 <= len(part.items) < len(many) and part.total == len(many)
    huge = connection("y" * (PART_BYTES + 10))
    alone = messages.read_connections_reply(messages.connections_reply(LiveConnections([huge], 1)))
    assert ids(alone.items) == [huge.client_id]
    lots = [connection(f"c{number:05}") for number in range(PART_ITEMS + 5)]
    assert (
        len(
            messages.read_connections_reply(
                messages.connections_reply(LiveConnections(lots, len(lots)))
            ).items
        )
        == PART_ITEMS
    )


def test_parts_are_asked_for_after_the_last_client_id_received_until_the_first_wanted() -> None:
    everything = ConnectionQuery(listener="tls")
    first = messages.part_query(everything, [])
    assert first == ConnectionQuery(listener="tls", first=PART_ITEMS)
    received = [connection("a"), connection("k")]
    assert messages.part_query(everything, received) == ConnectionQuery(
        listener="tls", first=PART_ITEMS, after="k"
    )
    page = ConnectionQuery(first=3)
    assert messages.part_query(page, []) == ConnectionQuery(first=3)
    assert messages.part_query(page, received) == ConnectionQuery(first=1, after="k")
    assert messages.part_query(page, [*received, connection("m")]) is None
    # Only the count: one request, for no connection.
    assert messages.part_query(ConnectionQuery(first=0), []) == ConnectionQuery(first=0)


def test_kick_and_status_read_back_as_sent() -> None:
    assert messages.read_kick_request(messages.kick_request("GID_a@@@b/c")) == "GID_a@@@b/c"
    assert messages.read_kick_reply(messages.kick_reply(True)) is True
    assert messages.read_kick_reply(messages.kick_reply(False)) is False
    status = NodeStatus("node-2", "127.0.0.1:8080", CONNECTED_AT, {"clients_connected": 4, "sessions": 9})
    assert messages.read_status_reply(messages.status_reply(status)) == status
    for mode in AuthMode:
        assert messages.read_mode_request(messages.mode_request(mode)) is mode
    assert messages.read_count_reply(messages.count_reply(7)) == 7


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"error": "unknown verb"}',
        b'{"total": -1, "items": []}',
        b'{"total": 1, "items": {}}',
        b'{"total": 1, "items": [{"client_id": 5}]}',
        b'{"total": 1, "items": [{"client_id": "a", "listener": "tls", "peer": "", "protocol_version": 5,'
        b' "connected_at": "yesterday", "identity": {}, "node": "n"}]}',
        b'{"total": 1, "items": [{"client_id": "a", "listener": "tls", "peer": "", "protocol_version": 5,'
        b' "connected_at": "2026-12-01T12:00:00+00:00", "identity": {"cert.not_after": "soon"}, "node": "n"}]}',
    ],
)
def test_what_is_not_a_connections_reply_is_refused_with_the_reason(data: bytes) -> None:
    with pytest.raises(ControlMessageError):
        messages.read_connections_reply(data)


@pytest.mark.parametrize(
    ("read", "data"),
    [
        (messages.read_connections_request, b'{"first": "ten"}'),
        (messages.read_connections_request, b'{"listener": 4}'),
        (messages.read_kick_request, b'{"client_id": null}'),
        (messages.read_kick_reply, b'{"kicked": "yes"}'),
        (messages.read_mode_request, b'{"mode": "open"}'),
        (messages.read_mode_request, b'{}'),
        (messages.read_count_reply, b'{"count": -1}'),
        (messages.read_count_reply, b'{"count": true}'),
        (messages.read_status_reply, b'{"name": "n", "http": "", "started_at": "2026-12-01T12:00:00",'
         b' "stats": {"sessions": "3"}}'),
        (messages.read_status_reply, b'{"name": "n", "http": "", "started_at": 5, "stats": {}}'),
    ],
)  # fmt: skip
def test_what_is_not_a_request_or_reply_of_its_verb_is_refused(read: object, data: bytes) -> None:
    with pytest.raises(ControlMessageError):
        read(data)  # type: ignore[operator]


def test_an_error_reply_says_why() -> None:
    with pytest.raises(ControlMessageError, match="unknown verb"):
        messages.read_kick_reply(messages.error_reply("unknown verb 'x'"))
    assert json.loads(messages.error_reply("why")) == {"error": "why"}


class _CountingNode:
    """A node's own connections, counting how often they are picked."""

    def __init__(self, connections: list[ConnectionInfo]) -> None:
        self.connections = connections
        self.picked = 0

    def local_connections(self, query: ConnectionQuery) -> LiveConnections:
        self.picked += 1
        return select_connections(self.connections, query)


async def _read_in_parts(listing: PartedListing, query: ConnectionQuery) -> tuple[list[ConnectionInfo], int]:
    """What the asking node reads, each part through the bytes of a reply, without NATS."""

    async def ask(part: ConnectionQuery) -> LiveConnections:
        request = messages.read_connections_request(messages.connections_request(part))
        return messages.read_connections_reply(messages.connections_reply(listing.part(request)))

    read = await read_in_parts(ask, query)
    assert read is not None
    return read.items, read.total


async def test_a_listing_in_parts_is_whole_in_order_and_sorted_once() -> None:
    many = [
        connection(f"client-{number:05}", listener="tls" if number % 3 else "tcp") for number in range(2500)
    ]
    node = _CountingNode(list(reversed(many)))
    listing = PartedListing(node)  # type: ignore[arg-type]
    received, total = await _read_in_parts(listing, ConnectionQuery())
    assert received == many and total == 2500
    assert node.picked == 1
    on_tcp, total = await _read_in_parts(listing, ConnectionQuery(listener="tcp"))
    assert on_tcp == [item for item in many if item.listener == "tcp"] and total == len(on_tcp)
    page, total = await _read_in_parts(listing, ConnectionQuery(first=30))
    assert page == many[:30] and total == 2500


async def test_a_node_whose_part_does_not_come_answered_nothing() -> None:
    many = [connection(f"client-{number:05}") for number in range(PART_ITEMS + 1)]
    listing = PartedListing(_CountingNode(many))  # type: ignore[arg-type]
    asked: list[ConnectionQuery] = []

    async def first_part_only(part: ConnectionQuery) -> LiveConnections | None:
        asked.append(part)
        return listing.part(part) if len(asked) == 1 else None

    assert await read_in_parts(first_part_only, ConnectionQuery()) is None
    assert [part.after for part in asked] == ["", f"client-{PART_ITEMS - 1:05}"]
