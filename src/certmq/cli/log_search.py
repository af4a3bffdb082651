"""What ``certmq decisions`` and ``certmq operations`` share: searching a log of the instance
through the REST API, newest first, in batches of the API's largest answer."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from certmq.cli.client import ApiClient, add_instance_arguments
from certmq.cli.errors import CommandError
from certmq.cli.output import print_json_items, print_table, short_time

DEFAULT_LIMIT = 50
BATCH = 1000  # the API's largest answer

Columns = Sequence[tuple[str, Callable[[dict[str, Any]], Any]]]

# Both logs fold the repeated refusals of strangers: how many calls or decisions a row stands for,
# and the first of them (the last is its TIME).
FOLDED_COLUMNS: Columns = [
    ("COUNT", lambda entry: entry.get("count", 1)),
    ("FIRST SEEN", lambda entry: short_time(entry["first_seen"]) if entry.get("count", 1) > 1 else ""),
]


def add_search_arguments(parser: argparse.ArgumentParser, entries: str) -> None:
    """``--since``, ``--until``, ``--limit`` and the instance's address, for a log of ``entries``."""
    parser.add_argument(
        "--since", metavar="TIME", help="from this time on, ISO 8601 (UTC unless a zone is given)"
    )
    parser.add_argument("--until", metavar="TIME", help="before this time, ISO 8601")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help=f"at most N {entries} (default: {DEFAULT_LIMIT})")  # fmt: skip
    add_instance_arguments(parser)


def _batches(
    client: ApiClient, path: str, filters: Mapping[str, Any], wanted: int
) -> Iterator[list[dict[str, Any]]]:
    offset = 0
    while offset < wanted:
        limit = min(BATCH, wanted - offset)
        items: list[dict[str, Any]] = client.get(path, limit=limit, offset=offset, **filters)["items"]
        if items:
            yield items
        if len(items) < limit:
            return
        offset += len(items)


def search(
    args: argparse.Namespace, path: str, filters: Mapping[str, Any], columns: Columns, none: str
) -> int:
    """Print the entries of the log at ``path`` that match ``filters`` (and ``--since``,
    ``--until``), at most ``--limit``: a table, or JSON with ``--json``; ``none`` when none match."""
    if args.limit < 1:
        raise CommandError("--limit must be 1 or more")
    filters = {**filters, "since": args.since, "until": args.until}
    with ApiClient.from_args(args) as client:
        batches = _batches(client, path, filters, args.limit)
        if args.json:
            print_json_items(batches)
        else:
            print_table(columns, batches, none)
    return 0
