"""``/api/v1/device-certificates``: list, show, activate, inactivate, delete device certificates.
Devices are registered by their first allowed connection (step 6 of the decision procedure), not here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from certmq.api.errors import error_responses
from certmq.registry.records import DeviceRecord
from certmq.web.context import Context
from certmq.web.paging import PageNo, PageSize

router = APIRouter(prefix="/device-certificates", tags=["device certificates"])

Status = Literal["active", "inactive"]


class DeviceCertificate(BaseModel):
    ca_sn: str = Field(description="Sn of the registered CA that issued it")
    device_sn: str = Field(description="its serial number in Sn format")
    name: str = Field(description="its Subject CN")
    status: Status
    fingerprint: str = Field(description="SHA-256 of the DER certificate, lower-case hex")
    valid_begin: datetime
    valid_end: datetime
    created_at: datetime = Field(description="when its first connection registered it")
    updated_at: datetime
    pem: str = Field(description="the device certificate, PEM")

    @classmethod
    def of(cls, record: DeviceRecord) -> DeviceCertificate:
        return cls.model_validate(record, from_attributes=True)


class DeviceCertificatePage(BaseModel):
    items: list[DeviceCertificate]
    page_no: int
    page_size: int
    total: int = Field(description="number of device certificates that match the filters")


@router.get(
    "",
    response_model=DeviceCertificatePage,
    summary="List device certificates, by CA, status and name",
    responses=error_responses(404),
)
async def list_device_certificates(
    context: Context,
    ca_sn: Annotated[str | None, Query(description="only those issued by this CA")] = None,
    status: Annotated[Status | None, Query(description="only those with this status")] = None,
    name: Annotated[str | None, Query(description="only those with this Subject CN")] = None,
    page_no: PageNo = 1,
    page_size: PageSize = 20,
) -> DeviceCertificatePage:
    page = await context.registry.list_devices(page_no, page_size, ca_sn=ca_sn, status=status, name=name)
    return DeviceCertificatePage(
        items=[DeviceCertificate.of(record) for record in page.items],
        page_no=page.page_no,
        page_size=page.page_size,
        total=page.total,
    )


@router.get(
    "/{ca_sn}/{device_sn}",
    response_model=DeviceCertificate,
    summary="Show a device certificate",
    responses=error_responses(404),
)
async def get_device_certificate(ca_sn: str, device_sn: str, context: Context) -> DeviceCertificate:
    return DeviceCertificate.of(await context.registry.get_device(ca_sn, device_sn))


@router.post(
    "/{ca_sn}/{device_sn}/activate",
    response_model=DeviceCertificate,
    summary="Activate a device certificate: the device may connect again",
    responses=error_responses(404),
)
async def activate_device_certificate(ca_sn: str, device_sn: str, context: Context) -> DeviceCertificate:
    return DeviceCertificate.of(await context.registry.activate_device(ca_sn, device_sn))


@router.post(
    "/{ca_sn}/{device_sn}/inactivate",
    response_model=DeviceCertificate,
    summary="Inactivate a device certificate: the device is refused and disconnected",
    responses=error_responses(404),
)
async def inactivate_device_certificate(ca_sn: str, device_sn: str, context: Context) -> DeviceCertificate:
    return DeviceCertificate.of(await context.registry.inactivate_device(ca_sn, device_sn))


@router.delete(
    "/{ca_sn}/{device_sn}",
    status_code=204,
    response_class=Response,
    summary="Delete a device certificate; its next valid connection registers it again",
    responses=error_responses(404),
)
async def delete_device_certificate(ca_sn: str, device_sn: str, context: Context) -> Response:
    await context.registry.delete_device(ca_sn, device_sn)
    return Response(status_code=204)
