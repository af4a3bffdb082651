"""Search the calls made to the ApsaraMQ-compatible RPC API, newest first: which AccessKey
called which action on what, and what it was answered. '(?)' marks an AccessKey that a refused
call only claimed. Repeated calls that were not authenticated are folded: COUNT says how many one
row stands for, from FIRST SEEN to TIME, and PEER is their source."""

from __future__ import annotations

from typing import Any

from certmq.cli.log_search import FOLDED_COLUMNS, Filter, LogCommand
from certmq.cli.output import short_time


def _target(operation: dict[str, Any]) -> str:
    parameters = operation.get("parameters") or {}
    return " ".join(
        f"{name}={parameters[name]}" for name in ("Sn", "CaSn", "DeviceSn", "CaName") if name in parameters
    )


OPERATION_COLUMNS = [
    ("TIME", lambda operation: short_time(operation["time"])),
    (
        "ACCESS KEY",
        lambda operation: operation["access_key_id"] + ("" if operation["authenticated"] else " (?)"),
    ),
    ("ACTION", lambda operation: operation["action"]),
    ("TARGET", _target),
    ("STATUS", lambda operation: operation["status"]),
    ("CODE", lambda operation: operation["code"]),
    *FOLDED_COLUMNS,
    ("PEER", lambda operation: operation["peer"]),
    ("REQUEST ID", lambda operation: operation["request_id"]),
]

COMMAND = LogCommand(
    name="operations",
    help="search the operations log of the ApsaraMQ-compatible API",
    description=__doc__,
    filters=[
        Filter("--access-key", "access_key_id", "only the calls of this AccessKeyId", "ID"),
        Filter("--action", "action", "only this action, e.g. DeleteCaCertificate", "ACTION"),
        Filter("--code", "code", "only this outcome: Success or an error code", "CODE"),
    ],
    entries="calls",
    columns=OPERATION_COLUMNS,
    none="no operations match",
)
add_parser = COMMAND.add_parser
