"""Request signatures of the RPC API: the two schemes that Alibaba Cloud's SDKs send, verified
against the instance's AccessKey pairs, with a timestamp window and replay protection.

What the official SDKs send (alibabacloud_tea_openapi and its Java twin, ``callApi``):

**ACS3-HMAC-SHA256** (the default; ``ACS3-HMAC-SM3`` with ``signature_algorithm="ACS3-HMAC-SM3"``).
The action and version travel in the headers ``x-acs-action`` and ``x-acs-version``, the
parameters in the query string, and the request carries ``x-acs-date`` (UTC,
``2025-01-31T12:00:00Z``), ``x-acs-signature-nonce``, ``x-acs-content-sha256`` (hex hash of the
body, of the empty string when there is none) and::

    Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<a;b;c>,Signature=<hex>

The signature is HMAC(secret, "ACS3-HMAC-SHA256\\n" + hex(hash(canonical request))) where the
canonical request is the method, the path (``/``), the query sorted by name with names and values
percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` kept), the signed headers as
``name:value`` lines sorted by name (values trimmed; repeated headers joined by commas), the
SignedHeaders list as sent, and the payload hash, joined by newlines. The Python SDK signs every
header it sets, the Java SDK ``host``, ``content-type`` and the ``x-acs-*`` ones; certmq requires
at least ``host``, ``x-acs-date``, ``x-acs-signature-nonce``, ``x-acs-content-sha256`` and, when
present, ``x-acs-action`` and ``x-acs-version``.

**HMAC-SHA1, signature version 1.0** (the older RPC signature; the SDKs send it with
``signature_algorithm="v2"``, and the older ``aliyun-*-sdk-core`` SDKs always do). Everything is
in the parameters: ``Action``, ``Version``, ``Format``, ``Timestamp``, ``SignatureNonce``,
``SignatureMethod=HMAC-SHA1``, ``SignatureVersion=1.0``, ``AccessKeyId`` and ``Signature`` =
Base64(HMAC-SHA1(secret + "&", METHOD + "&%2F&" + percent-encode(canonical query))), where the
canonical query is every parameter of the query and the form body except ``Signature``, sorted,
names and values percent-encoded, joined by ``&``. The Python SDK includes empty values, the
Java SDK leaves them out: both are accepted.

Both schemes: the timestamp must be within ``window`` seconds (15 minutes) of this clock
(``InvalidTimeStamp.Expired``), and each (AccessKeyId, nonce) is accepted once while its
timestamp is in the window (``SignatureNonceUsed``), by every node of a cluster. Signatures are
compared in constant time.
"""

from __future__ import annotations

import base64
import datetime
import enum
import hashlib
import heapq
import hmac
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from certmq.api.rpc.errors import (
    INVALID_ACCESS_KEY_ID,
    SIGNATURE_DOES_NOT_MATCH,
    SIGNATURE_NONCE_USED,
    SYSTEM_OVERFLOW,
    TIMESTAMP_EXPIRED,
    CredentialsRefused,
    RpcError,
    signature_error,
)
from certmq.api.rpc.parameters import RequestParameters

ACS3_SHA256 = "ACS3-HMAC-SHA256"
ACS3_SM3 = "ACS3-HMAC-SM3"
HMAC_SHA1 = "HMAC-SHA1"
DEFAULT_WINDOW = 15 * 60  # seconds
DEFAULT_NONCE_CAPACITY = 200_000
MAX_NONCE_LENGTH = 128
# Headers an ACS3 signature must cover: without them a captured request could be replayed with
# another nonce or date, or sent to another host.
REQUIRED_SIGNED_HEADERS = ("host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")
# Covered when present: they choose what the request does.
SIGNED_WHEN_PRESENT = ("x-acs-action", "x-acs-version")
# Parameters of the signature itself; the rest are the action's.
SIGNATURE_PARAMETERS = frozenset(
    {"Signature", "SignatureMethod", "SignatureVersion", "SignatureNonce", "SignatureType",
     "AccessKeyId", "Timestamp", "SecurityToken", "BearerToken"}
)  # fmt: skip


