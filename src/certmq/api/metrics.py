"""``/metrics``: the instance's Prometheus metrics (:mod:`certmq.web.metrics`), as of each scrape."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from certmq.web.context import Context

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(context: Context) -> Response:
    counts = await context.registry.counts()
    registry = context.registry
    body = context.metrics.render(context.control, counts, registry.refusals_folded, registry.calls_folded)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
