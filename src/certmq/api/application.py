"""The HTTP application of an instance: the ApsaraMQ-compatible RPC API at ``/``,
REST API v1 under ``/api/v1`` and ``/metrics`` (docs/api.md).

The RPC API authenticates each request by its AccessKey signature (:mod:`certmq.api.rpc`) and
answers in ApsaraMQ's shapes; the console (docs/console.md) is at ``/console``.

Every ``/api/v1`` route except ``/api/v1/healthz`` requires the admin token as a bearer token.
The OpenAPI document is ``/api/v1/openapi.json``, browsable at ``/api/v1/docs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Depends, FastAPI

from certmq import __version__
from certmq.access_keys import AccessKeyStore
from certmq.api import (
    access_keys,
    auth_mode,
    ca_certificates,
    connections,
    decisions,
    device_certificates,
    explain,
    instance,
    operations,
    registration_codes,
    server_certificate,
)
from certmq.api.context import ApiContext
from certmq.api.docs_page import install_docs_page
from certmq.api.errors import ErrorBody, error_responses, install_error_handlers
from certmq.api.http import HttpListener
from certmq.api.metrics import Metrics
from certmq.api.metrics import router as metrics_router
from certmq.api.rpc import RpcEndpoint, RpcSettings
from certmq.api.secret_failures import SecretFailures
from certmq.api.security import require_admin_token
from certmq.config import Config, parse_address
from certmq.console import ConsoleSettings, derive_session_key, install_console
from certmq.control import BrokerControl
from certmq.instance import CREDENTIALS_FILE, Instance

if TYPE_CHECKING:
    from certmq.registry.service import RegistryService

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
    instance.router,
]

DESCRIPTION = """\
The native management API of a certmq instance.

**Authentication**: every request except `/api/v1/healthz` carries the instance's admin token,
`Authorization: Bearer <admin token>` (printed by `certmq init`, kept in
`DATA_DIR/credentials.json`). Without it, or with another token, the answer is 401.

**Errors** are JSON objects `{"code": ..., "message": ...}`. The codes are those of the
ApsaraMQ API where one applies (`FindCaBySnError`, `SnNotUnique`, `RegisterCodeError`...).
Unknown resources are 404; invalid parameters are 400 `ParameterFieldCheckFailed`.

Times are ISO 8601 in UTC. Statuses are `active` or `inactive`. `Sn` values are serial numbers
as lower-case hex of the DER integer content octets.
"""


def create_app(
    *,
    registry: RegistryService,
    control: BrokerControl,
    instance_id: str,
    admin_token: str,
    access_keys_manager: AccessKeyStore,
    metrics: Metrics | None = None,
    rpc_settings: RpcSettings | None = None,
    console: ConsoleSettings | None = None,
) -> FastAPI:
    """The HTTP application of one instance. ``metrics`` is the collector that the instance
    counts its decisions with (:meth:`Metrics.count_decision`); a new one when not given.
    ``rpc_settings`` are the RPC API's rate limit and signature window (config ``[api]``).
    ``console`` configures the web console's sessions."""
    if not admin_token:
        raise ValueError("the REST API needs an admin token")
    app = FastAPI(
        title="certmq REST API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # served by install_docs_page, from the package, under the console's CSP
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    metrics = metrics or Metrics()
    app.state.context = ApiContext(
        registry=registry,
        control=control,
        instance_id=instance_id,
        admin_token=admin_token,
        access_keys=access_keys_manager,
        metrics=metrics,
        secret_failures=SecretFailures(metrics),
    )
    install_error_handlers(app)
    authenticated = [Depends(require_admin_token)]
    for router in _RESOURCE_ROUTERS:
        app.include_router(
            router, prefix=API_PREFIX, dependencies=authenticated, responses=error_responses(400, 401, 429)
        )
    app.include_router(instance.health_router, prefix=API_PREFIX)
    app.include_router(metrics_router)
    rpc = app.state.rpc = RpcEndpoint(
        registry=registry,
        instance_id=instance_id,
        secrets=access_keys_manager.secrets,
        settings=rpc_settings,
        metrics=metrics,
        secret_failures=app.state.context.secret_failures,
    )
    app.add_route("/", rpc.handle, methods=["GET", "POST"], include_in_schema=False)
    install_console(app, admin_token, console)
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


class ServedInstance(BrokerControl, Protocol):
    """What :func:`serve_http` needs of the running application (``certmq.app.Application``).

    Its broker checks Signature credentials against ``access_keys.secrets``, so that pairs
    created through the API work at once, and counts each decision it records with
    ``metrics.count_decision``."""

    instance: Instance
    config: Config
    registry: RegistryService | None
    access_keys: AccessKeyStore
    metrics: Metrics


async def serve_http(application: ServedInstance, address: str) -> HttpListener:
    """Serve the HTTP application of a running instance on ``address`` (``HOST:PORT``; port 0:
    any free port) and return the started listener; ``await listener.stop()`` stops it."""
    if application.registry is None:
        raise RuntimeError("the registry must be open before the HTTP API starts")
    host, port = parse_address(address)
    app = create_app(
        registry=application.registry,
        control=application,
        instance_id=application.instance.id,
        admin_token=application.instance.admin_token,
        access_keys_manager=application.access_keys,
        metrics=application.metrics,
        rpc_settings=RpcSettings.of(application.config.api),
        console=ConsoleSettings(
            session_key=derive_session_key(application.instance.instance_key),
            credentials_file=str(application.instance.data_dir / CREDENTIALS_FILE),
            server_ca_file=str(application.instance.server_ca_file),
        ),
    )
    listener = HttpListener(app, host, port)
    await listener.start()
    return listener
