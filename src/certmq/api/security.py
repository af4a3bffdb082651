"""Bearer-token authentication of the REST API: the instance's admin token."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from certmq.api.errors import ApiError
from certmq.web.context import Context
from certmq.web.secret_failures import SecretRoute, TooManyFailures, source_of

UNAUTHORIZED = "Unauthorized"
TOO_MANY_FAILURES = "TooManyFailures"
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The admin token that `certmq init` printed (kept in DATA_DIR/credentials.json).",
)


def require_admin_token(
    request: Request, context: Context, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """Refuse the request with 401 unless it carries ``Authorization: Bearer <admin token>``;
    with 429 while its source must wait after too many wrong tokens."""
    source = source_of(request)
    failures = context.secret_failures
    try:
        failures.check(source, SecretRoute.REST_API)
    except TooManyFailures as error:
        raise ApiError(429, TOO_MANY_FAILURES, str(error), {"Retry-After": str(error.retry_after)}) from None
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            UNAUTHORIZED,
            "a bearer token is required: Authorization: Bearer <admin token>",
            {"WWW-Authenticate": 'Bearer realm="certmq"'},
        )
    # Constant time: the comparison must not tell an attacker how much of a guess was right.
    if not hmac.compare_digest(credentials.credentials.encode(), context.admin_token.encode()):
        failures.failed(source, SecretRoute.REST_API)
        raise ApiError(
            401,
            UNAUTHORIZED,
            "the bearer token is not this instance's admin token",
            {"WWW-Authenticate": 'Bearer realm="certmq", error="invalid_token"'},
        )
    failures.succeeded(source)
