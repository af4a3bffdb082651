"""A search of one of the two audit logs (decisions, API operations): one frozen value, built
where the question is asked (the REST API from its query string, the console from its form) and
passed unchanged through the service to the store, which turns each filter into a condition on
the column of the same name.

Every field says what it is once: its type, its description and its bounds, which the REST API
reads to declare its query parameters (api/log_search.py); the checks here apply to every caller.
The CLI sends the same fields as the REST API's query parameters (cli/log_search.py).
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from certmq.registry.errors import ParameterFieldCheckFailed
from certmq.registry.models import Result
from certmq.registry.parameters import MAX_OFFSET

# Rows one search returns at most.
MAX_LOG_SEARCH = 1000
# The fields every search has; the others of a query are its filters, named as their columns.
PAGE_FIELDS = ("since", "until", "limit", "offset")


def _filter(description: str | None = None) -> Any:
    """A filter: only the rows whose column of the same name holds this value (None: any)."""
    return field(default=None, metadata={} if description is None else {"description": description})


@dataclass(frozen=True, kw_only=True)
class LogQuery:
    """Rows newest first, those that match every filter given and were written from ``since``
    on and before ``until``: ``limit`` of them, after the first ``offset``."""

    since: datetime.datetime | None = field(
        default=None, metadata={"description": "ISO 8601; from this time on"}
    )
    until: datetime.datetime | None = field(
        default=None, metadata={"description": "ISO 8601; before this time"}
    )
    limit: int = field(default=100, metadata={"minimum": 1, "maximum": MAX_LOG_SEARCH})
    offset: int = field(default=0, metadata={"minimum": 0, "maximum": MAX_OFFSET})

    def __post_init__(self) -> None:
        for name in ("limit", "offset"):
            value = getattr(self, name)
            bounds = query_fields(type(self))[name].metadata
            lowest, highest = bounds["minimum"], bounds["maximum"]
            if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
                raise ParameterFieldCheckFailed(f"{name} must be from {lowest} to {highest}, not {value!r}")
        for moment in (self.since, self.until):
            if moment is not None and (not isinstance(moment, datetime.datetime) or moment.tzinfo is None):
                raise ParameterFieldCheckFailed("since and until must be timezone-aware times")

    def filters(self) -> dict[str, Any]:
        """The filters given: column name to value."""
        return {
            name: value
            for name in query_fields(type(self))
            if name not in PAGE_FIELDS and (value := getattr(self, name)) is not None
        }


@dataclass(frozen=True, kw_only=True)
class DecisionQuery(LogQuery):
    """A search of the decision log (:class:`~certmq.registry.records.DecisionRecord`)."""

    device_sn: str | None = _filter("DeviceSn of the device certificate")
    ca_sn: str | None = _filter("Sn of the CA")
    client_id: str | None = _filter("MQTT client id")
    result: Literal["allow", "deny"] | None = _filter()
    reason: str | None = _filter("reason code, e.g. device-inactive")

    def __post_init__(self) -> None:
        LogQuery.__post_init__(self)
        if self.result is not None:
            if self.result not in (Result.ALLOW, Result.DENY):
                raise ParameterFieldCheckFailed(f"result must be 'allow' or 'deny', not {self.result!r}")
            # The text, not the enum: a database driver may write an enum member by its name.
            object.__setattr__(self, "result", str(self.result))


@dataclass(frozen=True, kw_only=True)
class OperationQuery(LogQuery):
    """A search of the operations log of the RPC API (:class:`~certmq.registry.records.OperationRecord`)."""

    access_key_id: str | None = _filter("only the calls of this AccessKey")
    action: str | None = _filter("only this action, e.g. DeleteCaCertificate")
    code: str | None = _filter("only this outcome: Success or an error code")


_FIELDS: dict[type[LogQuery], dict[str, dataclasses.Field[Any]]] = {}


def query_fields(query_type: type[LogQuery]) -> dict[str, dataclasses.Field[Any]]:
    """The fields of a kind of query by name: its filters first, then :data:`PAGE_FIELDS`."""
    known = _FIELDS.get(query_type)
    if known is None:
        every = dataclasses.fields(query_type)
        ordered = [each for each in every if each.name not in PAGE_FIELDS] + [
            each for each in every if each.name in PAGE_FIELDS
        ]
        known = _FIELDS[query_type] = {each.name: each for each in ordered}
    return known
