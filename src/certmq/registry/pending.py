"""Rows of the two audit logs (decisions, API operations) waiting in memory to be written, and
what one row may hold (docs/registry.md, "What a row holds").

Many of a row's texts are a client's choice: an MQTT client id may be 65,535 bytes, a will topic
as long, the parameters of an API call 256 KiB, and the database may be slow or away for a while.
So every row is bounded before it is queued, by :func:`bounded_decision` or
:func:`bounded_operation`: a text longer than :data:`TEXT_LIMIT` characters is cut, and ends with a
marker that says so and how long it was; an API call keeps :data:`MAX_PARAMETERS` parameters at
most. The queue of each log is bounded too, by rows and by an estimate of the bytes its rows take
(:class:`PendingRows`): beyond either bound the oldest rows go, and are counted. Memory stays
bounded whatever clients send.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from certmq.registry.records import DecisionEntry, OperationEntry

log = logging.getLogger("certmq.registry")

# Characters a text of a row keeps at most, the marker of a cut text included.
TEXT_LIMIT = 1024
# Parameters of an API call kept at most, each name and value cut to these lengths.
MAX_PARAMETERS = 16
PARAMETER_NAME_LIMIT = 128
PARAMETER_VALUE_LIMIT = 256
# The name under which a call's parameters beyond MAX_PARAMETERS are counted.
MORE_PARAMETERS = "…"
# Rows each log's queue holds at most, and the bytes they may take, estimated.
PENDING_MAX_ROWS = 100_000
PENDING_MAX_BYTES = 128 * 1024 * 1024
# The estimate of a row: what it takes beyond its texts (the record, its time, the small values:
# about 450 bytes for a decision or an operation, measured with tracemalloc on CPython 3.11), what
# each parameter of a call takes beyond its texts (about 120 bytes), and 4 bytes per character of
# its texts, what a character may take at most: never less than the row takes. A usual decision
# is estimated at about 1.3 KB (it takes 0.7 KB).
ROW_BYTES = 512
PARAMETER_BYTES = 160
BYTES_PER_CHARACTER = 4

R = TypeVar("R", DecisionEntry, OperationEntry)


def cut_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, or when it is longer than ``limit`` characters, its beginning followed by a marker
    that says it was cut and from how many characters; ``limit`` characters in all."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    marker = f"…[cut from {len(text)} characters]"
    return text[: max(limit - len(marker), 0)] + marker[:limit]


# The texts of each kind of row that a client may choose, or make long. Read with one attrgetter:
# a decision is measured once per CONNECT, on the connection hot path.
_DECISION_TEXTS = ("client_id", "cn", "detail", "peer", "ca_sn", "device_sn")
_OPERATION_TEXTS = ("access_key_id", "action", "signature_method", "message", "peer", "request_id")
_decision_texts = operator.attrgetter(*_DECISION_TEXTS)
_operation_texts = operator.attrgetter(*_OPERATION_TEXTS)


def _lengths(texts: tuple[Any, ...]) -> list[int]:
    try:
        return [*map(len, texts)]
    except TypeError:  # not all texts: the row conversion makes the others fit their columns
        return [len(text) if isinstance(text, str) else 0 for text in texts]


def _cut_texts(texts: tuple[Any, ...], names: tuple[str, ...], limit: int) -> dict[str, Any]:
    """Of ``texts`` (the values of the fields ``names``), those longer than ``limit``, cut."""
    return {
        name: cut_text(text, limit) for name, text in zip(names, texts, strict=True) if not _fits(text, limit)
    }


def _fits(text: object, limit: int) -> bool:
    return not isinstance(text, str) or len(text) <= limit


def bounded_decision(decision: DecisionEntry, limit: int = TEXT_LIMIT) -> DecisionEntry:
    """``decision`` with each of its texts at most ``limit`` characters (:func:`cut_text`)."""
    texts = _decision_texts(decision)
    if max(_lengths(texts)) <= limit:
        return decision
    return dataclasses.replace(decision, **_cut_texts(texts, _DECISION_TEXTS, limit))


def bounded_operation(operation: OperationEntry, limit: int = TEXT_LIMIT) -> OperationEntry:
    """``operation`` with each of its texts at most ``limit`` characters and at most
    :data:`MAX_PARAMETERS` parameters, the others counted under :data:`MORE_PARAMETERS`."""
    cut = _cut_texts(_operation_texts(operation), _OPERATION_TEXTS, limit)
    parameters = operation.parameters if isinstance(operation.parameters, dict) else {}
    value_limit = min(limit, PARAMETER_VALUE_LIMIT)
    # A call bounded before keeps its count of the parameters left out: bounding again changes nothing.
    if len(parameters) - (MORE_PARAMETERS in parameters) > MAX_PARAMETERS or not all(
        _fits(name, PARAMETER_NAME_LIMIT) and _fits(value, value_limit) for name, value in parameters.items()
    ):
        kept: dict[str, str] = {}
        for name, value in parameters.items():
            if len(kept) == MAX_PARAMETERS:
                break
            # Two long names may be cut to one: the second is then one of those not kept.
            kept.setdefault(cut_text(str(name), PARAMETER_NAME_LIMIT), cut_text(str(value), value_limit))
        if len(kept) < len(parameters):
            kept[MORE_PARAMETERS] = f"{len(parameters) - len(kept)} more parameters not kept"
        cut["parameters"] = kept
    return dataclasses.replace(operation, **cut) if cut else operation


def measured_decision(decision: DecisionEntry) -> tuple[DecisionEntry, int]:
    """``decision`` bounded (:func:`bounded_decision`), and the bytes it takes, estimated."""
    lengths = _lengths(_decision_texts(decision))
    if max(lengths) > TEXT_LIMIT:
        decision = bounded_decision(decision)
        lengths = _lengths(_decision_texts(decision))
    return decision, ROW_BYTES + BYTES_PER_CHARACTER * sum(lengths)


def measured_operation(operation: OperationEntry) -> tuple[OperationEntry, int]:
    """``operation`` bounded (:func:`bounded_operation`), and the bytes it takes, estimated."""
    operation = bounded_operation(operation)
    parameters = operation.parameters if isinstance(operation.parameters, dict) else {}
    characters = sum(_lengths(_operation_texts(operation)))
    characters += sum(_lengths(tuple(parameters))) + sum(_lengths(tuple(parameters.values())))
    return operation, ROW_BYTES + PARAMETER_BYTES * len(parameters) + BYTES_PER_CHARACTER * characters


class PendingRows(Generic[R]):
    """The rows of one log waiting to be written, oldest first, each bounded as it comes by
    ``measure``, which also estimates its bytes: at most ``max_rows``, and at most ``max_bytes``.
    Beyond either the oldest are dropped and counted."""

    def __init__(
        self,
        log_name: str,
        items: str,
        measure: Callable[[R], tuple[R, int]],
        *,
        max_rows: int = PENDING_MAX_ROWS,
        max_bytes: int = PENDING_MAX_BYTES,
    ) -> None:
        self.log_name = log_name  # "decision log", "operations log": for the warning
        self.items = items  # "decisions", "API operations"
        self.measure: Callable[[R], tuple[R, int]] = measure
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._rows: deque[tuple[R, int]] = deque()
        self.bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def append(self, row: R) -> None:
        measured = self.measure(row)
        rows = self._rows
        rows.append(measured)
        self.bytes += measured[1]
        if len(rows) > self.max_rows or self.bytes > self.max_bytes:
            self._drop_beyond_bounds()

    def take(self) -> list[R]:
        """Every row, oldest first; the queue is empty afterwards."""
        rows = [row for row, _ in self._rows]
        self._rows.clear()
        self.bytes = 0
        return rows

    def put_back(self, rows: Iterable[R]) -> None:
        """Put rows taken but not written back before the others, in their order."""
        back = [self.measure(row) for row in rows]
        self._rows.extendleft(reversed(back))
        self.bytes += sum(size for _, size in back)
        self._drop_beyond_bounds()

    def _drop_beyond_bounds(self) -> None:
        rows = self._rows
        dropped_before = self.dropped
        while rows and (len(rows) > self.max_rows or self.bytes > self.max_bytes):
            _, size = rows.popleft()
            self.bytes -= size
            self.dropped += 1
        if self.dropped != dropped_before and _worth_a_warning(dropped_before, self.dropped):
            log.warning("the %s cannot keep up: %d %s dropped", self.log_name, self.dropped, self.items)


def _worth_a_warning(before: int, after: int) -> bool:
    """Warn at the first drop, at the thousandth and at every hundred thousandth."""
    return any(mark > before and mark <= after for mark in (1, 1000)) or after // 100_000 > before // 100_000
