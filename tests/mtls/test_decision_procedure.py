"""Each branch of the decision procedure, reached by a real mutual-TLS connection."""

from __future__ import annotations

import ssl
import threading
import uuid
from pathlib import Path

import pytest
from openssl_pki import Issued, make_ca, make_device
from operated_instance import device_sn_of, refused_at_connect

from conftest import Instance
from paho_client import V5, V311
from raw_mqtt import ConnectionClosed, RawClient

NOT_AUTHORIZED_5 = 0x87
NOT_AUTHORIZED_311 = 0x05


def latest_decision(instance: Instance, **query: str) -> dict[str, object]:
    decisions = instance.decisions(**query)
    assert decisions, f"no decision recorded for {query}"
    return decisions[0]


def refused_in_handshake(instance: Instance, device: Issued | None) -> None:
    """The TLS handshake (or, with TLS 1.3, the first read after it) fails: no CONNACK ever comes."""
    with pytest.raises((ssl.SSLError, ConnectionClosed, ConnectionError)):
        client = RawClient("127.0.0.1", instance.broker.tls_port, tls=instance.tls_context(device), timeout=5)
        try:
            client.connect(f"refused-{uuid.uuid4().hex[:6]}")
        finally:
            client.close()


def test_new_device_is_registered_then_recognised(mutual: Instance, fleet_device: Issued) -> None:
    first = mutual.device_client(fleet_device)
    first.connect()
    device_sn = device_sn_of(mutual, fleet_device)
    record = mutual.api.get(f"/device-certificates/{mutual.fleet_sn}/{device_sn}").json()
    assert record["status"] == "active"
    assert record["name"] == fleet_device.cert.stem
    first.disconnect()

    again = mutual.device_client(fleet_device)
    again.connect()
    reasons = [d["reason"] for d in mutual.decisions(device_sn=device_sn)]
    assert reasons[:2] == ["registered-device", "new-device"]
    assert all(d["step"] == 6 and d["result"] == "allow" for d in mutual.decisions(device_sn=device_sn))


def test_registered_inactive_device_is_refused(mutual: Instance, fleet_device: Issued) -> None:
    mutual.device_client(fleet_device).connect()
    device_sn = device_sn_of(mutual, fleet_device)
    mutual.cli("device", "inactivate", mutual.fleet_sn, device_sn)
    assert refused_at_connect(mutual, fleet_device, V5) == NOT_AUTHORIZED_5
    assert refused_at_connect(mutual, fleet_device, V311) == NOT_AUTHORIZED_311
    decision = latest_decision(mutual, device_sn=device_sn)
    assert (decision["step"], decision["reason"], decision["result"]) == (2, "device-inactive", "deny")


def test_first_connections_in_parallel_register_the_device_once(
    mutual: Instance, fleet_device: Issued
) -> None:
    # As many client ids at once as one certificate may hold sessions (mqtt.max_sessions_per_certificate).
    clients = [mutual.device_client(fleet_device, client_id=f"parallel-{n}") for n in range(10)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.connect().reason_code)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [0] * 10
    device_sn = device_sn_of(mutual, fleet_device)
    listed = mutual.api.get(
        "/device-certificates", params={"ca_sn": mutual.fleet_sn, "name": fleet_device.cert.stem}
    )
    assert [item["device_sn"] for item in listed.json()["items"]] == [device_sn]
    reasons = [d["reason"] for d in mutual.decisions(device_sn=device_sn, limit="50")]
    assert len(reasons) == 10 and set(reasons) <= {"new-device", "registered-device"}


def test_unknown_ca_fails_the_handshake_and_is_recorded(mutual: Instance, tmp_path: Path) -> None:
    stranger_ca = make_ca(tmp_path / "stranger", "stranger-ca")
    device = make_device(tmp_path, stranger_ca, "stranger-device")
    refused_in_handshake(mutual, device)
    decision = latest_decision(mutual, result="deny", reason="ca-not-registered")
    assert decision["step"] == 3


def test_devices_of_an_inactive_ca_are_refused(mutual: Instance, tmp_path: Path) -> None:
    other_ca = make_ca(tmp_path / "other", "other-ca")
    other_sn = mutual.register_ca(other_ca, "other")
    mutual.cli("ca", "inactivate", other_sn)
    device = make_device(tmp_path, other_ca, "other-device")
    assert refused_at_connect(mutual, device) == NOT_AUTHORIZED_5
    decision = latest_decision(mutual, ca_sn=other_sn)
    assert (decision["step"], decision["reason"]) == (4, "ca-inactive")

    mutual.cli("ca", "activate", other_sn)
    mutual.device_client(device).connect()


