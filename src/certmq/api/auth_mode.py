"""``/api/v1/auth-mode``: one-way or mutual TLS, switched at run time."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from certmq.api.errors import error_responses
from certmq.auth.mode import AuthModeName
from certmq.web.context import Context

router = APIRouter(prefix="/auth-mode", tags=["auth mode"])

LISTENERS = Field(
    description="which MQTT listeners the mode opens and to whom, e.g. "
    '"tls: devices with certificates of registered CAs; wss: clients with Signature credentials; tcp, ws: closed"'
)


class AuthMode(BaseModel):
    mode: AuthModeName = Field(description="one-way: credentials; mutual: device certificates as well")
    listeners: str = LISTENERS


class AuthModeChange(BaseModel):
    mode: AuthModeName
    disconnect_nonconforming: bool = Field(
        default=False, description="also disconnect live sessions that the new mode would refuse"
    )


class AuthModeChanged(BaseModel):
    mode: AuthModeName
    disconnected: int = Field(description="live sessions disconnected because they do not conform")
    listeners: str = LISTENERS


@router.get("", response_model=AuthMode, summary="Show the auth mode")
async def get_auth_mode(context: Context) -> AuthMode:
    mode = context.control.auth_mode()
    return AuthMode(mode=mode, listeners=context.control.describe_listeners(mode))  # type: ignore[arg-type]


@router.put(
    "",
    response_model=AuthModeChanged,
    summary="Switch the auth mode for new handshakes",
    responses=error_responses(400),
)
async def set_auth_mode(change: AuthModeChange, context: Context) -> AuthModeChanged:
    disconnected = await context.control.set_auth_mode(
        change.mode, disconnect_nonconforming=change.disconnect_nonconforming
    )
    return AuthModeChanged(
        mode=change.mode, disconnected=disconnected, listeners=context.control.describe_listeners(change.mode)
    )
