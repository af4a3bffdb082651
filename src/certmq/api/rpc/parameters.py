"""The parameters of an RPC request: the query string, and for POST an
``application/x-www-form-urlencoded`` body, as Alibaba Cloud's RPC style allows.

Reading them is strict, so that what the signature covers is exactly what the handlers see: a
parameter named twice (in the query, or in both the query and the body), a value that is not
UTF-8, too many or too long parameters, or a body of another type is refused with
``ParameterFieldCheckFailed`` before anything else looks at the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import Request

from certmq.api.rpc.errors import parameter_error

MAX_PARAMETERS = 64
MAX_NAME_LENGTH = 128
# A PEM certificate is 1-3 KiB; this leaves room for large RSA keys and long extensions.
MAX_VALUE_LENGTH = 16 * 1024
MAX_BODY_BYTES = 256 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class RequestParameters:
    """The decoded parameters of one request, and the raw body (the ACS3 signature hashes it)."""

    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def merged(self) -> dict[str, str]:
        return {**self.query, **self.form}

    def get(self, name: str) -> str | None:
        value = self.query.get(name)
        return self.form.get(name) if value is None else value


def parse_pairs(raw: bytes, where: str) -> dict[str, str]:
    """``a=1&b=2`` (percent-encoded, ``+`` for space) to a dict; every name at most once."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMETERS,
        )
    except UnicodeDecodeError:
        raise parameter_error(f"the {where} is not UTF-8 once percent-decoded") from None
    except ValueError:
        raise parameter_error(f"the {where} has more than {MAX_PARAMETERS} parameters") from None
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if not name or len(name) > MAX_NAME_LENGTH:
            raise parameter_error(f"the {where} has a parameter name that is empty or too long")
        if name in parameters:
            raise parameter_error(f"{name} is given more than once in the {where}")
        if len(value) > MAX_VALUE_LENGTH:
            raise parameter_error(f"{name} is longer than {MAX_VALUE_LENGTH} characters")
        parameters[name] = value
    return parameters


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise parameter_error(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise parameter_error(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def read_parameters(request: Request) -> RequestParameters:
    """The parameters of ``request``; RpcError ParameterFieldCheckFailed when they are malformed."""
    query = parse_pairs(request.scope.get("query_string", b""), "query string")
    body = await _read_body(request)
    form: dict[str, str] = {}
    if body:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != FORM_TYPE:
            raise parameter_error(
                f"the request body must be {FORM_TYPE} (or empty, with the parameters in the query string)"
            )
        form = parse_pairs(body, "form body")
        both = query.keys() & form.keys()
        if both:
            raise parameter_error(f"{sorted(both)[0]} is given in both the query string and the body")
        if len(query) + len(form) > MAX_PARAMETERS:
            raise parameter_error(f"the request has more than {MAX_PARAMETERS} parameters")
    return RequestParameters(query=query, form=form, body=body)