def percent_encode(text: str) -> str:
    """RFC 3986 encoding of UTF-8 text, as both signatures use it (space is %20, ``~`` kept)."""
    return quote(text, safe="~", encoding="utf-8")


def _digest(algorithm: str) -> hashes.HashAlgorithm:
    return hashes.SM3() if algorithm == ACS3_SM3 else hashes.SHA256()


def _hash(algorithm: str, data: bytes) -> bytes:
    digest = hashes.Hash(_digest(algorithm))
    digest.update(data)
    return digest.finalize()


def _hmac(algorithm: str, key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, _digest(algorithm))
    mac.update(data)
    return mac.finalize()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a signature covers, read off one HTTP request. ``headers`` are (lower-case name,
    value) pairs in the order received, repeats kept."""

    method: str
    headers: Sequence[tuple[str, str]]
    parameters: RequestParameters
    path: str = "/"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signed a request that verified, with what, and the nonce it is yet to spend."""

    access_key_id: str
    signature_method: str
    nonce: str
    timestamp: float  # seconds since the epoch


class NonceUse(enum.Enum):
    NEW = "new"
    USED = "used"
    FULL = "full"


class Nonces(Protocol):
    """Where the nonces accepted are kept: :class:`NonceCache` in memory on a single node,
    :class:`certmq.api.rpc.shared_guards.SharedNonces` in the registry of a cluster."""

    async def spend(self, access_key_id: str, nonce: str, *, expires_at: float, now: float) -> NonceUse:
        """Record ``nonce`` of ``access_key_id`` as used until ``expires_at``, if it is not in
        use at ``now``."""
        ...


class NonceCache:
    """The nonces seen recently, each kept until its request's timestamp leaves the window (a
    replay after that fails the timestamp check anyway). Bounded: when ``capacity`` nonces are
    all still live, new requests are refused rather than an old nonce forgotten, so the bound can
    never open a replay hole."""

    def __init__(self, capacity: int = DEFAULT_NONCE_CAPACITY) -> None:
        self.capacity = capacity
        self._expiry: dict[tuple[str, str], float] = {}
        self._queue: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def use(self, access_key_id: str, nonce: str, *, expires_at: float, now: float) -> NonceUse:
        key = (access_key_id, nonce)
        with self._lock:
            queue = self._queue
            while queue and queue[0][0] <= now:
                _, old = heapq.heappop(queue)
                del self._expiry[old]
            if key in self._expiry:
                return NonceUse.USED
            if len(self._expiry) >= self.capacity:
                return NonceUse.FULL
            self._expiry[key] = expires_at
            heapq.heappush(queue, (expires_at, key))
            return NonceUse.NEW

    async def spend(self, access_key_id: str, nonce: str, *, expires_at: float, now: float) -> NonceUse:
        return self.use(access_key_id, nonce, expires_at=expires_at, now=now)


def parse_timestamp(text: str) -> float:
    """An ISO 8601 time (``2025-01-31T12:00:00Z``; without a zone it is UTC) in epoch seconds."""
    if not 10 <= len(text) <= 40:
        raise ValueError("not an ISO 8601 time")
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


