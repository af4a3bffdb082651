"""``certmq connections``: live MQTT connections of a running instance, on every node of its
cluster, and kicking one off on whichever node it is connected to."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.cli.client import ApiClient, add_instance_arguments, segment
from certmq.cli.output import print_json, print_json_items, print_table, short_time


def _identity(connection: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in connection["identity"].items())


CONNECTION_COLUMNS = [
    ("CLIENT ID", lambda connection: connection["client_id"]),
    ("LISTENER", lambda connection: connection["listener"]),
    ("PEER", lambda connection: connection["peer"]),
    ("MQTT", lambda connection: {4: "3.1.1", 5: "5.0"}.get(connection["protocol_version"], "")),
    ("CONNECTED AT", lambda connection: short_time(connection["connected_at"])),
    ("NODE", lambda connection: connection["node"]),
    ("IDENTITY", _identity),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "connections",
        help="list live connections, or kick one off",
        description="List the live MQTT connections of every node of the cluster (one node alone: "
        "its own), with the identity their authentication established and their node, or disconnect "
        "one with --kick on whichever node it is connected to (MQTT 5: DISCONNECT 0x98 "
        "Administrative action). Nodes that do not answer in time are named on stderr.",
    )
    parser.add_argument("--kick", metavar="CLIENT_ID", help="disconnect the client with this client id")
    parser.add_argument("--listener", choices=tuple(MQTT_LISTENERS), help="only those on this listener")
    add_instance_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        if args.kick is not None:
            kicked = client.post(f"/connections/{segment(args.kick)}/kick")
            if args.json:
                print_json(kicked)
            else:
                print(f"disconnected {args.kick} from node {kicked['node']}")
            return 0
        missing: set[str] = set()
        pages = client.pages(
            "/connections",
            what="connections",
            on_page=lambda page: missing.update(page.get("missing_nodes", ())),
            listener=args.listener,
        )
        if args.json:
            print_json_items(pages)
        else:
            print_table(CONNECTION_COLUMNS, pages, "no live connections")
    if missing:
        print(
            f"warning: node(s) {', '.join(sorted(missing))} did not answer: their connections are not listed",
            file=sys.stderr,
        )
    return 0
