"""Every action of the ApsaraMQ-compatible API driven by Alibaba Cloud's official Python SDK
(``alibabacloud-onsmqtt20200420``), unchanged, pointed at certmq, with both signature schemes the
SDK sends: ACS3-HMAC-SHA256 (its default) and the older HMAC-SHA1 RPC signature."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException, ThrottlingException
from cryptography import x509
from sqlalchemy.exc import OperationalError

from api.conftest import Pki
from certmq.api.rpc import ACTIONS, RpcSettings
from certmq.web.secret_failures import FREE_FAILURES

from .conftest import Fleet
from .live_api import LiveApi, sdk_client
from .relay import RecordingRelay, body_of, exchange

BOTH_SCHEMES = ["ACS3-HMAC-SHA256", "HMAC-SHA1"]


@pytest.fixture(params=BOTH_SCHEMES)
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sdk(live: LiveApi, scheme: str) -> Client:
    return live.sdk(scheme)


@dataclass(frozen=True)
class Refusal:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.body["Code"])


def refused(call: Callable[[], Any]) -> Refusal:
    """What the SDK raises for a call that certmq refuses, checked for the ApsaraMQ error body."""
    with pytest.raises(AlibabaCloudException) as caught:
        call()
    error = caught.value
    assert set(error.data) >= {"RequestId", "HostId", "Code", "Message"}, error.data
    assert error.data["Code"] == error.code and error.data["RequestId"]
    return Refusal(error.status_code, error.data)


def epoch_ms(moment: Any) -> str:
    return str(int(moment.timestamp() * 1000))


def register(sdk: Client, live: LiveApi, authority: Pki, name: str) -> str:
    code = sdk.get_register_code(models.GetRegisterCodeRequest(mqtt_instance_id=live.instance_id))
    return sdk.register_ca_certificate(
        models.RegisterCaCertificateRequest(
            mqtt_instance_id=live.instance_id,
            ca_name=name,
            ca_content=authority.ca_pem,
            verification_content=authority.verification_pem(code.body.register_code),
        )
    ).body.sn


# --- success paths ------------------------------------------------------------------------------


def test_a_ca_registered_listed_inactivated_activated_and_deleted(live: LiveApi, sdk: Client) -> None:
    instance = live.instance_id
    authority = Pki.create("sdk lifecycle CA")
    code = sdk.get_register_code(models.GetRegisterCodeRequest(mqtt_instance_id=instance))
    assert code.status_code == 200 and code.body.request_id and len(code.body.register_code) == 32
    verification = authority.verification_pem(code.body.register_code)
    registered = sdk.register_ca_certificate(
        models.RegisterCaCertificateRequest(
            mqtt_instance_id=instance,
            ca_name="Line 7 – Ünïcode CA",
            ca_content=authority.ca_pem,
            verification_content=verification,
        )
    )
    assert registered.body.sn == authority.sn and registered.body.request_id

    shown = sdk.get_ca_certificate(models.GetCaCertificateRequest(mqtt_instance_id=instance, sn=authority.sn))
    certificate = authority.ca.certificate
    assert shown.body.data.to_map() == {
        "CaName": "Line 7 – Ünïcode CA",
        "CaContent": authority.ca_pem,
        "Sn": authority.sn,
        "RegistrationCode": code.body.register_code,
        "VerificationContent": verification,
        "ValidBegin": epoch_ms(certificate.not_valid_before_utc),
        "ValidEnd": epoch_ms(certificate.not_valid_after_utc),
        "Status": "1",
    }

    listed = sdk.list_ca_certificate(
        models.ListCaCertificateRequest(mqtt_instance_id=instance, page_no="1", page_size="100")
    ).body.data
    assert isinstance(listed.page_no, int) and isinstance(listed.page_size, int)
    assert isinstance(listed.total, int) and listed.total >= 1
    assert (listed.page_no, listed.page_size) == (1, 100)
    mine = [vo for vo in listed.ca_certificate_vos if vo.sn == authority.sn]
    assert len(mine) == 1 and mine[0].status == "1" and mine[0].ca_content == authority.ca_pem

    for action, status in (("inactivate", "0"), ("active", "1")):
        request_type = getattr(models, f"{action.capitalize()}CaCertificateRequest")
        reply = getattr(sdk, f"{action}_ca_certificate")(
            request_type(mqtt_instance_id=instance, sn=authority.sn)
        )
        assert reply.body.sn == authority.sn and reply.body.request_id
        shown = sdk.get_ca_certificate(
            models.GetCaCertificateRequest(mqtt_instance_id=instance, sn=authority.sn)
        )
        assert shown.body.data.status == status

    deleted = sdk.delete_ca_certificate(
        models.DeleteCaCertificateRequest(mqtt_instance_id=instance, sn=authority.sn)
    )
    assert deleted.body.sn == authority.sn
    refusal = refused(
        lambda: sdk.get_ca_certificate(
            models.GetCaCertificateRequest(mqtt_instance_id=instance, sn=authority.sn)
        )
    )
    assert (refusal.code, refusal.status) == ("FindCaBySnError", 400)


def test_ca_pages_count_every_ca(live: LiveApi, sdk: Client) -> None:
    for n in range(3):
        register(sdk, live, Pki.create(f"paging CA {n}"), f"paging {n}")
    first = sdk.list_ca_certificate(
        models.ListCaCertificateRequest(mqtt_instance_id=live.instance_id, page_no="1", page_size="2")
    ).body.data
    total = first.total
    assert total >= 3 and len(first.ca_certificate_vos) == 2
    seen = [vo.sn for vo in first.ca_certificate_vos]
    page = 2
    while len(seen) < total:
        data = sdk.list_ca_certificate(
            models.ListCaCertificateRequest(
                mqtt_instance_id=live.instance_id, page_no=str(page), page_size="2"
            )
        ).body.data
        assert data.page_no == page and data.total == total
        seen += [vo.sn for vo in data.ca_certificate_vos]
        page += 1
    assert len(set(seen)) == total
    beyond = sdk.list_ca_certificate(
        models.ListCaCertificateRequest(
            mqtt_instance_id=live.instance_id, page_no=str(page + 5), page_size="2"
        )
    ).body.data
    assert beyond.ca_certificate_vos == [] and beyond.total == total


def test_devices_shown_listed_inactivated_activated_and_deleted(
    live: LiveApi, sdk: Client, fleet: Fleet
) -> None:
    instance = live.instance_id
    first_sn, first_pem = fleet.device("meter-1")
    second_sn, _ = fleet.device("meter-2")
    certificate = x509.load_pem_x509_certificate(first_pem.encode())

    shown = sdk.get_device_certificate(
        models.GetDeviceCertificateRequest(mqtt_instance_id=instance, ca_sn=fleet.sn, device_sn=first_sn)
    )
    assert shown.body.data.to_map() == {
        "CaSn": fleet.sn,
        "DeviceContent": first_pem,
        "DeviceName": "meter-1",
        "DeviceSn": first_sn,
        "Status": "1",
        "ValidBegin": epoch_ms(certificate.not_valid_before_utc),
        "ValidEnd": epoch_ms(certificate.not_valid_after_utc),
    }

    by_ca = sdk.list_device_certificate_by_ca_sn(
        models.ListDeviceCertificateByCaSnRequest(
            mqtt_instance_id=instance, ca_sn=fleet.sn, page_no="1", page_size="10"
        )
    ).body.data
    assert (by_ca.page_no, by_ca.page_size, by_ca.total) == (1, 10, 2)
    assert sorted(vo.device_sn for vo in by_ca.device_certificate_vos) == sorted([first_sn, second_sn])
    assert {vo.device_name for vo in by_ca.device_certificate_vos} == {"meter-1", "meter-2"}
    assert all(vo.ca_sn == fleet.sn and vo.status == "1" for vo in by_ca.device_certificate_vos)

    everything = sdk.list_device_certificate(
        models.ListDeviceCertificateRequest(mqtt_instance_id=instance, page_no="1", page_size="100")
    ).body.data
    assert isinstance(everything.total, int) and everything.total >= 2
    assert everything.page_size == 100

    for action, status in (("inactivate", "0"), ("active", "1")):
        request_type = getattr(models, f"{action.capitalize()}DeviceCertificateRequest")
        reply = getattr(sdk, f"{action}_device_certificate")(
            request_type(mqtt_instance_id=instance, ca_sn=fleet.sn, device_sn=first_sn)
        )
        assert reply.body.device_sn == first_sn and reply.body.request_id
        shown = sdk.get_device_certificate(
            models.GetDeviceCertificateRequest(mqtt_instance_id=instance, ca_sn=fleet.sn, device_sn=first_sn)
        )
        assert shown.body.data.status == status

    deleted = sdk.delete_device_certificate(
        models.DeleteDeviceCertificateRequest(mqtt_instance_id=instance, ca_sn=fleet.sn, device_sn=first_sn)
    )
    assert deleted.body.device_sn == first_sn
    left = sdk.list_device_certificate_by_ca_sn(
        models.ListDeviceCertificateByCaSnRequest(
            mqtt_instance_id=instance, ca_sn=fleet.sn, page_no="1", page_size="10"
        )
    ).body.data
    assert [vo.device_sn for vo in left.device_certificate_vos] == [second_sn] and left.total == 1


def test_the_sm3_variant_of_acs3_works_too(live: LiveApi) -> None:
    sdk = live.sdk("ACS3-HMAC-SM3")
    reply = sdk.get_register_code(models.GetRegisterCodeRequest(mqtt_instance_id=live.instance_id))
    assert reply.status_code == 200 and reply.body.register_code


# --- every error code of the RPC API, through the SDK -------------------------------------------


class Scenarios:
    """One way to make the SDK meet each error of the RPC API: each method makes the call that is
    refused and returns the refusal."""

    def __init__(
        self, live: LiveApi, sdk: Client, fleet: Fleet, scheme: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.live, self.sdk, self.fleet, self.scheme, self.monkeypatch = live, sdk, fleet, scheme, monkeypatch
        self.instance = live.instance_id

    def _code(self) -> str:
        request = models.GetRegisterCodeRequest(mqtt_instance_id=self.instance)
        return str(self.sdk.get_register_code(request).body.register_code)

    def _register(self, authority: Pki, verification: str, ca_content: str | None = None) -> Any:
        return self.sdk.register_ca_certificate(
            models.RegisterCaCertificateRequest(
                mqtt_instance_id=self.instance,
                ca_name="scenario",
                ca_content=authority.ca_pem if ca_content is None else ca_content,
                verification_content=verification,
            )
        )

    def ParameterFieldCheckFailed(self) -> Refusal:
        request = models.ListCaCertificateRequest(
            mqtt_instance_id=self.instance, page_no="1", page_size="101"
        )
        return refused(lambda: self.sdk.list_ca_certificate(request))

    def MqttInstanceNotFound(self) -> Refusal:
        request = models.GetRegisterCodeRequest(mqtt_instance_id="mqtt-cn-elsewhere")
        return refused(lambda: self.sdk.get_register_code(request))

    def RegisterCodeError(self) -> Refusal:
        authority = Pki.create("unknown code CA")
        verification = authority.verification_pem("0123456789abcdef0123456789abcdef")
        return refused(lambda: self._register(authority, verification))

    def RegisterCodeUsed(self) -> Refusal:
        code = self._code()
        first, second = Pki.create("first user of the code"), Pki.create("second user of the code")
        self._register(first, first.verification_pem(code))
        return refused(lambda: self._register(second, second.verification_pem(code)))

    def CaNumExceed(self) -> Refusal:
        registry = self.live.registry
        self.monkeypatch.setattr(registry, "ca_limit", len(registry.index.cas()))
        authority = Pki.create("one CA too many")
        verification = authority.verification_pem(self._code())
        return refused(lambda: self._register(authority, verification))

    def CertificateContentError(self) -> Refusal:
        authority = Pki.create("bad PEM CA")
        verification = authority.verification_pem(self._code())
        return refused(lambda: self._register(authority, verification, ca_content="-----BEGIN CERTIFICATE"))

    def SnNotUnique(self) -> Refusal:
        authority = self.fleet.authority
        verification = authority.verification_pem(self._code())
        return refused(lambda: self._register(authority, verification))

    def FindCaBySnError(self) -> Refusal:
        request = models.InactivateCaCertificateRequest(mqtt_instance_id=self.instance, sn="00c0ffee")
        return refused(lambda: self.sdk.inactivate_ca_certificate(request))

    def FindDeviceBySnError(self) -> Refusal:
        request = models.GetDeviceCertificateRequest(
            mqtt_instance_id=self.instance, ca_sn=self.fleet.sn, device_sn="0bad"
        )
        return refused(lambda: self.sdk.get_device_certificate(request))

    def InvalidAccessKeyId_NotFound(self) -> Refusal:
        sdk = self.live.sdk(self.scheme, access_key_id="LTAI-not-a-key-of-this-instance", secret="whatever")
        request = models.GetRegisterCodeRequest(mqtt_instance_id=self.instance)
        return refused(lambda: sdk.get_register_code(request))

    def SignatureDoesNotMatch(self) -> Refusal:
        sdk = self.live.sdk(self.scheme, secret=self.live.access_key_secret + "x")
        request = models.GetRegisterCodeRequest(mqtt_instance_id=self.instance)
        return refused(lambda: sdk.get_register_code(request))

    def SignatureNonceUsed(self) -> Refusal:
        """A request made by the SDK, captured on its way to certmq and sent again."""
        relay = RecordingRelay(self.live.port)
        try:
            sdk = sdk_client(
                f"127.0.0.1:{relay.port}", self.live.access_key_id, self.live.access_key_secret, self.scheme
            )
            request = models.ListCaCertificateRequest(
                mqtt_instance_id=self.instance, page_no="1", page_size="1"
            )
            assert sdk.list_ca_certificate(request).status_code == 200
        finally:
            relay.close()
        (captured,) = relay.requests
        response = exchange(self.live.port, captured)
        return Refusal(int(response.split(b" ", 2)[1]), json.loads(body_of(response)))

    def SystemOverFlow(self) -> Refusal:
        settings = RpcSettings(rate_limit=0.01, rate_burst=2)
        limited = LiveApi(self.live.directory / f"limited-{self.scheme}", rpc_settings=settings).start()
        try:
            sdk = limited.sdk(self.scheme)
            request = models.GetRegisterCodeRequest(mqtt_instance_id=limited.instance_id)
            sdk.get_register_code(request)
            sdk.get_register_code(request)
            with pytest.raises(ThrottlingException) as caught:
                sdk.get_register_code(request)
        finally:
            limited.stop()
        # The SDK reads x-acs-retry-after: it knows how long to back off.
        assert caught.value.retry_after is not None and caught.value.retry_after > 0
        return Refusal(caught.value.status_code, caught.value.data)

    def Throttling_User(self) -> Refusal:
        """Wrong secrets from one address: then even the right one waits."""
        guessed = LiveApi(self.live.directory / f"guessed-{self.scheme}").start()
        try:
            request = models.GetRegisterCodeRequest(mqtt_instance_id=guessed.instance_id)
            wrong = guessed.sdk(self.scheme, secret=guessed.access_key_secret + "x")
            for _ in range(FREE_FAILURES):
                assert refused(lambda: wrong.get_register_code(request)).code == "SignatureDoesNotMatch"
            with pytest.raises(ThrottlingException) as caught:
                guessed.sdk(self.scheme).get_register_code(request)
        finally:
            guessed.stop()
        assert caught.value.retry_after is not None and caught.value.retry_after > 0
        return Refusal(caught.value.status_code, caught.value.data)

    def InternalError(self) -> Refusal:
        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the database went away")

        self.monkeypatch.setattr(self.live.registry, "list_cas", broken)
        request = models.ListCaCertificateRequest(mqtt_instance_id=self.instance, page_no="1", page_size="10")
        return refused(lambda: self.sdk.list_ca_certificate(request))

    def ServiceUnavailable(self) -> Refusal:
        """A node of a cluster that cannot reach the registry where the nodes keep their nonces."""
        node = LiveApi(
            self.live.directory / f"clustered-{self.scheme}", rpc_settings=RpcSettings(shared=True)
        ).start()

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError(
                "INSERT INTO api_nonce …", {}, ConnectionRefusedError("the registry is down")
            )

        try:
            self.monkeypatch.setattr(node.registry, "spend_nonce", unreachable)
            request = models.GetRegisterCodeRequest(mqtt_instance_id=node.instance_id)
            return refused(lambda: node.sdk(self.scheme).get_register_code(request))
        finally:
            node.stop()


# Every error code of the RPC API with its HTTP status (docs/api.md, "Errors" of the RPC API).
RPC_ERRORS = {
    "ParameterFieldCheckFailed": 400,
    "MqttInstanceNotFound": 400,
    "RegisterCodeError": 400,
    "RegisterCodeUsed": 401,
    "CaNumExceed": 401,
    "CertificateContentError": 401,
    "SnNotUnique": 401,
    "FindCaBySnError": 400,
    "FindDeviceBySnError": 400,
    "InvalidAccessKeyId.NotFound": 403,
    "SignatureDoesNotMatch": 403,
    "SignatureNonceUsed": 403,
    "SystemOverFlow": 403,
    "Throttling.User": 429,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}


@pytest.fixture
def scenarios(
    live: LiveApi, sdk: Client, fleet: Fleet, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> Scenarios:
    return Scenarios(live, sdk, fleet, scheme, monkeypatch)


@pytest.mark.parametrize(("code", "status"), RPC_ERRORS.items(), ids=list(RPC_ERRORS))
def test_every_error_of_the_rpc_api_reaches_the_sdk(scenarios: Scenarios, code: str, status: int) -> None:
    refusal: Refusal = getattr(scenarios, code.replace(".", "_"))()
    assert (refusal.code, refusal.status) == (code, status), refusal.body
    assert refusal.body["Message"] and refusal.body["HostId"] and refusal.body["RequestId"]


def test_every_action_of_the_api_version_is_served() -> None:
    assert set(ACTIONS) == {
        "GetRegisterCode", "RegisterCaCertificate", "GetCaCertificate", "ListCaCertificate",
        "ActiveCaCertificate", "InactivateCaCertificate", "DeleteCaCertificate", "GetDeviceCertificate",
        "ListDeviceCertificate", "ListDeviceCertificateByCaSn", "ActiveDeviceCertificate",
        "InactivateDeviceCertificate", "DeleteDeviceCertificate",
    }  # fmt: skip


# --- AccessKeys managed at run time ---------------------------------------------------------------


def test_access_keys_created_and_deleted_count_at_once(live: LiveApi, scheme: str) -> None:
    with live.rest() as rest:
        created = rest.post("/access-keys").json()
        sdk = live.sdk(scheme, access_key_id=created["id"], secret=created["secret"])
        request = models.GetRegisterCodeRequest(mqtt_instance_id=live.instance_id)
        assert sdk.get_register_code(request).body.register_code
        assert rest.delete(f"/access-keys/{created['id']}").status_code == 204
    refusal = refused(lambda: sdk.get_register_code(request))
    assert (refusal.code, refusal.status) == ("InvalidAccessKeyId.NotFound", 403)


def test_calls_are_counted_in_the_metrics(live: LiveApi, sdk: Client, scheme: str) -> None:
    def count(action: str, code: str) -> float:
        text = live.http.get(f"{live.url}/metrics").text
        line = f'certmq_api_calls_total{{action="{action}",code="{code}"}} '
        return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))

    before = count("GetRegisterCode", "Success"), count("GetCaCertificate", "FindCaBySnError")
    sdk.get_register_code(models.GetRegisterCodeRequest(mqtt_instance_id=live.instance_id))
    refused(
        lambda: sdk.get_ca_certificate(
            models.GetCaCertificateRequest(mqtt_instance_id=live.instance_id, sn="00")
        )
    )
    live.rpc("MadeUpAction", {"MqttInstanceId": live.instance_id})
    assert count("GetRegisterCode", "Success") == before[0] + 1
    assert count("GetCaCertificate", "FindCaBySnError") == before[1] + 1
    assert count("unknown", "ParameterFieldCheckFailed") >= 1
    assert "MadeUpAction" not in live.http.get(f"{live.url}/metrics").text
