"""``/api/v1/server-certificate``: the broker's TLS certificate, shown and replaced at run time:
new handshakes use the new certificate, live connections are kept."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from certmq.api.errors import error_responses
from certmq.control import ServerCertificateInfo
from certmq.web.context import Context

router = APIRouter(prefix="/server-certificate", tags=["server certificate"])


class ServerCertificate(BaseModel):
    subject: str = Field(description="Subject DN, RFC 4514")
    issuer: str = Field(description="Issuer DN, RFC 4514")
    sans: list[str] = Field(description="subject alternative names: the host names clients may dial")
    sn: str = Field(description="serial number in Sn format")
    fingerprint: str = Field(description="SHA-256 of the DER certificate, lower-case hex")
    valid_begin: datetime
    valid_end: datetime
    cert_file: str = Field(description="the chain file the broker serves")
    generation: int = Field(description="increases with every replacement or reload")

    @classmethod
    def of(cls, info: ServerCertificateInfo) -> ServerCertificate:
        return cls(
            subject=info.subject,
            issuer=info.issuer,
            sans=list(info.sans),
            sn=info.serial,
            fingerprint=info.fingerprint_sha256,
            valid_begin=info.not_before,
            valid_end=info.not_after,
            cert_file=info.cert_file,
            generation=info.generation,
        )


class ServerCertificateReplacement(BaseModel):
    chain_pem: str = Field(min_length=1, description="the server certificate, then its issuing CAs, PEM")
    key_pem: str = Field(min_length=1, description="the server certificate's private key, PEM")


@router.get("", response_model=ServerCertificate, summary="Show the server certificate")
async def get_server_certificate(context: Context) -> ServerCertificate:
    return ServerCertificate.of(context.control.server_certificate())


@router.put(
    "",
    response_model=ServerCertificate,
    summary="Replace the server certificate without a restart",
    responses=error_responses(400),
)
async def replace_server_certificate(
    replacement: ServerCertificateReplacement, context: Context
) -> ServerCertificate:
    info = await context.control.replace_server_certificate(replacement.chain_pem, replacement.key_pem)
    return ServerCertificate.of(info)
