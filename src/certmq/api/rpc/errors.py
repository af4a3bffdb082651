"""Errors of the ApsaraMQ-compatible RPC API and the body they are answered with.

Every failure is ``{"RequestId", "HostId", "Code", "Message"}`` with ApsaraMQ's HTTP status
(docs/api.md, "Errors" of the RPC API). Registry errors carry their code and status already
(:class:`certmq.registry.RegistryError`); :class:`RpcError` is for what the RPC layer itself
refuses: malformed requests, signatures, rate limits.
"""

from __future__ import annotations

PARAMETER_FIELD_CHECK_FAILED = "ParameterFieldCheckFailed"
INVALID_ACCESS_KEY_ID = "InvalidAccessKeyId.NotFound"
SIGNATURE_DOES_NOT_MATCH = "SignatureDoesNotMatch"
SIGNATURE_NONCE_USED = "SignatureNonceUsed"
# Alibaba Cloud's code for a Timestamp outside the accepted window; a signature failure, so 403.
TIMESTAMP_EXPIRED = "InvalidTimeStamp.Expired"
SYSTEM_OVERFLOW = "SystemOverFlow"
# Alibaba Cloud's code for a caller slowed down; here, a source that sent too many wrong signatures.
THROTTLING_USER = "Throttling.User"
INTERNAL_ERROR = "InternalError"
# Alibaba Cloud's code for a service that cannot answer now; here, a node of a cluster that
# cannot reach the registry the nodes share (its nonces and rate buckets).
SERVICE_UNAVAILABLE = "ServiceUnavailable"
SUCCESS = "Success"  # the code an operations log entry has when the call succeeded


class RpcError(Exception):
    """A request the RPC layer refuses, answered with ``status`` and ``code``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class CredentialsRefused(RpcError):
    """The request names an AccessKey this instance does not have, or its signature is not the
    one its secret makes: a wrong secret, counted against the request's source."""


def parameter_error(message: str) -> RpcError:
    return RpcError(400, PARAMETER_FIELD_CHECK_FAILED, message)


def signature_error(code: str, message: str) -> RpcError:
    return RpcError(403, code, message)
