"""``/api/v1/ca-certificates``: register, list, show, activate, inactivate, delete CAs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from certmq.api.errors import error_responses
from certmq.registry.records import CaRecord
from certmq.web.context import Context
from certmq.web.paging import PageNo, PageSize

router = APIRouter(prefix="/ca-certificates", tags=["CA certificates"])

Status = Literal["active", "inactive"]


class CaCertificate(BaseModel):
    sn: str = Field(description="serial number in Sn format")
    name: str
    status: Status
    subject: str = Field(description="Subject DN, RFC 4514")
    fingerprint: str = Field(description="SHA-256 of the DER certificate, lower-case hex")
    valid_begin: datetime
    valid_end: datetime
    registration_code: str = Field(description="the code its verification certificate carried")
    created_at: datetime
    updated_at: datetime
    pem: str = Field(description="the CA certificate, PEM")
    verification_pem: str = Field(description="the verification certificate, PEM")

    @classmethod
    def of(cls, record: CaRecord) -> CaCertificate:
        return cls.model_validate(record, from_attributes=True)


class CaCertificatePage(BaseModel):
    items: list[CaCertificate]
    page_no: int
    page_size: int
    total: int = Field(description="number of CA certificates registered")


class CaRegistration(BaseModel):
    name: str = Field(
        default="", max_length=128, description="a name for people (default: the CA's Subject CN)"
    )
    ca_pem: str = Field(min_length=1, description="the CA certificate, PEM")
    verification_pem: str = Field(
        min_length=1,
        description="a certificate signed by the CA's key whose Subject CN is a registration code",
    )


@router.get("", response_model=CaCertificatePage, summary="List CA certificates")
async def list_ca_certificates(
    context: Context, page_no: PageNo = 1, page_size: PageSize = 20
) -> CaCertificatePage:
    page = await context.registry.list_cas(page_no, page_size)
    return CaCertificatePage(
        items=[CaCertificate.of(record) for record in page.items],
        page_no=page.page_no,
        page_size=page.page_size,
        total=page.total,
    )


@router.post(
    "",
    status_code=201,
    response_model=CaCertificate,
    summary="Register a CA certificate with proof of possession of its key",
    responses=error_responses(400, 409),
)
async def register_ca_certificate(registration: CaRegistration, context: Context) -> CaCertificate:
    record = await context.registry.register_ca(
        registration.name, registration.ca_pem, registration.verification_pem
    )
    return CaCertificate.of(record)


@router.get(
    "/{sn}", response_model=CaCertificate, summary="Show a CA certificate", responses=error_responses(404)
)
async def get_ca_certificate(sn: str, context: Context) -> CaCertificate:
    return CaCertificate.of(await context.registry.get_ca(sn))


@router.post(
    "/{sn}/activate",
    response_model=CaCertificate,
    summary="Activate a CA certificate: its devices may connect again",
    responses=error_responses(404),
)
async def activate_ca_certificate(sn: str, context: Context) -> CaCertificate:
    return CaCertificate.of(await context.registry.activate_ca(sn))


@router.post(
    "/{sn}/inactivate",
    response_model=CaCertificate,
    summary="Inactivate a CA certificate: its devices are refused and disconnected",
    responses=error_responses(404),
)
async def inactivate_ca_certificate(sn: str, context: Context) -> CaCertificate:
    return CaCertificate.of(await context.registry.inactivate_ca(sn))


@router.delete(
    "/{sn}",
    status_code=204,
    response_class=Response,
    summary="Delete a CA certificate and the device certificates it issued",
    responses=error_responses(404),
)
async def delete_ca_certificate(sn: str, context: Context) -> Response:
    await context.registry.delete_ca(sn)
    return Response(status_code=204)
