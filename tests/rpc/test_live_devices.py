"""The official SDK against ``certmq serve`` in mutual mode, with devices that connect over real
mutual TLS (paho-mqtt, certificates made by the openssl command line): a device registered by its
first connection is listed by ListDeviceCertificateByCaSn, and InactivateDeviceCertificate cuts
its live session at once. The calls are in the operations log, for the REST API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alibabacloud_onsmqtt20200420 import models
from cryptography import x509

from certmq.pki import serial_hex

from .live_api import sdk_client

for _directory in ("interop", "mtls"):
    _path = str(Path(__file__).resolve().parents[1] / _directory)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from openssl_pki import make_ca, make_device, make_verification  # noqa: E402

from broker_process import RunningBroker, broker_kind, port_accepts, start_broker  # noqa: E402
from paho_client import V5, PahoClient  # noqa: E402

NOT_AUTHORIZED = 0x87
REVOCATION_DEADLINE = 1.0  # a revoked session is disconnected within one second

pytestmark = pytest.mark.skipif(broker_kind() != "certmq", reason="the RPC API is certmq's")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    running = start_broker(
        tmp_path_factory.mktemp("rpc-mutual"),
        {"CERTMQ_INSTANCE_AUTH_MODE": "mutual", "CERTMQ_AUTH_ANONYMOUS": "false"},
    )
    deadline = time.monotonic() + 10
    while not port_accepts(running.http_port):
        assert time.monotonic() < deadline, running.log_tail()
        time.sleep(0.05)
    yield running
    assert running.stop() == 0, running.log_tail()


def device_client(broker: RunningBroker, device: object) -> PahoClient:
    return PahoClient(
        "localhost",
        broker.tls_port,
        client_id=f"GID_rpc@@@{uuid.uuid4().hex[:8]}",
        version=V5,
        ca_file=broker.ca_file,
        client_certificate=(device.chain, device.key),  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("scheme", ["ACS3-HMAC-SHA256", "HMAC-SHA1"])
def test_a_device_registered_by_mutual_tls_is_listed_and_cut_off_through_the_sdk(
    broker: RunningBroker, tmp_path: Path, scheme: str
) -> None:
    info = broker.init_info
    instance = info["instance_id"]
    sdk = sdk_client(
        f"127.0.0.1:{broker.http_port}", info["access_key_id"], info["access_key_secret"], scheme
    )

    # The CA, registered through the SDK with the code flow.
    ca = make_ca(tmp_path / "ca", f"rpc-fleet-{scheme.lower()}")
    code = sdk.get_register_code(models.GetRegisterCodeRequest(mqtt_instance_id=instance)).body.register_code
    verification = make_verification(tmp_path, ca, code)
    ca_sn = sdk.register_ca_certificate(
        models.RegisterCaCertificateRequest(
            mqtt_instance_id=instance,
            ca_name="rpc fleet",
            ca_content=ca.cert.read_text(),
            verification_content=verification.read_text(),
        )
    ).body.sn

    # A device connects over mutual TLS: its first connection registers it (step 6).
    name = f"meter-{uuid.uuid4().hex[:6]}"
    device = make_device(tmp_path / "device", ca, name)
    device_sn = serial_hex(x509.load_pem_x509_certificate(device.cert.read_bytes()))
    listing = models.ListDeviceCertificateByCaSnRequest(
        mqtt_instance_id=instance, ca_sn=ca_sn, page_no="1", page_size="10"
    )
    assert sdk.list_device_certificate_by_ca_sn(listing).body.data.total == 0
    client = device_client(broker, device)
    client.connect()

    data = sdk.list_device_certificate_by_ca_sn(listing).body.data
    assert (data.total, data.page_no, data.page_size) == (1, 1, 10)
    (listed,) = data.device_certificate_vos
    assert (listed.ca_sn, listed.device_sn, listed.device_name, listed.status) == (
        ca_sn,
        device_sn,
        name,
        "1",
    )
    assert listed.device_content.strip() == device.cert.read_text().strip()

    # Inactivated through the SDK: the live session is cut within a second, new ones are refused.
    started = time.monotonic()
    reply = sdk.inactivate_device_certificate(
        models.InactivateDeviceCertificateRequest(mqtt_instance_id=instance, ca_sn=ca_sn, device_sn=device_sn)
    )
    assert reply.body.device_sn == device_sn
    reason = client.wait_disconnected(REVOCATION_DEADLINE)
    assert time.monotonic() - started < REVOCATION_DEADLINE + 0.5
    assert reason is not None and reason.value == NOT_AUTHORIZED
    shown = sdk.get_device_certificate(
        models.GetDeviceCertificateRequest(mqtt_instance_id=instance, ca_sn=ca_sn, device_sn=device_sn)
    )
    assert shown.body.data.status == "0"
    refused = device_client(broker, device)
    assert refused.connect(expect_success=False).reason_code == NOT_AUTHORIZED
    refused.close()

    # Activated again: the device connects.
    sdk.active_device_certificate(
        models.ActiveDeviceCertificateRequest(mqtt_instance_id=instance, ca_sn=ca_sn, device_sn=device_sn)
    )
    again = device_client(broker, device)
    again.connect()
    again.close()
    client.close()

    # Every call is in the operations log: who, what, result.
    url, token = f"http://127.0.0.1:{broker.http_port}", info["admin_token"]
    command = [sys.executable, "-m", "certmq", "operations", "--action", "InactivateDeviceCertificate",
               "--access-key", info["access_key_id"], "--url", url, "--token", token, "--json"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    logged = [
        entry for entry in json.loads(result.stdout) if entry["parameters"].get("DeviceSn") == device_sn
    ]
    assert len(logged) == 1
    assert logged[0]["code"] == "Success" and logged[0]["status"] == 200 and logged[0]["authenticated"]
    assert logged[0]["signature_method"] == scheme
    assert logged[0]["parameters"]["CaSn"] == ca_sn and logged[0]["request_id"] == reply.body.request_id
