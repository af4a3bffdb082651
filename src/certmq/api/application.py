"""The API of an instance over HTTP: the ApsaraMQ-compatible RPC API at ``/``, REST API v1
under ``/api/v1``, ``/metrics`` and ``/readyz`` (docs/api.md). :mod:`certmq.http_application` adds the
console (docs/console.md) at ``/console``.

The RPC API authenticates each request by its AccessKey signature (:mod:`certmq.api.rpc`) and
answers in ApsaraMQ's shapes.

Every ``/api/v1`` route except ``/api/v1/healthz`` and ``/api/v1/readyz`` requires the admin token as a bearer token.
The OpenAPI document is ``/api/v1/openapi.json``, browsable at ``/api/v1/docs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from certmq import __version__
from certmq.api import (
    access_keys,
    auth_mode,
    ca_certificates,
    connections,
    decisions,
    device_certificates,
    explain,
    operations,
    overview,
    readiness,
    registration_codes,
    server_certificate,
)
from certmq.api.docs_page import install_docs_page
from certmq.api.errors import ErrorBody, error_responses, install_error_handlers
from certmq.api.metrics import router as metrics_router
from certmq.api.rpc import RpcEndpoint, RpcSettings
from certmq.api.security import require_admin_token
from certmq.web.context import HttpContext

API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_URL = f"{API_PREFIX}/docs"

_RESOURCE_ROUTERS = [
    registration_codes.router,
    ca_certificates.router,
    device_certificates.router,
    server_certificate.router,
    auth_mode.router,
    access_keys.router,
    connections.router,
    decisions.router,
    operations.router,
    explain.router,
    overview.router,
]

DESCRIPTION = """\
The native management API of a certmq instance.

**Authentication**: every request except `/api/v1/healthz` and `/api/v1/readyz` carries the instance's admin token,
`Authorization: Bearer <admin token>` (printed by `certmq init`, kept in
`DATA_DIR/credentials.json`). Without it, or with another token, the answer is 401.

**Errors** are JSON objects `{"code": ..., "message": ...}`. The codes are those of the
ApsaraMQ API where one applies (`FindCaBySnError`, `SnNotUnique`, `RegisterCodeError`...).
Unknown resources are 404; invalid parameters are 400 `ParameterFieldCheckFailed`.

Times are ISO 8601 in UTC. Statuses are `active` or `inactive`. `Sn` values are serial numbers
as lower-case hex of the DER integer content octets.
"""


def create_api(context: HttpContext, rpc_settings: RpcSettings | None = None) -> FastAPI:
    """The application that serves the API of the instance whose services ``context`` holds:
    REST API v1, its documentation, ``/metrics``, ``/readyz`` and the RPC API. ``rpc_settings`` are the RPC
    API's rate limit and signature window (config ``[api]``)."""
    app = FastAPI(
        title="certmq REST API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # served by install_docs_page, from the package, under the console's CSP
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.context = context
    install_error_handlers(app)
    authenticated = [Depends(require_admin_token)]
    for router in _RESOURCE_ROUTERS:
        app.include_router(
            router, prefix=API_PREFIX, dependencies=authenticated, responses=error_responses(400, 401, 429)
        )
    app.include_router(overview.health_router, prefix=API_PREFIX)
    app.include_router(metrics_router)
    app.include_router(readiness.router)
    rpc = app.state.rpc = RpcEndpoint(
        registry=context.registry,
        instance_id=context.instance_id,
        secrets=context.access_keys.secrets,
        settings=rpc_settings,
        metrics=context.metrics,
        secret_failures=context.secret_failures,
    )
    app.add_route("/", rpc.handle, methods=["GET", "POST"], include_in_schema=False)
    install_docs_page(app, DOCS_URL, OPENAPI_URL)
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """Say in the OpenAPI document what the API really answers to an invalid request: 400 with
    an ErrorBody, not FastAPI's default 422 with its own shape."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        error_reference = {"$ref": "#/components/schemas/ErrorBody"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "invalid request (ParameterFieldCheckFailed)",
                        "content": {"application/json": {"schema": error_reference}},
                    }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        components.setdefault("ErrorBody", ErrorBody.model_json_schema())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
