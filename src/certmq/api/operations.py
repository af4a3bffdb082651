"""``/api/v1/operations``: the operations log of the ApsaraMQ-compatible RPC API, newest first:
every call, the AccessKey that made it, what it asked for and what it was answered; the calls
that were not authenticated folded into counted rows per source, action and code."""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter

from pydantic import BaseModel, Field

from certmq.api.log_search import log_search_router
from certmq.registry.log_query import OperationQuery


class Operation(BaseModel):
    id: int
    time: datetime = Field(description="when it was called; of a folded row, the last call (last_seen)")
    request_id: str = Field(description="the RequestId of the reply (of a folded row, of the last call)")
    peer: str = Field(
        description="the caller's address, host:port; of a folded row, its source: the IPv4 address, "
        "the IPv6 /64, or * for the sources beyond the open windows"
    )
    access_key_id: str = Field(
        description="the AccessKey that signed the call (claimed, when not authenticated)"
    )
    authenticated: bool = Field(
        description="whether the signature verified and the request was no replay; the calls that "
        "were not authenticated are folded"
    )
    signature_method: str = Field(description="ACS3-HMAC-SHA256, ACS3-HMAC-SM3 or HMAC-SHA1")
    action: str = Field(
        description="e.g. InactivateDeviceCertificate; empty when the call named no action the API "
        "serves (the name it gave is then the parameter Action)"
    )
    parameters: dict[str, str] = Field(
        description="the call's parameters; certificate contents as their SHA-256 and length; at most "
        "16, each value at most 256 characters, a longer one cut with a marker that says so"
    )
    status: int = Field(description="HTTP status of the reply")
    code: str = Field(description="Success, or the error code")
    message: str
    duration_ms: int
    count: int = Field(description="calls this row stands for: 1, or more for a folded row")
    first_seen: datetime = Field(description="the first call of a folded row; else the same as time")
    last_seen: datetime = Field(description="the last call of a folded row; always the same as time")


router = log_search_router(
    "/operations",
    attrgetter("operations_log"),
    OperationQuery,
    Operation,
    "Search the RPC API's operations log, newest first",
)
