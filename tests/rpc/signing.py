"""Alibaba Cloud request signatures, written for the tests from Alibaba Cloud's documentation of
the two schemes (not from certmq's verifier), to send requests that the SDK cannot: replays,
old timestamps, malformed parameters with a valid signature, form bodies.

ACS3-HMAC-SHA256: ``Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..``
over the canonical request (method, path, sorted encoded query, signed headers, payload hash).
HMAC-SHA1 (signature version 1.0): ``Signature`` = Base64(HMAC-SHA1(secret + "&",
METHOD&%2F&encode(sorted encoded parameters))).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import uuid
from urllib.parse import quote, urlencode

VERSION = "2020-04-20"


def encode(text: str) -> str:
    return quote(text, safe="~")


def utc_timestamp(offset: float = 0.0) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sorted_query(parameters: dict[str, str], *, skip_empty: bool = False) -> str:
    return "&".join(
        f"{encode(name)}={encode(value)}"
        for name, value in sorted(parameters.items())
        if not (skip_empty and value == "")
    )


def sign_rpc(
    method: str,
    parameters: dict[str, str],
    access_key_id: str,
    secret: str,
    *,
    timestamp: str | None = None,
    nonce: str | None = None,
    body: dict[str, str] | None = None,
    skip_empty: bool = False,
) -> dict[str, str]:
    """The query parameters of an HMAC-SHA1 signed request (``body``: form parameters, signed
    with the query but sent in the body)."""
    query = {
        "Format": "JSON",
        "Version": VERSION,
        "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "Timestamp": timestamp or utc_timestamp(),
        **parameters,
    }
    signed = {**query, **(body or {})}
    string_to_sign = f"{method}&{encode('/')}&{encode(sorted_query(signed, skip_empty=skip_empty))}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    query["Signature"] = base64.b64encode(digest).decode()
    return query


def sign_acs3(
    method: str,
    host: str,
    query: dict[str, str],
    access_key_id: str,
    secret: str,
    *,
    action: str,
    body: bytes = b"",
    content_type: str | None = None,
    date: str | None = None,
    nonce: str | None = None,
    leave_unsigned: tuple[str, ...] = (),
) -> dict[str, str]:
    """The headers of an ACS3-HMAC-SHA256 signed request, as the SDK builds them."""
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": VERSION,
        "x-acs-date": date or utc_timestamp(),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    if content_type is not None:
        headers["content-type"] = content_type
    signed_names = sorted(name for name in headers if name not in leave_unsigned)
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_names)
    canonical_request = "\n".join(
        [
            method,
            "/",
            sorted_query(query),
            canonical_headers,
            ";".join(signed_names),
            headers["x-acs-content-sha256"],
        ]
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical_request.encode()).hexdigest()
    signature = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={';'.join(signed_names)},Signature={signature}"
    )
    return headers


def query_string(parameters: dict[str, str]) -> str:
    return urlencode(parameters, quote_via=quote)
