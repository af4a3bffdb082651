"""Request signatures of the RPC API, with requests signed by the tests' own signer (signing.py):
what the SDK never sends (old timestamps, replays, unsigned headers, form bodies, the Java SDK's
way with empty values), the nonce cache and the rate limiter on their own."""

from __future__ import annotations

import httpx
import pytest

from certmq.api.rpc import RpcSettings
from certmq.api.rpc.rate_limit import RateLimiter
from certmq.api.rpc.signature import NonceCache, NonceUse
from certmq.config import ConfigError

from .live_api import LiveApi
from .signing import sign_acs3, sign_rpc, utc_timestamp

SCHEMES = ["HMAC-SHA1", "ACS3-HMAC-SHA256"]


@pytest.fixture(params=SCHEMES)
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def code_of(reply: httpx.Response) -> tuple[int, str]:
    return reply.status_code, reply.json()["Code"]


def test_a_request_signed_by_the_documentation_is_accepted(live: LiveApi, scheme: str) -> None:
    reply = live.rpc("GetRegisterCode", {"MqttInstanceId": live.instance_id}, scheme=scheme)
    assert reply.status_code == 200, reply.text
    assert reply.json()["RegisterCode"] and reply.headers["x-acs-request-id"] == reply.json()["RequestId"]
    assert reply.headers["content-type"].startswith("application/json")


def test_parameters_in_a_form_body_are_signed_and_read(live: LiveApi, scheme: str) -> None:
    reply = live.rpc(
        "ListCaCertificate",
        {"MqttInstanceId": live.instance_id},
        form={"PageNo": "1", "PageSize": "3"},
        scheme=scheme,
        method="POST",
    )
    assert reply.status_code == 200, reply.text
    assert (reply.json()["Data"]["PageNo"], reply.json()["Data"]["PageSize"]) == (1, 3)


def test_empty_values_left_out_of_the_signature_as_the_java_sdk_does(live: LiveApi) -> None:
    parameters = {"MqttInstanceId": live.instance_id, "RegionId": ""}
    for skip_empty in (False, True):
        reply = live.rpc("GetRegisterCode", parameters, skip_empty=skip_empty)
        assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("offset", [-16 * 60, 16 * 60], ids=["old", "future"])
def test_a_timestamp_outside_fifteen_minutes_is_refused(live: LiveApi, scheme: str, offset: int) -> None:
    stamp = {"timestamp" if scheme == "HMAC-SHA1" else "date": utc_timestamp(offset)}
    reply = live.rpc("GetRegisterCode", {"MqttInstanceId": live.instance_id}, scheme=scheme, **stamp)
    assert code_of(reply) == (403, "InvalidTimeStamp.Expired")
    assert "clock" in reply.json()["Message"]
    within = {"timestamp" if scheme == "HMAC-SHA1" else "date": utc_timestamp(offset * 14 / 16)}
    assert live.rpc(
        "GetRegisterCode", {"MqttInstanceId": live.instance_id}, scheme=scheme, **within
    ).is_success


@pytest.mark.parametrize("stamp", ["yesterday", "2025-13-45T99:00:00Z", "0"])
def test_a_timestamp_that_is_no_time_is_refused(live: LiveApi, scheme: str, stamp: str) -> None:
    key = "timestamp" if scheme == "HMAC-SHA1" else "date"
    reply = live.rpc("GetRegisterCode", {"MqttInstanceId": live.instance_id}, scheme=scheme, **{key: stamp})
    assert code_of(reply) == (403, "InvalidTimeStamp.Expired")


