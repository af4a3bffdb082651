"""Errors of the REST API: every failure is a JSON object ``{"code": ..., "message": ...}``.

``code`` is the ApsaraMQ error code where one applies (the same codes the ApsaraMQ RPC API
answers with), so scripts can tell failures apart without parsing messages. The HTTP status is
the registry error's own, except where REST clients give a status a fixed meaning
(see ``REST_STATUS``):

* an unknown CA or device is **404** (``FindCaBySnError``, ``FindDeviceBySnError``), as a REST
  client expects of a resource that does not exist;
* ApsaraMQ answers some content and conflict errors with 401 on the RPC API. On the REST API
  401 means one thing only, "the bearer token is missing or wrong" (clients and the console
  react to it by asking for the token again), so those errors are 400 (bad content) or 409
  (conflict with what is registered) here.

Request validation failures (bad JSON, a missing field, a page size out of range) are 400
``ParameterFieldCheckFailed`` with a message naming each field. Nothing a client sends makes
the API answer 500; a 500 ``InternalError`` is a bug, logged with its traceback.
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from certmq.access_keys import AccessKeyNotFound
from certmq.control import ServerCertificateRejected
from certmq.pki import PkiError
from certmq.registry.errors import RegistryError
from certmq.web.validation import describe_validation_errors

log = logging.getLogger("certmq.api")

PARAMETER_ERROR = "ParameterFieldCheckFailed"
CERTIFICATE_CONTENT_ERROR = "CertificateContentError"
INTERNAL_ERROR = "InternalError"

# REST statuses that differ from a registry error's own http_status (see the module docstring).
REST_STATUS: dict[str, int] = {
    "FindCaBySnError": 404,
    "FindDeviceBySnError": 404,
    "CertificateContentError": 400,
    "RegisterCodeUsed": 409,
    "SnNotUnique": 409,
    "CaNumExceed": 409,
    "SerialCollision": 409,
}


class ErrorBody(BaseModel):
    """The body of every error reply."""

    code: str = Field(description="error code, e.g. FindCaBySnError or Unauthorized")
    message: str = Field(description="what went wrong and what to do, for people")


class ApiError(Exception):
    """A failure of the HTTP layer itself (authentication, an unknown connection...)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def rest_status(error: RegistryError) -> int:
    return REST_STATUS.get(error.code, error.http_status)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _status_code_name(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


async def _registry_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RegistryError)
    return error_response(rest_status(error), error.code, str(error) or error.code)


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.code, error.message, error.headers)


async def _access_key_not_found(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AccessKeyNotFound)
    return error_response(error.http_status, error.code, str(error))


async def _certificate_content(request: Request, error: Exception) -> JSONResponse:
    # A server certificate the broker cannot use, or PEM text that holds no certificate.
    return error_response(400, CERTIFICATE_CONTENT_ERROR, str(error))


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(400, PARAMETER_ERROR, describe_validation_errors(list(error.errors())))


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 404 and error.detail == "Not Found":
        message = f"no such resource: {request.method} {request.url.path}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    return error_response(
        error.status_code, _status_code_name(error.status_code), message, getattr(error, "headers", None)
    )


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(500, INTERNAL_ERROR, "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AccessKeyNotFound, _access_key_not_found)
    app.add_exception_handler(ServerCertificateRejected, _certificate_content)
    app.add_exception_handler(PkiError, _certificate_content)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer with."""
    descriptions = {
        400: "invalid request: ParameterFieldCheckFailed, CertificateContentError, RegisterCodeError...",
        401: "missing or wrong bearer token (code Unauthorized)",
        404: "unknown resource (FindCaBySnError, FindDeviceBySnError...)",
        409: "conflicts with what is registered (SnNotUnique, RegisterCodeUsed, CaNumExceed)",
        429: "too many wrong bearer tokens from this address (code TooManyFailures): wait Retry-After seconds",
    }
    return {
        status: {"model": ErrorBody, "description": descriptions.get(status, http.HTTPStatus(status).phrase)}
        for status in statuses
    }
