"""What registry commands print: aligned tables and key-value blocks, or JSON with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

Column = tuple[str, Callable[[dict[str, Any]], object]]


def short_time(value: object) -> str:
    """``2026-11-27T15:11:31.794928Z`` as ``2026-11-27 15:11:31Z``; other values as they are."""
    if not isinstance(value, str) or not value:
        return "" if value is None else str(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if moment.utcoffset() is not None else "")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def print_json_items(pages: Iterable[Sequence[Any]]) -> None:
    """A JSON array of every item, written as the pages arrive (listings can be long)."""
    out = sys.stdout
    out.write("[")
    first = True
    for items in pages:
        for item in items:
            out.write("\n  " if first else ",\n  ")
            out.write(json.dumps(item, ensure_ascii=False))
            first = False
    out.write("\n]\n" if not first else "]\n")
    out.flush()


def print_table(columns: Sequence[Column], pages: Iterable[Sequence[dict[str, Any]]], empty: str) -> int:
    """Rows under a header, columns aligned on the first page's widths; the number of rows."""
    header = [name for name, _ in columns]
    widths: list[int] | None = None
    count = 0
    for items in pages:
        rows = [[_cell(value(item)) for _, value in columns] for item in items]
        if widths is None:
            widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(header)]
            print(_line(header, widths))
        for row in rows:
            print(_line(row, widths))
        count += len(rows)
        sys.stdout.flush()
    if count == 0:
        print(empty)
    return count


def print_fields(item: dict[str, Any], fields: Sequence[tuple[str, str]]) -> None:
    """``label   value`` lines for ``fields`` (key, label) of ``item``."""
    width = max(len(label) for _, label in fields)
    for key, label in fields:
        value = item.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{name}={text}" for name, text in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(part) for part in value)
        elif key.endswith(("_at", "_begin", "_end", "time")):
            value = short_time(value)
        print(f"{label.ljust(width)}  {'' if value is None else value}")


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("\n", " ")


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