def test_a_nonce_is_accepted_once_per_access_key(live: LiveApi, scheme: str) -> None:
    parameters = {"MqttInstanceId": live.instance_id}
    assert live.rpc("GetRegisterCode", parameters, scheme=scheme, nonce="once-only-" + scheme).is_success
    again = live.rpc("GetRegisterCode", parameters, scheme=scheme, nonce="once-only-" + scheme)
    assert code_of(again) == (403, "SignatureNonceUsed")
    # A refused request does not spend its nonce: only an authenticated one does.
    bad = live.rpc("GetRegisterCode", parameters, scheme=scheme, nonce="fresh-" + scheme, secret="wrong")
    assert code_of(bad) == (403, "SignatureDoesNotMatch")
    assert live.rpc("GetRegisterCode", parameters, scheme=scheme, nonce="fresh-" + scheme).is_success


def test_replays_use_up_none_of_the_access_keys_calls(
    live: LiveApi, scheme: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Someone who saw a signed request sends it again and again: each replay is refused for its
    nonce before the AccessKey's rate limit is asked, so the key's own calls still go through,
    and the replays are logged as calls that were not authenticated."""
    limited = LiveApi(
        tmp_path_factory.mktemp("replays"), rpc_settings=RpcSettings(rate_limit=0.01, rate_burst=2)
    )
    limited.start()
    try:
        parameters = {"MqttInstanceId": limited.instance_id}
        assert limited.rpc("GetRegisterCode", parameters, scheme=scheme, nonce="seen-" + scheme).is_success
        for _ in range(5):
            replay = limited.rpc("GetRegisterCode", parameters, scheme=scheme, nonce="seen-" + scheme)
            assert code_of(replay) == (403, "SignatureNonceUsed")
        assert limited.rpc("GetRegisterCode", parameters, scheme=scheme).is_success
        assert code_of(limited.rpc("GetRegisterCode", parameters, scheme=scheme)) == (403, "SystemOverFlow")
        limited.run(limited.registry.flush_operations(close_all_windows=True))
        logged = limited.run(limited.registry.search_operations())
        assert sorted((row.code, row.authenticated, row.count) for row in logged) == [
            ("SignatureNonceUsed", False, 1),
            ("SignatureNonceUsed", False, 4),
            ("Success", True, 1),
            ("Success", True, 1),
            ("SystemOverFlow", True, 1),
        ]
    finally:
        limited.stop()


def test_an_unsigned_request_is_refused(live: LiveApi) -> None:
    reply = httpx.get(
        f"{live.url}/", params={"Action": "GetRegisterCode", "MqttInstanceId": live.instance_id}
    )
    assert code_of(reply) == (403, "SignatureDoesNotMatch")
    assert set(reply.json()) == {"RequestId", "HostId", "Code", "Message"}


@pytest.mark.parametrize("header", ["host", "x-acs-date", "x-acs-signature-nonce", "x-acs-action"])
def test_acs3_must_sign_the_headers_that_make_the_request(live: LiveApi, header: str) -> None:
    reply = live.rpc(
        "GetRegisterCode",
        {"MqttInstanceId": live.instance_id},
        scheme="ACS3-HMAC-SHA256",
        leave_unsigned=(header,),
    )
    assert code_of(reply) == (403, "SignatureDoesNotMatch")
    assert header in reply.json()["Message"]


def test_a_changed_parameter_breaks_the_signature(live: LiveApi, scheme: str) -> None:
    reply = live.rpc("GetRegisterCode", {"MqttInstanceId": live.instance_id}, scheme=scheme)
    assert reply.is_success
    tampered = str(reply.request.url).replace("MqttInstanceId=mqtt-rpc-test", "MqttInstanceId=mqtt-rpc-tesT")
    headers = {
        k: v
        for k, v in reply.request.headers.items()
        if k.lower() == "authorization" or k.startswith("x-acs")
    }
    assert code_of(httpx.get(tampered, headers=headers)) == (403, "SignatureDoesNotMatch")


def test_a_body_that_is_not_the_one_signed_is_refused(live: LiveApi) -> None:
    query = {"MqttInstanceId": live.instance_id}
    headers = sign_acs3(
        "POST", live.endpoint, query, live.access_key_id, live.access_key_secret, action="ListCaCertificate",
        body=b"PageNo=1&PageSize=1", content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    reply = httpx.post(
        f"{live.url}/?MqttInstanceId={live.instance_id}", headers=headers, content=b"PageNo=1&PageSize=9"
    )
    assert code_of(reply) == (403, "SignatureDoesNotMatch")
    assert "x-acs-content-sha256" in reply.json()["Message"]


def test_an_unsupported_signature_method_or_an_sts_token_is_refused(live: LiveApi) -> None:
    parameters = {"MqttInstanceId": live.instance_id}
    assert (
        code_of(live.rpc("GetRegisterCode", {**parameters, "SecurityToken": "sts"}))[1]
        == "SignatureDoesNotMatch"
    )
    reply = httpx.get(
        f"{live.url}/",
        headers={"Authorization": "ACS3-RSA-SHA256 Credential=x,SignedHeaders=host,Signature=00"},
    )
    assert code_of(reply) == (403, "SignatureDoesNotMatch") and "ACS3-RSA-SHA256" in reply.json()["Message"]


def test_the_action_and_version_must_be_this_apis(live: LiveApi) -> None:
    parameters = {"MqttInstanceId": live.instance_id}
    unknown = live.rpc("DescribeInstances", parameters)
    assert (
        code_of(unknown) == (400, "ParameterFieldCheckFailed")
        and "GetRegisterCode" in unknown.json()["Message"]
    )
    assert code_of(live.rpc("GetRegisterCode", {**parameters, "Version": "2019-01-01"})) == (
        400,
        "ParameterFieldCheckFailed",
    )
    both = live.rpc(
        "GetRegisterCode", {**parameters, "Action": "ListCaCertificate"}, scheme="ACS3-HMAC-SHA256"
    )
    assert code_of(both) == (400, "ParameterFieldCheckFailed")
    # An HMAC-SHA1 signature does not cover headers: the action must be in its parameters.
    query = sign_rpc("GET", parameters, live.access_key_id, live.access_key_secret)
    unsigned = live.http.get(f"{live.url}/", params=query, headers={"x-acs-action": "DeleteCaCertificate"})
    assert code_of(unsigned) == (400, "ParameterFieldCheckFailed")


# --- the parts on their own -----------------------------------------------------------------------


def test_the_nonce_cache_forgets_a_nonce_when_its_timestamp_leaves_the_window() -> None:
    cache = NonceCache(capacity=2)
    assert cache.use("key", "a", expires_at=100.0, now=0.0) is NonceUse.NEW
    assert cache.use("key", "a", expires_at=100.0, now=50.0) is NonceUse.USED
    assert cache.use("other key", "a", expires_at=100.0, now=50.0) is NonceUse.NEW
    # Full of live nonces: refuse rather than forget one, which would open a replay.
    assert cache.use("key", "b", expires_at=150.0, now=60.0) is NonceUse.FULL
    assert cache.use("key", "b", expires_at=150.0, now=100.0) is NonceUse.NEW
    assert len(cache) == 1


def test_a_full_nonce_cache_answers_system_overflow(live: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    assert live.listener is not None
    nonces = live.listener.app.state.rpc.verifier.nonces
    monkeypatch.setattr(nonces, "capacity", len(nonces))
    reply = live.rpc("GetRegisterCode", {"MqttInstanceId": live.instance_id})
    assert code_of(reply) == (403, "SystemOverFlow") and reply.headers["retry-after"]


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.acquire("key") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("key") == pytest.approx(0.5)
    assert limiter.acquire("another key") == 0.0
    now[0] += 0.5
    assert limiter.acquire("key") == 0.0
    assert limiter.acquire("key") > 0
    now[0] += 100
    assert [limiter.acquire("key") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert RateLimiter(0, 0).acquire("key") == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(-1.0, 10), (float("nan"), 10), (5.0, 0)])
def test_a_bad_rate_limit_setting_is_a_configuration_error(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError, match=r"api\.rate"):
        RateLimiter(rate, burst)