class SignatureVerifier:
    """Verifies the signature of RPC requests against ``secrets`` (AccessKeyId → secret; a live
    mapping, so keys created or deleted at run time count at once)."""

    def __init__(
        self,
        secrets: Mapping[str, str],
        *,
        window: float = DEFAULT_WINDOW,
        nonces: Nonces | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secrets = secrets
        self.window = window
        self.nonces = nonces if nonces is not None else NonceCache()
        self.clock = clock

    # --- the entry points -----------------------------------------------------------------------

    def authenticate(self, request: SignedRequest) -> Signer:
        """The verified signer of ``request``, or RpcError 403 saying why not. The nonce is not spent
        yet: call :meth:`spend_nonce` when the request is going to be carried out."""
        authorization = request.header("authorization")
        if authorization is not None and authorization.strip().startswith("ACS3-"):
            return self._verify_acs3(request, authorization.strip())
        if request.parameters.get("Signature") is not None:
            return self._verify_rpc(request)
        raise signature_error(
            SIGNATURE_DOES_NOT_MATCH,
            "the request is not signed: sign it with an AccessKey pair of this instance, with an "
            "ACS3-HMAC-SHA256 Authorization header or the HMAC-SHA1 Signature parameter "
            "(Alibaba Cloud's SDKs do both)",
        )

    async def spend_nonce(self, signer: Signer) -> None:
        """Accept ``signer``'s nonce once; SignatureNonceUsed when it was seen before."""
        use = await self.nonces.spend(
            signer.access_key_id,
            signer.nonce,
            expires_at=signer.timestamp + self.window,
            now=self.clock(),
        )
        if use is NonceUse.USED:
            raise signature_error(
                SIGNATURE_NONCE_USED,
                f"the signature nonce {_shorten(signer.nonce)!r} was used already: a signed request is "
                f"accepted once; sign each request with a new nonce",
            )
        if use is NonceUse.FULL:
            raise RpcError(
                403,
                SYSTEM_OVERFLOW,
                "too many signed requests in the last minutes to remember their nonces; try again later",
                {"Retry-After": "60"},
            )

    # --- shared checks --------------------------------------------------------------------------

    def _secret(self, access_key_id: str) -> str:
        secret = self.secrets.get(access_key_id) if access_key_id else None
        if secret is None:
            raise CredentialsRefused(
                403,
                INVALID_ACCESS_KEY_ID,
                f"the AccessKeyId {_shorten(access_key_id)!r} is not an AccessKey of this instance; "
                f"see certmq access-key list",
            )
        return secret

    def _check_time(self, text: str | None, what: str) -> float:
        try:
            if text is None:
                raise ValueError("missing")
            moment = parse_timestamp(text)
        except ValueError:
            raise signature_error(
                TIMESTAMP_EXPIRED,
                f"{what} must be the request's time in UTC, ISO 8601, e.g. 2025-01-31T12:00:00Z",
            ) from None
        skew = moment - self.clock()
        if abs(skew) > self.window:
            raise signature_error(
                TIMESTAMP_EXPIRED,
                f"{what} {_shorten(text)} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} this "
                f"broker's clock, more than the {self.window:.0f} s accepted; check the client's clock",
            )
        return moment

    def _check_nonce(self, nonce: str | None, what: str) -> str:
        if not nonce or len(nonce) > MAX_NONCE_LENGTH:
            raise signature_error(
                SIGNATURE_DOES_NOT_MATCH,
                f"{what} is required: a new random value of 1 to {MAX_NONCE_LENGTH} characters per request",
            )
        return nonce

    # --- ACS3-HMAC-SHA256 / ACS3-HMAC-SM3 -------------------------------------------------------

    def _verify_acs3(self, request: SignedRequest, authorization: str) -> Signer:
        algorithm, _, rest = authorization.partition(" ")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            fields[name.strip()] = value.strip()
        access_key_id = fields.get("Credential", "")

        def refuse(message: str) -> RpcError:
            return signature_error(SIGNATURE_DOES_NOT_MATCH, message)

        if algorithm not in (ACS3_SHA256, ACS3_SM3):
            raise refuse(
                f"the signature algorithm {_shorten(algorithm)!r} is not supported; use {ACS3_SHA256}"
            )
        signed_header_list = fields.get("SignedHeaders", "")
        given = fields.get("Signature", "")
        if not access_key_id or not signed_header_list or not given:
            raise refuse(
                f"the Authorization header must be '{algorithm} Credential=<AccessKeyId>,"
                f"SignedHeaders=<names>,Signature=<hex>'"
            )
        secret = self._secret(access_key_id)
        signed_names = signed_header_list.split(";")
        present = {name for name, _ in request.headers}
        for name in (*REQUIRED_SIGNED_HEADERS, *(n for n in SIGNED_WHEN_PRESENT if n in present)):
            if name not in signed_names:
                raise refuse(f"the signature must cover the {name} header (SignedHeaders)")
        timestamp = self._check_time(request.header("x-acs-date"), "x-acs-date")
        nonce = self._check_nonce(request.header("x-acs-signature-nonce"), "x-acs-signature-nonce")
        payload_hash = _hash(algorithm, request.parameters.body).hex()
        if not _same(payload_hash, (request.header("x-acs-content-sha256") or "").lower()):
            raise refuse("x-acs-content-sha256 is not the hash of the request body")
        canonical_headers = []
        for name in sorted(set(signed_names)):
            values = request.header_values(name)
            if name != name.lower() or not values:
                raise refuse(f"the signed header {_shorten(name)!r} is not in the request")
            canonical_headers.append(f"{name}:{','.join(sorted(value.strip() for value in values))}\n")
        canonical_request = "\n".join(
            (
                request.method.upper(),
                request.path or "/",
                canonical_query(request.parameters.query),
                "".join(canonical_headers),
                signed_header_list,
                payload_hash,
            )
        )
        string_to_sign = f"{algorithm}\n{_hash(algorithm, canonical_request.encode('utf-8')).hex()}"
        expected = _hmac(algorithm, secret.encode("utf-8"), string_to_sign.encode("utf-8")).hex()
        if not _same(expected, given.lower()):
            raise CredentialsRefused(
                403,
                SIGNATURE_DOES_NOT_MATCH,
                "the request signature does not match the one computed with the AccessKey secret: check "
                "the secret, and that nothing between the client and certmq changes the Host header, the "
                "query or the body",
            )
        return Signer(access_key_id, algorithm, nonce, timestamp)

    # --- HMAC-SHA1, signature version 1.0 -------------------------------------------------------

    def _verify_rpc(self, request: SignedRequest) -> Signer:
        parameters = request.parameters.merged()
        access_key_id = parameters.get("AccessKeyId", "")
        method = parameters.get("SignatureMethod", "")

        def refuse(message: str) -> RpcError:
            return signature_error(SIGNATURE_DOES_NOT_MATCH, message)

        if method != HMAC_SHA1:
            raise refuse(f"SignatureMethod must be {HMAC_SHA1}, not {_shorten(method)!r}")
        if parameters.get("SignatureVersion", "1.0") != "1.0":
            raise refuse("SignatureVersion must be 1.0")
        if parameters.get("SecurityToken"):
            raise refuse("certmq has no STS tokens: sign with an AccessKey pair of this instance")
        secret = self._secret(access_key_id)
        timestamp = self._check_time(parameters.get("Timestamp"), "Timestamp")
        nonce = self._check_nonce(parameters.get("SignatureNonce"), "SignatureNonce")
        given = parameters.pop("Signature")
        key = f"{secret}&".encode()
        # The Python SDK signs empty values too, the Java SDK leaves them out: accept either.
        variants = [parameters]
        if any(value == "" for value in parameters.values()):
            variants.append({name: value for name, value in parameters.items() if value != ""})
        for signed in variants:
            string_to_sign = f"{request.method.upper()}&%2F&{percent_encode(canonical_query(signed))}"
            digest = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha1).digest()
            if _same(base64.b64encode(digest).decode("ascii"), given):
                return Signer(access_key_id, method, nonce, timestamp)
        raise CredentialsRefused(
            403,
            SIGNATURE_DOES_NOT_MATCH,
            "the request signature does not match the one computed with the AccessKey secret: check the "
            "secret, and that nothing between the client and certmq changes the query or the body",
        )


def claimed_signer(request: SignedRequest) -> tuple[str, str]:
    """The AccessKeyId and signature method a request claims, verified or not (for the log)."""
    authorization = (request.header("authorization") or "").strip()
    if authorization.startswith("ACS3-"):
        algorithm, _, rest = authorization.partition(" ")
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip() == "Credential":
                return value.strip(), algorithm
        return "", algorithm
    parameters = request.parameters
    if parameters.get("Signature") is not None:
        return parameters.get("AccessKeyId") or "", parameters.get("SignatureMethod") or ""
    return "", ""


def canonical_query(parameters: Mapping[str, str]) -> str:
    """Parameters sorted by name, names and values percent-encoded, joined by ``&``."""
    return "&".join(
        f"{percent_encode(name)}={percent_encode(parameters[name])}" for name in sorted(parameters)
    )
