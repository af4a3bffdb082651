"""``certmq decisions``: search the audit log of authentication decisions."""

from __future__ import annotations

import argparse

from certmq.cli.log_search import FOLDED_COLUMNS, add_search_arguments, search
from certmq.cli.output import short_time

DECISION_COLUMNS = [
    ("TIME", lambda decision: short_time(decision["time"])),
    ("RESULT", lambda decision: decision["result"]),
    ("REASON", lambda decision: decision["reason"]),
    *FOLDED_COLUMNS,
    ("STEP", lambda decision: decision["step"]),
    ("LISTENER", lambda decision: decision["listener"]),
    ("PEER", lambda decision: decision["peer"]),
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
        "or denied, at which step of the decision procedure, and why. Repeated refusals of clients "
        "that proved no known identity are folded: COUNT says how many one row stands for, from "
        "FIRST SEEN to TIME, and PEER is their source.",
    )
    parser.add_argument(
        "--device", metavar="SN", help="only those of the device certificate with this DeviceSn"
    )
    parser.add_argument("--ca", metavar="SN", help="only those of devices of the CA with this Sn")
    parser.add_argument("--client-id", metavar="ID", help="only those of this MQTT client id")
    parser.add_argument("--result", choices=("allow", "deny"), help="only allowed or only denied")
    parser.add_argument("--reason", metavar="REASON", help="only this reason, e.g. device-inactive")
    add_search_arguments(parser, "decisions")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    filters = {
        "device_sn": args.device,
        "ca_sn": args.ca,
        "client_id": args.client_id,
        "result": args.result,
        "reason": args.reason,
    }
    return search(args, "/decisions", filters, DECISION_COLUMNS, "no decisions match")
