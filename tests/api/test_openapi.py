"""The OpenAPI document of REST v1: valid, and true to what the API answers."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from api.conftest import Api

METHODS = {"get", "post", "put", "delete", "patch"}


async def openapi(api: Api) -> dict[str, Any]:
    reply = await api.client.get("/api/v1/openapi.json", headers={"Authorization": ""})
    assert reply.status_code == 200
    document: dict[str, Any] = reply.json()
    return document


async def test_the_document_is_valid_openapi(api: Api) -> None:
    document = await openapi(api)
    validate(document)
    assert document["info"]["title"] == "certmq REST API"


async def test_every_resource_is_documented(api: Api) -> None:
    paths = (await openapi(api))["paths"]
    expected = {
        ("post", "/api/v1/registration-codes"),
        ("get", "/api/v1/ca-certificates"),
        ("post", "/api/v1/ca-certificates"),
        ("get", "/api/v1/ca-certificates/{sn}"),
        ("delete", "/api/v1/ca-certificates/{sn}"),
        ("post", "/api/v1/ca-certificates/{sn}/activate"),
        ("post", "/api/v1/ca-certificates/{sn}/inactivate"),
        ("get", "/api/v1/device-certificates"),
        ("get", "/api/v1/device-certificates/{ca_sn}/{device_sn}"),
        ("delete", "/api/v1/device-certificates/{ca_sn}/{device_sn}"),
        ("post", "/api/v1/device-certificates/{ca_sn}/{device_sn}/activate"),
        ("post", "/api/v1/device-certificates/{ca_sn}/{device_sn}/inactivate"),
        ("get", "/api/v1/server-certificate"),
        ("put", "/api/v1/server-certificate"),
        ("get", "/api/v1/auth-mode"),
        ("put", "/api/v1/auth-mode"),
        ("get", "/api/v1/access-keys"),
        ("post", "/api/v1/access-keys"),
        ("delete", "/api/v1/access-keys/{access_key_id}"),
        ("get", "/api/v1/connections"),
        ("post", "/api/v1/connections/{client_id}/kick"),
        ("get", "/api/v1/decisions"),
        ("get", "/api/v1/operations"),
        ("post", "/api/v1/explain"),
        ("get", "/api/v1/instance"),
        ("get", "/api/v1/healthz"),
    }
    documented = {(method, path) for path, item in paths.items() for method in item if method in METHODS}
    assert documented == expected


async def test_errors_and_authentication_are_documented(api: Api) -> None:
    document = await openapi(api)
    assert document["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["adminToken"]["description"],
    }
    error_schema = document["components"]["schemas"]["ErrorBody"]
    assert set(error_schema["properties"]) == {"code", "message"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            # Invalid input is answered with 400 and an ErrorBody, never FastAPI's 422 shape.
            assert "422" not in responses, (method, path)
            if path == "/api/v1/healthz":
                assert "security" not in operation
                continue
            assert operation["security"] == [{"adminToken": []}], (method, path)
            for status in ("400", "401"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_swagger_ui_is_served_from_the_package(api: Api) -> None:
    reply = await api.client.get("/api/v1/docs", headers={"Authorization": ""})
    assert reply.status_code == 200 and 'data-openapi-url="/api/v1/openapi.json"' in reply.text
    assert reply.headers["content-security-policy"].startswith("default-src 'self'; script-src 'self';")
    # Every file the page names is certmq's own, and served.
    references = re.findall(r'(?:src|href)="([^"]*)"', reply.text)
    assert len(references) == 4 and "<script>" not in reply.text
    for reference in references:
        assert reference.startswith("/api/v1/docs/assets/"), reference
        asset = await api.client.get(reference, headers={"Authorization": ""})
        assert asset.status_code == 200 and len(asset.content) > 500, reference


async def test_the_root_is_the_rpc_endpoint(api: Api) -> None:
    # "/" belongs to the ApsaraMQ RPC endpoint (tests/rpc): a request without an AccessKey
    # signature is refused there, in the ApsaraMQ error shape, whatever bearer token it carries.
    reply = await api.client.get("/")
    assert reply.status_code == 403
    assert reply.json()["Code"] == "SignatureDoesNotMatch" and reply.json()["RequestId"]
