"""``/api/v1/registration-codes``: one-time codes for CA registration."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from certmq.web.context import Context

router = APIRouter(prefix="/registration-codes", tags=["registration codes"])


class RegistrationCode(BaseModel):
    code: str = Field(description="put it in the Subject CN of the verification certificate")
    created_at: datetime
    expires_at: datetime = Field(description="unused codes expire after 24 hours")


@router.post("", status_code=201, response_model=RegistrationCode, summary="Issue a registration code")
async def issue_registration_code(context: Context) -> RegistrationCode:
    code = await context.registry.issue_registration_code()
    return RegistrationCode(code=code.code, created_at=code.created_at, expires_at=code.expires_at)