@pytest.mark.parametrize(
    ("dates", "reason"),
    [
        (("20200101000000Z", "20210101000000Z"), "certificate-expired"),
        (("20400101000000Z", "20410101000000Z"), "certificate-not-yet-valid"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificates_outside_their_validity_are_refused(
    mutual: Instance, tmp_path: Path, dates: tuple[str, str], reason: str
) -> None:
    assert mutual.fleet_ca is not None
    device = make_device(
        tmp_path, mutual.fleet_ca, f"dated-{reason}", not_before=dates[0], not_after=dates[1]
    )
    refused_in_handshake(mutual, device)
    decision = latest_decision(mutual, result="deny", reason=reason)
    assert decision["step"] == 5


def test_a_certificate_without_client_auth_usage_is_refused(mutual: Instance, tmp_path: Path) -> None:
    assert mutual.fleet_ca is not None
    device = make_device(tmp_path, mutual.fleet_ca, "server-only", extended_key_usage="serverAuth")
    refused_in_handshake(mutual, device)
    decision = latest_decision(mutual, result="deny", reason="wrong-key-usage")
    assert decision["step"] == 5


def test_a_second_certificate_with_a_registered_serial_is_refused(mutual: Instance, tmp_path: Path) -> None:
    assert mutual.fleet_ca is not None
    serial = uuid.uuid4().hex[:16]
    original = make_device(tmp_path / "a", mutual.fleet_ca, "original", serial=serial)
    impostor = make_device(tmp_path / "b", mutual.fleet_ca, "impostor", serial=serial)
    mutual.device_client(original).connect()
    assert refused_at_connect(mutual, impostor) == NOT_AUTHORIZED_5
    decision = latest_decision(mutual, result="deny", reason="serial-collision")
    assert decision["step"] == 2
    assert decision["cn"] == "impostor"


def test_no_client_certificate_in_mutual_mode(mutual: Instance) -> None:
    refused_in_handshake(mutual, None)
    decision = latest_decision(mutual, result="deny", reason="no-client-certificate")
    assert decision["step"] == 1


def test_every_decision_is_counted_in_the_metrics(mutual: Instance, fleet_device: Issued) -> None:
    mutual.device_client(fleet_device).connect()
    metrics = mutual.api.get(f"{mutual.url}/metrics").text
    assert 'certmq_decisions_total{reason="new-device",result="allow"}' in metrics
    assert "certmq_device_certificates" in metrics


def test_explain_runs_the_procedure_without_connecting(mutual: Instance, fleet_device: Issued) -> None:
    lines = mutual.cli("explain", str(fleet_device.cert)).stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["1", "2", "3", "4", "5", "6"]
    assert "decision: ALLOW at step 6 (new-device)" in lines
    assert (
        mutual.api.get("/device-certificates", params={"name": fleet_device.cert.stem}).json()["total"] == 0
    )


def test_an_intermediate_ca_registered_alone_is_enough(mutual: Instance, tmp_path: Path) -> None:
    root = make_ca(tmp_path / "root", "unregistered-root")
    intermediate = make_ca(tmp_path / "intermediate", "plant-intermediate", issuer=root)
    intermediate_sn = mutual.register_ca(intermediate, "plant")
    with_chain = make_device(tmp_path / "a", intermediate, "plant-a")
    mutual.device_client(with_chain).connect()
    # A device that sends its certificate alone, without the CA: matched to the registered CA all the same.
    alone = make_device(tmp_path / "b", intermediate, "plant-b")
    bare = Issued(alone.cert, alone.key, alone.cert)
    mutual.device_client(bare).connect()
    names = {
        item["name"]
        for item in mutual.api.get("/device-certificates", params={"ca_sn": intermediate_sn}).json()["items"]
    }
    assert names == {"plant-a", "plant-b"}


def test_rsa_cas_and_devices_work_as_ec_ones_do(mutual: Instance, tmp_path: Path) -> None:
    rsa_ca = make_ca(tmp_path / "rsa", "rsa-ca", kind="rsa")
    rsa_sn = mutual.register_ca(rsa_ca, "rsa")
    device = make_device(tmp_path, rsa_ca, "rsa-device", kind="rsa")
    mutual.device_client(device).connect()
    assert mutual.decisions(ca_sn=rsa_sn)[0]["reason"] == "new-device"
