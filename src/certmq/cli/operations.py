"""``certmq operations``: search the operations log of the ApsaraMQ-compatible RPC API."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from certmq.cli.client import ApiClient, add_instance_arguments
from certmq.cli.errors import CommandError
from certmq.cli.output import print_json_items, print_table, short_time

DEFAULT_LIMIT = 50
BATCH = 1000  # the API's largest answer


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
    ("PEER", lambda operation: operation["peer"]),
    ("REQUEST ID", lambda operation: operation["request_id"]),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "operations",
        help="search the operations log of the ApsaraMQ-compatible API",
        description="Search the calls made to the ApsaraMQ-compatible RPC API, newest first: which "
        "AccessKey called which action on what, and what it was answered. '(?)' marks an AccessKey "
        "that a refused call only claimed.",
    )
    parser.add_argument("--access-key", metavar="ID", help="only the calls of this AccessKeyId")
    parser.add_argument("--action", metavar="ACTION", help="only this action, e.g. DeleteCaCertificate")
    parser.add_argument("--code", metavar="CODE", help="only this outcome: Success or an error code")
    parser.add_argument(
        "--since", metavar="TIME", help="from this time on, ISO 8601 (UTC unless a zone is given)"
    )
    parser.add_argument("--until", metavar="TIME", help="before this time, ISO 8601")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help=f"at most N calls (default: {DEFAULT_LIMIT})")  # fmt: skip
    add_instance_arguments(parser)
    parser.set_defaults(run=run)


def _batches(client: ApiClient, args: argparse.Namespace) -> Iterator[list[dict[str, Any]]]:
    filters = {
        "access_key_id": args.access_key,
        "action": args.action,
        "code": args.code,
        "since": args.since,
        "until": args.until,
    }
    offset = 0
    while offset < args.limit:
        limit = min(BATCH, args.limit - offset)
        items: list[dict[str, Any]] = client.get("/operations", limit=limit, offset=offset, **filters)[
            "items"
        ]
        if items:
            yield items
        if len(items) < limit:
            return
        offset += len(items)


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be 1 or more")
    with ApiClient.from_args(args) as client:
        if args.json:
            print_json_items(_batches(client, args))
        else:
            print_table(OPERATION_COLUMNS, _batches(client, args), "no operations match")
    return 0
