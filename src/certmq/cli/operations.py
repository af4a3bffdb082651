"""``certmq operations``: search the operations log of the ApsaraMQ-compatible RPC API."""

from __future__ import annotations

import argparse
from typing import Any

from certmq.cli.log_search import FOLDED_COLUMNS, add_search_arguments, search
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


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "operations",
        help="search the operations log of the ApsaraMQ-compatible API",
        description="Search the calls made to the ApsaraMQ-compatible RPC API, newest first: which "
        "AccessKey called which action on what, and what it was answered. '(?)' marks an AccessKey "
        "that a refused call only claimed. Repeated calls that were not authenticated are folded: "
        "COUNT says how many one row stands for, from FIRST SEEN to TIME, and PEER is their source.",
    )
    parser.add_argument("--access-key", metavar="ID", help="only the calls of this AccessKeyId")
    parser.add_argument("--action", metavar="ACTION", help="only this action, e.g. DeleteCaCertificate")
    parser.add_argument("--code", metavar="CODE", help="only this outcome: Success or an error code")
    add_search_arguments(parser, "calls")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    filters = {"access_key_id": args.access_key, "action": args.action, "code": args.code}
    return search(args, "/operations", filters, OPERATION_COLUMNS, "no operations match")
