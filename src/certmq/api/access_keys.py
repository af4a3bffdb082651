"""``/api/v1/access-keys``: AccessKey pairs for Signature credentials and RPC signatures.

A secret is returned once, by the request that creates it; listings never show secrets.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from certmq.api.errors import error_responses
from certmq.web.context import Context

router = APIRouter(prefix="/access-keys", tags=["access keys"])


class AccessKey(BaseModel):
    id: str = Field(description="AccessKeyId")
    created_at: str = Field(description="ISO 8601, UTC")


class NewAccessKey(AccessKey):
    secret: str = Field(description="AccessKeySecret: shown this once, keep it safe")


class AccessKeyList(BaseModel):
    items: list[AccessKey]


@router.get("", response_model=AccessKeyList, summary="List AccessKey pairs (without secrets)")
async def list_access_keys(context: Context) -> AccessKeyList:
    keys = context.access_keys.list()
    return AccessKeyList(items=[AccessKey(id=key.id, created_at=key.created_at) for key in keys])


@router.post("", status_code=201, response_model=NewAccessKey, summary="Create an AccessKey pair")
async def create_access_key(context: Context) -> NewAccessKey:
    key = await context.access_keys.create()
    return NewAccessKey(id=key.id, created_at=key.created_at, secret=key.secret)


@router.delete(
    "/{access_key_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an AccessKey pair: requests and clients signing with it are refused at once",
    responses=error_responses(404),
)
async def delete_access_key(access_key_id: str, context: Context) -> Response:
    await context.access_keys.delete(access_key_id)
    return Response(status_code=204)
