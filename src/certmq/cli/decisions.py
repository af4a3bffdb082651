"""``certmq decisions``: search the audit log of authentication decisions (SPEC 6)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from certmq.cli.client import ApiClient, add_instance_arguments
from certmq.cli.errors import CommandError
from certmq.cli.output import print_json_items, print_table, short_time

DEFAULT_LIMIT = 50
BATCH = 1000  # the API's largest answer

DECISION_COLUMNS = [
    ("TIME", lambda decision: short_time(decision["time"])),
    ("RESULT", lambda decision: decision["result"]),
    ("REASON", lambda decision: decision["reason"]),
    ("STEP", lambda decision: decision["step"]),
    ("LISTENER", lambda decision: decision["listener"]),
    ("CLIENT ID", lambda decision: decision["client_id"]),
    ("CN", lambda decision: decision["cn"]),
    ("DEVICE SN", lambda decision: decision["device_sn"]),
    ("DETAIL", lambda decision: decision["detail"]),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "decisions",
        help="search the authentication decisions",
        description="Search the recorded authentication decisions, newest first: who was allowed "
        "or denied, at which step of the decision procedure, and why.",
    )
    parser.add_argument(
        "--device", metavar="SN", help="only those of the device certificate with this DeviceSn"
    )
    parser.add_argument("--ca", metavar="SN", help="only those of devices of the CA with this Sn")
    parser.add_argument("--client-id", metavar="ID", help="only those of this MQTT client id")
    parser.add_argument("--result", choices=("allow", "deny"), help="only allowed or only denied")
    parser.add_argument("--reason", metavar="REASON", help="only this reason, e.g. device-inactive")
    parser.add_argument(
        "--since", metavar="TIME", help="from this time on, ISO 8601 (UTC unless a zone is given)"
    )
    parser.add_argument("--until", metavar="TIME", help="before this time, ISO 8601")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help=f"at most N decisions (default: {DEFAULT_LIMIT})")  # fmt: skip
    add_instance_arguments(parser)
    parser.set_defaults(run=run)


def _batches(client: ApiClient, args: argparse.Namespace) -> Iterator[list[dict[str, Any]]]:
    filters = {
        "device_sn": args.device,
        "ca_sn": args.ca,
        "client_id": args.client_id,
        "result": args.result,
        "reason": args.reason,
        "since": args.since,
        "until": args.until,
    }
    offset = 0
    while offset < args.limit:
        limit = min(BATCH, args.limit - offset)
        items: list[dict[str, Any]] = client.get("/decisions", limit=limit, offset=offset, **filters)["items"]
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
            print_table(DECISION_COLUMNS, _batches(client, args), "no decisions match")
    return 0
