"""``/api/v1/explain``: what the decision procedure decides for a device certificate, step by step,
without a connection (``certmq explain``). Nothing is registered."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from certmq.api.errors import error_responses
from certmq.auth.explain import explain_certificate
from certmq.web.context import Context

router = APIRouter(prefix="/explain", tags=["explain"])


class ExplainRequest(BaseModel):
    certificate_pem: str = Field(
        min_length=1, description="the device certificate, PEM (or a chain file: its first certificate)"
    )


class ExplainStep(BaseModel):
    step: int = Field(description="step of the decision procedure, 1-6")
    text: str


class Explanation(BaseModel):
    allowed: bool
    step: int = Field(description="the step that decided")
    reason: str = Field(description="reason code, as recorded in the decisions")
    detail: str
    ca_sn: str = Field(description="Sn of the registered CA that issued it, if any")
    device_sn: str
    cn: str
    fingerprint: str = Field(description="SHA-256 of the DER certificate, lower-case hex")
    trace: list[ExplainStep]


@router.post(
    "",
    response_model=Explanation,
    summary="Run the decision procedure on a device certificate, without connecting",
    responses=error_responses(400),
)
async def explain(request: ExplainRequest, context: Context) -> Explanation:
    decision = explain_certificate(request.certificate_pem, context.registry.index)
    return Explanation(
        allowed=decision.allowed,
        step=decision.step,
        reason=decision.reason,
        detail=decision.detail,
        ca_sn=decision.ca_sn,
        device_sn=decision.device_sn,
        cn=decision.cn,
        fingerprint=decision.fingerprint.hex(),
        trace=[ExplainStep(step=step.number, text=step.text) for step in decision.trace],
    )
