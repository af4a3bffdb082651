"""Query parameters of paged listings and searches, the same on every resource."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from certmq.registry.parameters import MAX_OFFSET, MAX_PAGE_NO, MAX_PAGE_SIZE

__all__ = ["MAX_OFFSET", "MAX_PAGE_NO", "MAX_PAGE_SIZE", "PageNo", "PageSize", "query_time"]

PageNo = Annotated[int, Query(ge=1, le=MAX_PAGE_NO, description="page number, from 1")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="records per page, 1 to 100")]


def query_time(moment: datetime | None) -> datetime | None:
    """A time given in a query: without a zone, it is UTC, as everywhere in the API."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
