"""``/api/v1/decisions``: the audit log of authentication decisions, newest first."""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from typing import Literal

from pydantic import BaseModel, Field

from certmq.api.log_search import log_search_router
from certmq.registry.log_query import DecisionQuery


class Decision(BaseModel):
    id: int
    time: datetime = Field(description="when it was decided; of a folded row, the last refusal (last_seen)")
    listener: str
    peer: str = Field(
        description="the client's address, host:port; of a folded row, its source: the IPv4 address, "
        "the IPv6 /64, or * for the sources beyond the open windows"
    )
    client_id: str = Field(
        description="the MQTT client id; one longer than 1024 characters is cut, and ends with a marker "
        "that says how long it was (docs/registry.md, 'What a row holds')"
    )
    ca_sn: str
    device_sn: str
    cn: str = Field(description="Subject CN of the device certificate")
    step: int = Field(
        description="the step of the decision procedure that decided (1-6); 0 for credentials and for"
        " what the broker checks after them (the will's topic, the session's owner, the limits on"
        " sessions)"
    )
    result: Literal["allow", "deny"]
    reason: str = Field(description="e.g. new-device, device-inactive, ca-not-registered, bad-credentials")
    detail: str
    count: int = Field(description="refusals this row stands for: 1, or more for a folded row")
    first_seen: datetime = Field(description="the first refusal of a folded row; else the same as time")
    last_seen: datetime = Field(description="the last refusal of a folded row; always the same as time")
    identity_known: bool = Field(
        description="whether the client proved an identity the instance knows (a certificate of a "
        "registered CA, an AccessKey's signature); refusals of the others are folded"
    )


router = log_search_router(
    "/decisions", attrgetter("decision_log"), DecisionQuery, Decision, "Search the decisions, newest first"
)
