"""Query parameters of paged listings and searches, the same on every resource of the API and
every page of the console.

The bounds of registry listings and log searches are the registry's, which refuses anything
beyond them; they are checked here too, so that a request beyond them is answered with a
validation error that names its parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from certmq.registry.parameters import MAX_OFFSET, MAX_PAGE_NO, MAX_PAGE_SIZE

# Live connections are listed from the broker's memory, not from the registry.
MAX_CONNECTIONS_PAGE_SIZE = 1000

PageNo = Annotated[int, Query(ge=1, le=MAX_PAGE_NO, description="page number, from 1")]
PageSize = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"records per page, 1 to {MAX_PAGE_SIZE}")
]
ConnectionsPageSize = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_CONNECTIONS_PAGE_SIZE,
        description=f"connections per page, 1 to {MAX_CONNECTIONS_PAGE_SIZE}",
    ),
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def query_time(moment: datetime | None) -> datetime | None:
    """A time given in a query: without a zone, it is UTC, as everywhere in the API."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
