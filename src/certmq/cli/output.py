"""What registry commands print: aligned tables and key-value blocks, or JSON with ``--json``.

Whatever a command prints goes through :func:`escaped_output`: an invisible character that a
certificate or a client brought (a bidirectional override in a CN, an ANSI escape) is printed as
its escape ``\\u202e`` (:mod:`certmq.invisible_characters`), also inside JSON, where the escape
means the same character.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO, cast

from certmq.invisible_characters import INVISIBLE_ON_A_TERMINAL, INVISIBLE_ON_ONE_LINE, escape_invisible

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
        rows = [[one_line(value(item)) for _, value in columns] for item in items]
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
        print(f"{label.ljust(width)}  {one_line(value)}")


class EscapingStream:
    """A text stream that writes each invisible character (carriage return included) escaped."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(escape_invisible(text, INVISIBLE_ON_A_TERMINAL))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def escaped_output() -> Iterator[None]:
    """Standard output and error escape invisible characters until the block ends."""
    saved = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, EscapingStream(sys.stdout))
    sys.stderr = cast(TextIO, EscapingStream(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def one_line(value: object) -> str:
    """A value on one line of a table or a field: line breaks and tabs escaped too."""
    return "" if value is None else escape_invisible(str(value), INVISIBLE_ON_ONE_LINE)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
