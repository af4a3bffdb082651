"""What the nodes of a cluster ask each other for their management views, and answer: JSON in the
payloads of NATS requests and replies (certmq.cluster.control). Sans-io: values in, bytes out,
and back; bytes that are not such a message raise :class:`ControlMessageError`.

=================  ==========================================  =========================================
verb               request                                     reply
=================  ==========================================  =========================================
``connections``    a :class:`~certmq.control.ConnectionQuery`  ``{"items": [connection …], "total": n}``
``kick``           ``{"client_id": …}``                        ``{"kicked": true | false}``
``status``         ``{}``                                      a :class:`~certmq.control.NodeStatus`
``conform``        ``{"mode": "one-way" | "mutual"}``          ``{"count": n}``, disconnected
``nonconforming``  ``{"mode": …}``                             ``{"count": n}``, to disconnect
=================  ==========================================  =========================================

``conform`` disconnects the node's live connections that the mode refuses and counts them;
``nonconforming`` only counts them.

Any reply may instead be ``{"error": "…"}``: the node could not read the request.

A node's connections travel in parts: each reply holds the first of those the query picks, up to
:data:`PART_BYTES` of JSON, and ``total``, how many it picks in all; the asking node asks again
for those after the last client id it was given (``after``) until it has them all, or the first
``first`` of them. So no reply outgrows what a NATS server carries, however many clients a node
has.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from certmq.auth.identity import Identity
from certmq.auth.mode import AuthMode
from certmq.control import ConnectionInfo, ConnectionQuery, LiveConnections, NodeStatus

CONNECTIONS = "connections"
KICK = "kick"
STATUS = "status"
CONFORM = "conform"
NONCONFORMING = "nonconforming"
VERBS = (CONNECTIONS, KICK, STATUS, CONFORM, NONCONFORMING)

# Connections per part at most, and the size a part stops growing at (well below the 1 MB that
# a NATS server carries by default).
PART_ITEMS = 1000
PART_BYTES = 256 * 1024


class ControlMessageError(ValueError):
    """Bytes that are not a control message this version reads."""


def _load(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ControlMessageError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ControlMessageError("not a JSON object")
    refusal = value.get("error")
    if refusal is not None:
        raise ControlMessageError(f"the node answered: {refusal}")
    return value


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def error_reply(message: str) -> bytes:
    return _dump({"error": message})


def _text(value: dict[str, Any], name: str) -> str:
    item = value.get(name, "")
    if not isinstance(item, str):
        raise ControlMessageError(f"{name} is not a string")
    return item


def _number(value: dict[str, Any], name: str) -> int:
    item = value.get(name)
    if not isinstance(item, int) or isinstance(item, bool) or item < 0:
        raise ControlMessageError(f"{name} is not a count")
    return item


def _time(value: dict[str, Any], name: str) -> datetime:
    try:
        return datetime.fromisoformat(_text(value, name))
    except ValueError:
        raise ControlMessageError(f"{name} is not an ISO 8601 time") from None


# --- connections ----------------------------------------------------------------------------------


def connections_request(query: ConnectionQuery) -> bytes:
    return _dump(
        {
            "listener": query.listener,
            "client_id": query.client_id,
            "client_id_contains": query.client_id_contains,
            "first": query.first,
            "after": query.after,
        }
    )


def read_connections_request(data: bytes) -> ConnectionQuery:
    value = _load(data)
    first = value.get("first")
    return ConnectionQuery(
        listener=_text(value, "listener"),
        client_id=_text(value, "client_id"),
        client_id_contains=_text(value, "client_id_contains"),
        first=None if first is None else _number(value, "first"),
        after=_text(value, "after"),
    )


def _connection(info: ConnectionInfo) -> dict[str, Any]:
    return {
        "client_id": info.client_id,
        "listener": info.listener,
        "peer": info.peer,
        "protocol_version": info.protocol_version,
        "connected_at": info.connected_at.isoformat(),
        "identity": info.identity.fields(),
        "node": info.node,
    }


def _read_connection(value: Any) -> ConnectionInfo:
    if not isinstance(value, dict):
        raise ControlMessageError("a connection is not a JSON object")
    identity = value.get("identity", {})
    if not isinstance(identity, dict) or not all(isinstance(item, str) for item in identity.values()):
        raise ControlMessageError("a connection's identity is not an object of strings")
    try:
        who = Identity.from_fields(identity)
    except ValueError:
        raise ControlMessageError("a connection's identity has a malformed time") from None
    return ConnectionInfo(
        client_id=_text(value, "client_id"),
        listener=_text(value, "listener"),
        peer=_text(value, "peer"),
        protocol_version=_number(value, "protocol_version"),
        connected_at=_time(value, "connected_at"),
        identity=who,
        node=_text(value, "node"),
    )


def connections_reply(picked: LiveConnections) -> bytes:
    """The first part of ``picked`` (a node's connections that a query picks, in order) that
    fits in :data:`PART_BYTES`, at least one; ``total`` says how many there are in all."""
    encoded: list[str] = []
    size = 0
    for info in picked.items[:PART_ITEMS]:
        item = json.dumps(_connection(info), ensure_ascii=False, separators=(",", ":"))
        if encoded and size + len(item) > PART_BYTES:
            break
        encoded.append(item)
        size += len(item) + 1
    return f'{{"total":{picked.total},"items":[{",".join(encoded)}]}}'.encode()


def read_connections_reply(data: bytes) -> LiveConnections:
    value = _load(data)
    items = value.get("items")
    if not isinstance(items, list):
        raise ControlMessageError("items is not a list")
    return LiveConnections([_read_connection(item) for item in items], _number(value, "total"))


def part_query(query: ConnectionQuery, received: list[ConnectionInfo]) -> ConnectionQuery | None:
    """What to ask a node for next, having ``received`` the connections it sent so far for
    ``query``; None when that is all ``query`` wants."""
    if query.first is None:
        wanted = PART_ITEMS
    else:
        wanted = min(PART_ITEMS, query.first - len(received))
        if wanted <= 0 and received:
            return None
    after = received[-1].client_id if received else query.after
    return ConnectionQuery(
        listener=query.listener,
        client_id=query.client_id,
        client_id_contains=query.client_id_contains,
        first=max(0, wanted),
        after=after,
    )


# --- kick -----------------------------------------------------------------------------------------


def kick_request(client_id: str) -> bytes:
    return _dump({"client_id": client_id})


def read_kick_request(data: bytes) -> str:
    return _text(_load(data), "client_id")


def kick_reply(kicked: bool) -> bytes:
    return _dump({"kicked": kicked})


def read_kick_reply(data: bytes) -> bool:
    kicked = _load(data).get("kicked")
    if not isinstance(kicked, bool):
        raise ControlMessageError("kicked is not true or false")
    return kicked


# --- conform and nonconforming: the connections an auth mode refuses, disconnected or counted ----


def mode_request(mode: AuthMode) -> bytes:
    return _dump({"mode": mode.value})


def read_mode_request(data: bytes) -> AuthMode:
    mode = _text(_load(data), "mode")
    if mode not in tuple(AuthMode):
        raise ControlMessageError(f"mode is not one of {', '.join(AuthMode)}")
    return AuthMode(mode)


def count_reply(count: int) -> bytes:
    return _dump({"count": count})


def read_count_reply(data: bytes) -> int:
    return _number(_load(data), "count")


# --- status ---------------------------------------------------------------------------------------


def status_reply(status: NodeStatus) -> bytes:
    return _dump(
        {
            "name": status.name,
            "http": status.http,
            "started_at": status.started_at.isoformat(),
            "stats": status.stats,
        }
    )


def read_status_reply(data: bytes) -> NodeStatus:
    value = _load(data)
    stats = value.get("stats")
    if not isinstance(stats, dict) or not all(
        isinstance(count, int) and not isinstance(count, bool) for count in stats.values()
    ):
        raise ControlMessageError("stats is not an object of integers")
    return NodeStatus(_text(value, "name"), _text(value, "http"), _time(value, "started_at"), stats)
