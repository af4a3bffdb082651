"""A search of an audit log read from the query string of a REST request: the registry's
:class:`~certmq.registry.log_query.LogQuery` itself, whose parameters are the query's fields
(named, typed, described and bounded as the field says), handed unchanged to the registry."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Query

from certmq.api.paging import query_time
from certmq.registry.log_query import LogQuery, query_fields

Q = TypeVar("Q", bound=LogQuery)


def from_query_string(query_type: type[Q]) -> Callable[..., Q]:
    """A dependency that builds a ``query_type`` from the query string; a time given without a
    zone is UTC, as everywhere in the API."""
    hints = typing.get_type_hints(query_type)
    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=hints[name],
            default=Query(
                field.default,
                description=field.metadata.get("description"),
                ge=field.metadata.get("minimum"),
                le=field.metadata.get("maximum"),
            ),
        )
        for name, field in query_fields(query_type).items()
    ]

    def read(**values: Any) -> Q:
        given: dict[str, Any] = {
            name: query_time(value) if isinstance(value, datetime) else value
            for name, value in values.items()
        }
        return query_type(**given)

    # FastAPI reads a dependency's parameters from its signature.
    read.__signature__ = inspect.Signature(parameters, return_annotation=query_type)  # type: ignore[attr-defined]
    return read
