"""The RPC endpoint at ``/`` of the HTTP listener: one request, in order,

1. its parameters read (query string and form body): ``ParameterFieldCheckFailed``;
2. its signature verified: ``InvalidAccessKeyId.NotFound``, ``SignatureDoesNotMatch``,
   ``InvalidTimeStamp.Expired`` (403); not even tried while its source must wait after too many
   wrong signatures (:mod:`certmq.web.secret_failures`): ``Throttling.User`` (429);
3. its nonce spent: ``SignatureNonceUsed`` (403), a request replayed; then the AccessKey's rate
   limit: ``SystemOverFlow`` (403), which a replay thus never uses up;
4. the action found and its parameters read: ``ParameterFieldCheckFailed``;
5. ``MqttInstanceId`` checked: ``MqttInstanceNotFound``;
6. one registry call, whose errors carry their ApsaraMQ code and status;

and recorded in the operations log, whatever the outcome: a call is authenticated once its
signature verified and its nonce was spent; the others are folded per source, action and code
(docs/registry.md, "Retention and folding"). Every reply has a ``RequestId`` (also in
the ``x-acs-request-id`` header); errors are ``{"RequestId", "HostId", "Code", "Message"}``.

The REST API's exception handlers are application-wide and answer in the REST shape, so this
endpoint catches everything itself: nothing it answers comes from them.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from certmq.api.rpc.actions import ACTIONS, VERSION, Action, read_arguments
from certmq.api.rpc.errors import (
    INTERNAL_ERROR,
    SUCCESS,
    SYSTEM_OVERFLOW,
    THROTTLING_USER,
    CredentialsRefused,
    RpcError,
    parameter_error,
)
from certmq.api.rpc.operations_log import logged_call
from certmq.api.rpc.parameters import RequestParameters, read_parameters
from certmq.api.rpc.rate_limit import CallBudget, RateLimiter
from certmq.api.rpc.shared_guards import SharedNonces, SharedRateLimiter
from certmq.api.rpc.signature import (
    HMAC_SHA1,
    Nonces,
    SignatureVerifier,
    SignedRequest,
    Signer,
    claimed_signer,
)
from certmq.config import ApiSection
from certmq.registry.errors import RegistryError
from certmq.registry.records import OperationEntry
from certmq.registry.service import RegistryService
from certmq.web.metrics import Metrics
from certmq.web.secret_failures import SecretFailures, SecretRoute, TooManyFailures, source_of

log = logging.getLogger("certmq.api.rpc")

JSON_TYPE = "application/json;charset=utf-8"


_DEFAULTS = ApiSection()


@dataclass(frozen=True, slots=True)
class RpcSettings:
    """The ``[api]`` section of the configuration (docs/configuration.md)."""

    rate_limit: float = _DEFAULTS.rate_limit
    rate_burst: int = _DEFAULTS.rate_burst
    signature_window: float = _DEFAULTS.signature_window
    # The nonces and rate buckets are the cluster's, kept in the registry the nodes share
    # (certmq.api.rpc.shared_guards); a single node keeps its own in memory.
    shared: bool = False

    @classmethod
    def of(cls, section: ApiSection, *, shared: bool = False) -> RpcSettings:
        return cls(section.rate_limit, section.rate_burst, section.signature_window, shared)


class _JsonResponse(JSONResponse):
    media_type = JSON_TYPE


def _header_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _signed_request(request: Request, parameters: RequestParameters) -> SignedRequest:
    headers = [(_header_text(name).lower(), _header_text(value)) for name, value in request.scope["headers"]]
    return SignedRequest(method=request.method, headers=headers, parameters=parameters, path="/")


class RpcEndpoint:
    """The ApsaraMQ-compatible RPC API of one instance; :meth:`handle` is the Starlette endpoint."""

    def __init__(
        self,
        *,
        registry: RegistryService,
        instance_id: str,
        secrets: Mapping[str, str],
        settings: RpcSettings | None = None,
        metrics: Metrics | None = None,
        nonces: Nonces | None = None,
        secret_failures: SecretFailures | None = None,
    ) -> None:
        settings = settings or RpcSettings()
        self.registry = registry
        self.metrics = metrics
        self.instance_id = instance_id
        self.limiter: CallBudget
        if settings.shared:
            nonces = nonces or SharedNonces(registry)
            self.limiter = SharedRateLimiter(registry, settings.rate_limit, settings.rate_burst)
        else:
            self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.verifier = SignatureVerifier(secrets, window=settings.signature_window, nonces=nonces)
        self.secret_failures = secret_failures if secret_failures is not None else SecretFailures(metrics)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4()).upper()
        signed: SignedRequest | None = None
        caller: Signer | None = None  # the signer of a request known to be no replay
        headers: dict[str, str] = {"x-acs-request-id": request_id}
        try:
            parameters = await read_parameters(request)
            signed = _signed_request(request, parameters)
            signer = self._authenticate(request, signed)
            # A replayed request verifies as well as the first, but proves nothing about who sent it.
            await self.verifier.spend_nonce(signer)
            caller = signer
            await self._take_turn(signer.access_key_id)
            action = _action(signed, signer)
            values = read_arguments(("MqttInstanceId", *action.parameters), parameters.merged())
            self.registry.check_instance_id(values["MqttInstanceId"])
            reply = await action.handler(self.registry, values)
        except RpcError as error:
            status, code, message = error.status, error.code, error.message
            headers.update(error.headers)
        except RegistryError as error:
            status, code, message = error.http_status, error.code, str(error) or error.code
        except Exception:
            log.exception("RPC request %s failed", request_id)
            status, code, message = 500, INTERNAL_ERROR, "internal error; the server log has the details"
        else:
            self._record(request, request_id, signed, caller, 200, SUCCESS, "", started)
            if action.changes:
                log.info("%s by AccessKey %s: done (%s)", action.name, signer.access_key_id, request_id)
            return _JsonResponse({"RequestId": request_id, **reply}, headers=headers)
        self._record(request, request_id, signed, caller, status, code, message, started)
        body = {
            "RequestId": request_id,
            "HostId": request.headers.get("host", "")[:255] or self.instance_id,
            "Code": code,
            "Message": message,
        }
        return _JsonResponse(body, status_code=status, headers=headers)

    def _authenticate(self, request: Request, signed: SignedRequest) -> Signer:
        source = source_of(request)
        try:
            self.secret_failures.check(source, SecretRoute.RPC_API)
        except TooManyFailures as error:
            wait = error.retry_after
            raise RpcError(
                429,
                THROTTLING_USER,
                str(error),
                {"Retry-After": str(wait), "x-acs-retry-after": str(wait * 1000)},
            ) from None
        try:
            signer = self.verifier.authenticate(signed)
        except CredentialsRefused:
            self.secret_failures.failed(source, SecretRoute.RPC_API)
            raise
        self.secret_failures.succeeded(source)
        return signer

    async def _take_turn(self, access_key_id: str) -> None:
        wait = await self.limiter.take(access_key_id)
        if wait > 0:
            raise RpcError(
                403,
                SYSTEM_OVERFLOW,
                f"AccessKey {access_key_id} makes more than {self.limiter.rate:g} calls per second; "
                f"try again in {wait:.2f} s",
                # x-acs-retry-after (milliseconds) makes Alibaba Cloud's SDKs raise their
                # ThrottlingException with retry_after, and back off by it when they retry.
                {"Retry-After": str(math.ceil(wait)), "x-acs-retry-after": str(math.ceil(wait * 1000))},
            )

    def _record(
        self,
        request: Request,
        request_id: str,
        signed: SignedRequest | None,
        signer: Signer | None,
        status: int,
        code: str,
        message: str,
        started: float,
    ) -> None:
        try:
            if signer is not None:
                access_key_id, signature_method = signer.access_key_id, signer.signature_method
            elif signed is not None:
                access_key_id, signature_method = claimed_signer(signed)
            else:
                access_key_id, signature_method = "", ""
            merged: dict[str, Any] = {} if signed is None else signed.parameters.merged()
            named = merged.get("Action") or (signed.header("x-acs-action") if signed else None) or ""
            action, parameters = logged_call(named, merged)
            if self.metrics is not None:
                self.metrics.count_api_call(action or "unknown", code)
            client = request.client
            self.registry.record_operation(
                OperationEntry(
                    request_id=request_id,
                    action=action,
                    status=status,
                    code=code,
                    access_key_id=access_key_id,
                    authenticated=signer is not None,
                    signature_method=signature_method,
                    peer=f"{client.host}:{client.port}" if client else "",
                    parameters=parameters,
                    message=message,
                    duration_ms=round((time.perf_counter() - started) * 1000),
                )
            )
        except Exception:
            log.exception("could not record RPC request %s in the operations log", request_id)


def _action(request: SignedRequest, signer: Signer) -> Action:
    """The action a request names, in the Action parameter or the x-acs-action header, and the
    version it asks for, which must be 2020-04-20 when given. An HMAC-SHA1 signature does not
    cover headers, so such a request must name its action in the (signed) parameters."""
    parameters = request.parameters
    named = {value for value in (parameters.get("Action"), request.header("x-acs-action")) if value}
    if not named or (signer.signature_method == HMAC_SHA1 and not parameters.get("Action")):
        raise parameter_error("Action is required: the x-acs-action header or the Action parameter")
    if len(named) > 1:
        raise parameter_error("the Action parameter and the x-acs-action header name different actions")
    name = named.pop()
    action = ACTIONS.get(name)
    if action is None:
        raise parameter_error(
            f"certmq does not serve the action {name[:64]!r}; it serves {', '.join(ACTIONS)}"
        )
    for version in (parameters.get("Version"), request.header("x-acs-version")):
        if version and version != VERSION:
            raise parameter_error(f"Version must be {VERSION} (onsmqtt), not {version[:20]!r}")
    return action
