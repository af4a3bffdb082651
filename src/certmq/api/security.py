"""Bearer-token authentication of the REST API: the instance's admin token."""

from __future__ import annotations

import hmac

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from certmq.api.context import Context
from certmq.api.errors import ApiError

UNAUTHORIZED = "Unauthorized"
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The admin token that `certmq init` printed (kept in DATA_DIR/credentials.json).",
)


def require_admin_token(
    context: Context, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """Refuse the request with 401 unless it carries ``Authorization: Bearer <admin token>``."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            UNAUTHORIZED,
            "a bearer token is required: Authorization: Bearer <admin token>",
            {"WWW-Authenticate": 'Bearer realm="certmq"'},
        )
    # Constant time: the comparison must not tell an attacker how much of a guess was right.
    if not hmac.compare_digest(credentials.credentials.encode(), context.admin_token.encode()):
        raise ApiError(
            401,
            UNAUTHORIZED,
            "the bearer token is not this instance's admin token",
            {"WWW-Authenticate": 'Bearer realm="certmq", error="invalid_token"'},
        )
