"""``/readyz`` (also ``/api/v1/readyz``): whether this node serves, for a load balancer or an
orchestrator (no token).

200 ``{"ready": true, "missing": []}`` when its MQTT listeners are open and, in a cluster, its
link to NATS is up and its registry hears the other nodes' changes; otherwise 503 with
``missing`` naming what is not (``"listener tls"``, ``"nats"``, ``"registry change feed"``).
``/api/v1/healthz`` says only that the process answers.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from certmq.registry.service import RegistryService
from certmq.web.context import Context

router = APIRouter()

NOT_READY = 503


class Readiness(BaseModel):
    ready: bool
    missing: list[str] = Field(description="what this node lacks to serve; empty when ready")


def registry_unready(registry: RegistryService) -> list[str]:
    """What the registry lacks: on a node of several, its change feed (docs/registry.md,
    "Several nodes") must be listening, or the changes made on other nodes would not reach it."""
    feed = registry.change_feed
    if feed is not None and not feed.state.connected:
        return ["registry change feed"]
    return []


# Where orchestrators look for it, and beside /api/v1/healthz.
PATHS = ("/readyz", "/api/v1/readyz")


@router.get(PATHS[0], include_in_schema=False)
@router.get(PATHS[1], include_in_schema=False)
async def readyz(context: Context) -> JSONResponse:
    missing = [*context.control.unready(), *registry_unready(context.registry)]
    body = Readiness(ready=not missing, missing=missing)
    return JSONResponse(body.model_dump(), status_code=NOT_READY if missing else 200)
