"""Every error the REST API documents, reached through HTTP: its status and its JSON body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.conftest import Api, Pki, pem
from certmq import pki
from certmq.pki import common_name


def assert_error(reply: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == code
    for word in words:
        assert word in body["message"]
    return body


async def registration(api: Api, authority: Pki) -> dict[str, str]:
    code = (await api.client.post("/api/v1/registration-codes")).json()["code"]
    return {"ca_pem": authority.ca_pem, "verification_pem": authority.verification_pem(code)}


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "basic", "empty"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/ca-certificates"),
        ("POST", "/api/v1/registration-codes"),
        ("GET", "/api/v1/instance"),
        ("DELETE", "/api/v1/access-keys/LTAI0"),
        ("PUT", "/api/v1/auth-mode"),
        ("GET", "/api/v1/nothing-here"),
    ],
)
async def test_requests_without_the_admin_token_are_refused(
    api: Api, headers: dict[str, str], method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as anonymous:
        reply = await anonymous.request(method, path)
    if path == "/api/v1/nothing-here":
        # Unknown routes are 404 for everyone: the token protects resources, not their absence.
        assert_error(reply, 404, "NotFound")
        return
    assert_error(reply, 401, "Unauthorized")
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert api.broker.mode_changes == []


async def test_a_token_of_another_length_is_refused(api: Api) -> None:
    for token in (api.token[:-1], api.token + "x", "x"):
        reply = await api.client.get("/api/v1/instance", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 401


# --- registration -----------------------------------------------------------------------------


async def test_register_code_error(api: Api) -> None:
    authority = Pki.create()
    body = {"ca_pem": authority.ca_pem, "verification_pem": authority.verification_pem("not-a-code")}
    assert_error(await api.client.post("/api/v1/ca-certificates", json=body), 400, "RegisterCodeError")


async def test_register_code_used(api: Api) -> None:
    first = await api.register_ca()
    used_code = str(first["registration_code"])
    second = Pki.create("Second")
    body = {"ca_pem": second.ca_pem, "verification_pem": second.verification_pem(used_code)}
    assert_error(await api.client.post("/api/v1/ca-certificates", json=body), 409, "RegisterCodeUsed")


async def test_sn_not_unique(api: Api) -> None:
    authority = Pki.create()
    await api.register_ca(authority)
    again = await registration(api, authority)
    assert_error(await api.client.post("/api/v1/ca-certificates", json=again), 409, "SnNotUnique")


async def test_ca_num_exceed(api: Api) -> None:
    api.registry.ca_limit = 1
    await api.register_ca()
    body = await registration(api, Pki.create("One too many"))
    assert_error(await api.client.post("/api/v1/ca-certificates", json=body), 409, "CaNumExceed")


async def test_certificate_content_errors(api: Api) -> None:
    authority = Pki.create()
    good = await registration(api, authority)
    not_pem = {**good, "ca_pem": "hello"}
    assert_error(
        await api.client.post("/api/v1/ca-certificates", json=not_pem), 400, "CertificateContentError"
    )
    not_a_ca = {**good, "ca_pem": pem(authority.device("leaf"))}
    assert_error(
        await api.client.post("/api/v1/ca-certificates", json=not_a_ca), 400, "CertificateContentError"
    )
    code = common_name(pki.parse_certificates(good["verification_pem"].encode())[0])
    signed_by_another = {**good, "verification_pem": Pki.create("Other").verification_pem(code)}
    reply = await api.client.post("/api/v1/ca-certificates", json=signed_by_another)
    assert_error(reply, 400, "CertificateContentError")
    # The code was not consumed by the failed attempts.
    assert (await api.client.post("/api/v1/ca-certificates", json=good)).status_code == 201


# --- unknown resources ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["", "/activate", "/inactivate"])
async def test_unknown_ca(api: Api, action: str) -> None:
    method = "GET" if not action else "POST"
    reply = await api.client.request(method, f"/api/v1/ca-certificates/00ff{action}")
    assert_error(reply, 404, "FindCaBySnError", "00ff")
    assert_error(await api.client.delete("/api/v1/ca-certificates/00ff"), 404, "FindCaBySnError")


async def test_unknown_device(api: Api) -> None:
    authority = Pki.create()
    await api.register_ca(authority)
    path = f"/api/v1/device-certificates/{authority.sn}/0123"
    assert_error(await api.client.get(path), 404, "FindDeviceBySnError", "0123")
    assert_error(await api.client.post(f"{path}/activate"), 404, "FindDeviceBySnError")
    assert_error(await api.client.post(f"{path}/inactivate"), 404, "FindDeviceBySnError")
    assert_error(await api.client.delete(path), 404, "FindDeviceBySnError")
    # The CA of a device path, or of a filter, that is not registered.
    assert_error(await api.client.get("/api/v1/device-certificates/00ff/0123"), 404, "FindCaBySnError")
    reply = await api.client.get("/api/v1/device-certificates", params={"ca_sn": "00ff"})
    assert_error(reply, 404, "FindCaBySnError")


async def test_unknown_access_key(api: Api) -> None:
    reply = await api.client.delete("/api/v1/access-keys/LTAInothere")
    assert_error(reply, 404, "InvalidAccessKeyId.NotFound", "LTAInothere")


async def test_unknown_connection(api: Api) -> None:
    assert_error(
        await api.client.post("/api/v1/connections/nobody/kick"), 404, "ConnectionNotFound", "nobody"
    )


async def test_unknown_route_and_method(api: Api) -> None:
    assert_error(await api.client.get("/api/v1/devices"), 404, "NotFound", "/api/v1/devices")
    assert_error(await api.client.put("/api/v1/ca-certificates"), 405, "MethodNotAllowed")


# --- invalid input is 400, never 500 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/ca-certificates", {"page_size": 101}, "page_size"),
        ("/api/v1/ca-certificates", {"page_size": 0}, "page_size"),
        ("/api/v1/ca-certificates", {"page_no": 0}, "page_no"),
        ("/api/v1/ca-certificates", {"page_no": "one"}, "page_no"),
        ("/api/v1/ca-certificates", {"page_no": 10**20}, "page_no"),
        ("/api/v1/device-certificates", {"page_no": 10**20}, "page_no"),
        ("/api/v1/decisions", {"offset": 10**20}, "offset"),
        ("/api/v1/device-certificates", {"status": "revoked"}, "status"),
        ("/api/v1/device-certificates", {"page_size": -1}, "page_size"),
        ("/api/v1/decisions", {"result": "maybe"}, "result"),
        ("/api/v1/decisions", {"limit": 1001}, "limit"),
        ("/api/v1/decisions", {"offset": -1}, "offset"),
        ("/api/v1/decisions", {"since": "yesterday"}, "since"),
        ("/api/v1/connections", {"page_size": 1001}, "page_size"),
    ],
)
async def test_invalid_query_parameters(api: Api, path: str, params: dict[str, Any], field: str) -> None:
    assert_error(await api.client.get(path, params=params), 400, "ParameterFieldCheckFailed", field)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/ca-certificates", {"verification_pem": "x"}, "ca_pem"),
        ("POST", "/api/v1/ca-certificates", {"ca_pem": "", "verification_pem": "x"}, "ca_pem"),
        (
            "POST",
            "/api/v1/ca-certificates",
            {"ca_pem": "x", "verification_pem": "x", "name": "n" * 129},
            "name",
        ),
        ("POST", "/api/v1/ca-certificates", ["not", "an", "object"], "body"),
        ("PUT", "/api/v1/auth-mode", {"mode": "both"}, "mode"),
        ("PUT", "/api/v1/auth-mode", {}, "mode"),
        ("PUT", "/api/v1/auth-mode", {"mode": "mutual", "disconnect_nonconforming": "perhaps"}, "disconnect"),
        ("PUT", "/api/v1/server-certificate", {"chain_pem": "x"}, "key_pem"),
        ("POST", "/api/v1/explain", {}, "certificate_pem"),
        ("POST", "/api/v1/explain", {"certificate_pem": 12}, "certificate_pem"),
    ],
)
async def test_invalid_bodies(api: Api, method: str, path: str, body: Any, field: str) -> None:
    reply = await api.client.request(method, path, json=body)
    assert_error(reply, 400, "ParameterFieldCheckFailed", field)


@pytest.mark.parametrize("path", ["/api/v1/ca-certificates", "/api/v1/explain"])
async def test_malformed_json(api: Api, path: str) -> None:
    reply = await api.client.post(path, content=b'{"ca_pem": ', headers={"Content-Type": "application/json"})
    assert_error(reply, 400, "ParameterFieldCheckFailed", "JSON")


async def test_unusable_server_certificate(api: Api) -> None:
    ca = pki.load_ca_dir(api.data_dir / "server-ca")
    certificate = pki.issue_server_certificate(
        ca.certificate, ca.key, "host", ["host"], pki.generate_key("ec").public_key()
    )
    other_key = pki.private_key_pem(pki.generate_key("ec")).decode()
    reply = await api.client.put(
        "/api/v1/server-certificate", json={"chain_pem": pem(certificate), "key_pem": other_key}
    )
    assert_error(reply, 400, "CertificateContentError", "key")
    reply = await api.client.put("/api/v1/server-certificate", json={"chain_pem": "junk", "key_pem": "junk"})
    assert_error(reply, 400, "CertificateContentError")
    assert (await api.client.get("/api/v1/server-certificate")).json()["generation"] == 1


async def test_explain_text_without_a_certificate(api: Api) -> None:
    reply = await api.client.post(
        "/api/v1/explain", json={"certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA"}
    )
    assert_error(reply, 400, "CertificateContentError", "PEM")


async def test_an_internal_error_is_500_without_details(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.broker, "auth_mode", broken)
    reply = await api.client.get("/api/v1/auth-mode")
    body = assert_error(reply, 500, "InternalError")
    assert "secret" not in body["message"]
