"""Run-time changes without a restart: the server certificate and the auth mode; and Signature
credentials."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from pathlib import Path

import pytest
from openssl_pki import Issued, make_ca, make_device
from operated_instance import new_server_pair, presented_serial

from conftest import Instance
from paho_client import V311
from raw_mqtt import ConnectionClosed, RawClient


def test_replacing_the_server_certificate_keeps_live_sessions(
    mutual: Instance, fleet_device: Issued, tmp_path: Path
) -> None:
    topic = f"live/{uuid.uuid4().hex[:8]}"
    device = mutual.device_client(fleet_device)
    device.connect()
    device.subscribe(topic, qos=1)
    before = presented_serial(mutual, fleet_device)

    chain, key, serial = new_server_pair(mutual, tmp_path / "api")
    mutual.cli("server-cert", "set", "--cert", str(chain), "--key", str(key))
    assert presented_serial(mutual, fleet_device) == serial != before
    assert mutual.api.get("/server-certificate").json()["sn"] == serial

    device.publish(topic, b"still here", qos=1)
    assert device.expect_message().payload == b"still here"
    device.assert_connected()


def test_a_server_certificate_changed_on_disk_is_picked_up(
    mutual: Instance, fleet_device: Issued, tmp_path: Path
) -> None:
    current = mutual.api.get("/server-certificate").json()
    cert_file = Path(current["cert_file"])
    key_file = cert_file.with_suffix(".key")
    chain, key, serial = new_server_pair(mutual, tmp_path / "disk")
    # Key first, then certificate: a reader may briefly see a mismatched pair and must wait.
    key_file.write_bytes(key.read_bytes())
    cert_file.write_bytes(chain.read_bytes())
    deadline = time.monotonic() + 10
    while presented_serial(mutual, fleet_device) != serial:
        assert time.monotonic() < deadline, "the new certificate on disk was not picked up"
        time.sleep(0.2)


def test_a_certificate_that_does_not_match_its_key_is_rejected(mutual: Instance, tmp_path: Path) -> None:
    chain, _, _ = new_server_pair(mutual, tmp_path / "one")
    _, other_key, _ = new_server_pair(mutual, tmp_path / "two")
    response = mutual.api.put(
        "/server-certificate", json={"chain_pem": chain.read_text(), "key_pem": other_key.read_text()}
    )
    assert response.status_code == 400
    assert "key" in response.json()["message"]


def test_signature_credentials(one_way: Instance) -> None:
    one_way.listener_client("tls", client_id="GID_Test@@@0001").connect()
    one_way.listener_client("tls", client_id="GID_Test@@@0002", version=V311).connect()

    refused = one_way.listener_client("tls", client_id="GID_Test@@@0003", secret="not-the-secret").connect(
        expect_success=False
    )
    assert refused.reason_code == 0x86
    anonymous = one_way.device_client(None).connect(expect_success=False)
    assert anonymous.reason_code == 0x87
    raw = RawClient("127.0.0.1", one_way.broker.tcp_port, version=4)
    try:
        assert raw.connect("GID_Test@@@0004").reason_code == 0x05  # 3.1.1: not authorized
    finally:
        raw.close()
    reasons = {d["reason"] for d in one_way.decisions()}
    assert {"signature", "bad-credentials", "no-credentials"} <= reasons


def test_switching_the_auth_mode_at_run_time(one_way: Instance, tmp_path: Path) -> None:
    fleet_ca = make_ca(tmp_path / "ca", "switch-ca")
    one_way.register_ca(fleet_ca, "switch")
    device = make_device(tmp_path, fleet_ca, "switch-device")
    signed = one_way.listener_client("tls", client_id="GID_Test@@@signed")
    signed.connect()
    one_way.listener_client("tcp", client_id="GID_Test@@@plain").connect()

    assert one_way.cli_json("mode", "set", "mutual", "--disconnect-nonconforming")["mode"] == "mutual"
    assert one_way.cli_json("mode", "show")["mode"] == "mutual"
    # The TLS session without a device certificate does not satisfy mutual mode: it is cut.
    signed.wait_disconnected(5)
    # The next handshake asks for a device certificate.
    with pytest.raises((ssl.SSLError, ConnectionClosed, ConnectionError)):
        client = RawClient("127.0.0.1", one_way.broker.tls_port, tls=one_way.tls_context(None))
        try:
            client.connect("no-certificate")
        finally:
            client.close()
    one_way.device_client(device).connect()
    # Plain TCP closes in mutual mode: no new connections there.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", one_way.broker.tcp_port), timeout=2).close()

    assert one_way.cli_json("mode", "set", "one-way")["mode"] == "one-way"
    one_way.listener_client("tls", client_id="GID_Test@@@again").connect()
    socket.create_connection(("127.0.0.1", one_way.broker.tcp_port), timeout=2).close()
