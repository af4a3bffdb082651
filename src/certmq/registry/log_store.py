"""The two audit logs in the database, the decisions and the calls of the RPC API: one
:class:`LogTable` type, used twice (:data:`DECISION_TABLE`, :data:`OPERATION_TABLE`). Each log is
appended to in batches, searched newest first with a
:class:`~certmq.registry.log_query.LogQuery`, and pruned by rows and age, the rows of strangers
first (docs/registry.md, "Retention and folding").
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from certmq.registry import models
from certmq.registry.database import Database, stored_time
from certmq.registry.log_query import DecisionQuery, LogQuery, OperationQuery
from certmq.registry.records import DecisionRecord, OperationRecord

# Rows per INSERT statement of a log: 14 columns at most, so well below the bound parameters a
# statement may have (SQLite 32,766, PostgreSQL 65,535).
LOG_ROWS_PER_STATEMENT = 500
# The columns of the logs that hold times (converted for the driver by stored_time).
_TIME_COLUMNS = frozenset({"time", "first_seen"})

Record = TypeVar("Record")
Query = TypeVar("Query", bound=LogQuery)


# The fields of each kind of record, named as the columns they are read from.
_COLUMNS: dict[type[Any], tuple[str, ...]] = {
    record_type: tuple(field.name for field in dataclasses.fields(record_type))
    for record_type in (DecisionRecord, OperationRecord)
}


def _read_back(record_type: type[Record], row: Any, **decoded: Any) -> Record:
    """The record of a row of a log, each field from the column of its name, or ``decoded``. A
    row that stands for one entry has no ``first_seen`` of its own: it is its ``time``."""
    values = {column: getattr(row, column) for column in _COLUMNS[record_type]}
    if row.first_seen is None:
        values["first_seen"] = row.time
    return record_type(**{**values, **decoded})


def _decision_record(row: models.DecisionRow) -> DecisionRecord:
    return _read_back(DecisionRecord, row)


def _operation_record(row: models.OperationRow) -> OperationRecord:
    try:
        parameters = json.loads(row.parameters)
    except ValueError:
        parameters = {}
    return _read_back(OperationRecord, row, parameters=parameters if isinstance(parameters, dict) else {})


@dataclass(frozen=True, slots=True)
class LogTableKind(Generic[Record, Query]):
    """What tells one log's table from the other's."""

    model: Any  # models.DecisionRow or models.OperationRow
    strangers: ColumnElement[bool]  # the rows of strangers' refusals, the first to go
    record: Callable[[Any], Record]  # a row as it is read back


DECISION_TABLE: LogTableKind[DecisionRecord, DecisionQuery] = LogTableKind(
    models.DecisionRow, models.DecisionRow.identity_known.is_(False), _decision_record
)
# The calls that were not authenticated are the strangers of the operations log.
OPERATION_TABLE: LogTableKind[OperationRecord, OperationQuery] = LogTableKind(
    models.OperationRow, models.OperationRow.authenticated.is_(False), _operation_record
)


class LogTable(Generic[Record, Query]):
    """One log's table, one transaction per method."""

    def __init__(self, database: Database, kind: LogTableKind[Record, Query]) -> None:
        self.database = database
        self.kind = kind

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows (each with the same columns, ``time`` aware) in one transaction, through the
        driver, :data:`LOG_ROWS_PER_STATEMENT` rows per statement. One statement of many rows, not
        one execution per row: each execution hands the interpreter lock to the event loop and
        back, and SQLAlchemy's per-value conversions cost more than the insert."""
        if not rows:
            return
        sqlite = self.database.dialect == "sqlite"
        columns = list(rows[0])
        mark = "?" if sqlite else "%s"
        row_marks = f"({', '.join([mark] * len(columns))})"
        insert_into = f"INSERT INTO {self.kind.model.__tablename__} ({', '.join(columns)}) VALUES "
        with self.database.engine.begin() as connection:
            for start in range(0, len(rows), LOG_ROWS_PER_STATEMENT):
                chunk = rows[start : start + LOG_ROWS_PER_STATEMENT]
                values = tuple(
                    stored_time(row[column], sqlite)
                    if column in _TIME_COLUMNS and row[column] is not None
                    else row[column]
                    for row in chunk
                    for column in columns
                )
                connection.exec_driver_sql(insert_into + ", ".join([row_marks] * len(chunk)), values)

    def search(self, query: Query) -> list[Record]:
        """The rows ``query`` asks for, newest first."""
        table = self.kind.model
        filters: list[ColumnElement[bool]] = [
            getattr(table, column) == value for column, value in query.filters().items()
        ]
        if query.since is not None:
            filters.append(table.time >= query.since)
        if query.until is not None:
            filters.append(table.time < query.until)
        statement = (
            select(table)
            .where(*filters)
            .order_by(table.time.desc(), table.id.desc())
            .offset(query.offset)
            .limit(query.limit)
        )
        with self.database.read_session() as session:
            return [self.kind.record(row) for row in session.scalars(statement)]

    def count(self) -> int:
        with self.database.read_session() as session:
            return session.scalar(select(func.count()).select_from(self.kind.model)) or 0

    def prune(self, *, max_rows: int, older_than: datetime.datetime) -> int:
        """Delete the rows older than ``older_than``; then, while more than ``max_rows`` are left,
        the oldest rows of strangers first, and only when they are not enough the oldest of the
        others. Returns how many rows went."""
        table, strangers = self.kind.model, self.kind.strangers
        with self.database.session() as session, session.begin():
            deleted = session.execute(delete(table).where(table.time < older_than))
            removed = int(getattr(deleted, "rowcount", 0) or 0)
            excess = (session.scalar(select(func.count()).select_from(table)) or 0) - max_rows
            if excess <= 0:
                return removed
            cutoff = session.scalar(
                select(table.id).where(strangers).order_by(table.id).offset(excess - 1).limit(1)
            )
            condition = strangers if cutoff is None else strangers & (table.id <= cutoff)
            deleted = session.execute(delete(table).where(condition))
            removed += int(getattr(deleted, "rowcount", 0) or 0)
            return removed + _delete_beyond_newest(session, table, max_rows)


def _delete_beyond_newest(session: Session, table: Any, max_rows: int) -> int:
    """Delete the rows of a log older than its newest ``max_rows``; return how many went."""
    cutoff = session.scalar(select(table.id).order_by(table.id.desc()).offset(max_rows).limit(1))
    if cutoff is None:
        return 0
    deleted = session.execute(delete(table).where(table.id <= cutoff))
    return int(getattr(deleted, "rowcount", 0) or 0)
