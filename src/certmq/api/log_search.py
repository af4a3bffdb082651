"""Searching an audit log over REST (``/api/v1/decisions``, ``/api/v1/operations``): one route for
both logs. The search is the registry's :class:`~certmq.registry.log_query.LogQuery` itself,
read from the query string, whose parameters are the query's fields (named, typed, described and
bounded as the field says), and handed unchanged to the registry."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, create_model

from certmq.registry.audit_log import AuditLog
from certmq.registry.log_query import LogQuery, query_fields
from certmq.registry.service import RegistryService
from certmq.web.context import Context
from certmq.web.paging import query_time

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


def log_search_router(
    prefix: str,
    audit_log: Callable[[RegistryService], AuditLog[Any, Any, Any]],
    query_type: type[LogQuery],
    item: type[BaseModel],
    summary: str,
) -> APIRouter:
    """A router of one route, ``GET prefix``: the rows of the registry's ``audit_log`` that a
    ``query_type`` asks for, newest first, each an ``item``, in a page (``ItemList``) with the
    query's ``limit`` and ``offset``."""
    name = prefix.strip("/")
    router = APIRouter(prefix=prefix, tags=[name])
    page = create_model(f"{item.__name__}List", items=list[item], limit=int, offset=int)  # type: ignore[valid-type]

    async def search(context: Context, query: LogQuery = Depends(from_query_string(query_type))) -> Any:
        searched = audit_log(context.registry)
        # A log is written in batches every half second: write the queued entries first, so that
        # what an operator just did is in the answer.
        await searched.flush()
        records = await searched.search(query)
        items = [item.model_validate(record, from_attributes=True) for record in records]
        return page(items=items, limit=query.limit, offset=query.offset)

    router.add_api_route(
        "", search, methods=["GET"], response_model=page, summary=summary, name=f"search_{name}"
    )
    return router
