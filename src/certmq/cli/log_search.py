"""What ``certmq decisions`` and ``certmq operations`` share: searching a log of the instance
through the REST API, newest first, in batches of the API's largest answer. Each command is a
:class:`LogCommand`, whose options name the REST API's query parameters: the fields of the log's
query in the registry (certmq.registry.log_query), which the CLI does not import, to start fast."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Filter:
    """An option that keeps only the entries whose ``field`` (a query parameter) holds its value."""

    option: str
    field: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LogCommand:
    """``certmq NAME``: search the log at ``/NAME`` of the REST API."""

    name: str
    help: str
    description: str
    filters: Sequence[Filter]
    entries: str  # what --limit counts: "decisions", "calls"
    columns: Columns
    none: str  # said when none match

    def add_parser(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = commands.add_parser(self.name, help=self.help, description=self.description)
        for each in self.filters:
            parser.add_argument(
                each.option,
                dest=each.field,
                metavar=each.metavar,
                choices=each.choices,
                help=each.help,
            )
        parser.add_argument(
            "--since", metavar="TIME", help="from this time on, ISO 8601 (UTC unless a zone is given)"
        )
        parser.add_argument("--until", metavar="TIME", help="before this time, ISO 8601")
        parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                            help=f"at most N {self.entries} (default: {DEFAULT_LIMIT})")  # fmt: skip
        add_instance_arguments(parser)
        parser.set_defaults(run=self.run)

    def run(self, args: argparse.Namespace) -> int:
        """Print the entries that match the filters (and ``--since``, ``--until``), at most
        ``--limit``: a table, or JSON with ``--json``."""
        if args.limit < 1:
            raise CommandError("--limit must be 1 or more")
        filters = {each.field: getattr(args, each.field) for each in self.filters}
        filters.update(since=args.since, until=args.until)
        with ApiClient.from_args(args) as client:
            batches = _batches(client, f"/{self.name}", filters, args.limit)
            if args.json:
                print_json_items(batches)
            else:
                print_table(self.columns, batches, self.none)
        return 0


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
