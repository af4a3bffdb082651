"""How a request that FastAPI's validation refused is described: the API answers with it
(400 ``ParameterFieldCheckFailed``), the console shows it on a page."""

from __future__ import annotations

from typing import Any


def describe_validation_errors(errors: list[Any]) -> str:
    """One line naming each invalid field, e.g. ``query.page_size: Input should be ≤ 100``."""
    parts = []
    for error in errors:
        location = ".".join(str(item) for item in error.get("loc", ()))
        message = error.get("msg", "invalid")
        if error.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'invalid')})"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "the request is not valid"
