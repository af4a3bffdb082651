"""Status changes take effect on live sessions at once, also for resumed TLS sessions."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from pathlib import Path

from openssl_pki import Issued, make_ca, make_device
from test_decision_procedure import device_sn_of, refused_at_connect

from conftest import Instance
from paho_client import V5, V311
from raw_mqtt import CONNACK, ConnectionClosed, RawClient

NOT_AUTHORIZED = 0x87
# A revoked session is disconnected within one second.
REVOCATION_DEADLINE = 1.0


def connected_device_with_will(instance: Instance, device: Issued, will_topic: str, version: int = V5):  # type: ignore[no-untyped-def]
    client = instance.device_client(device, version=version)
    client.will_set(will_topic, b"gone", qos=1)
    client.connect()
    return client


def watcher(instance: Instance, device: Issued, topic: str):  # type: ignore[no-untyped-def]
    """Another device listening for wills."""
    client = instance.device_client(device)
    client.connect()
    client.subscribe(topic, qos=1)
    return client


def test_inactivating_a_device_cuts_its_session_without_its_will(
    mutual: Instance, fleet_device: Issued, tmp_path: Path
) -> None:
    assert mutual.fleet_ca is not None
    topic = f"wills/{uuid.uuid4().hex[:8]}"
    observer = watcher(mutual, make_device(tmp_path / "w", mutual.fleet_ca, "watcher"), topic)
    device = connected_device_with_will(mutual, fleet_device, topic)
    device_sn = device_sn_of(mutual, fleet_device)

    mutual.cli("device", "inactivate", mutual.fleet_sn, device_sn)
    reason = device.wait_disconnected(REVOCATION_DEADLINE)
    assert reason is not None and reason.value == NOT_AUTHORIZED
    assert "inactivated" in str(getattr(device.disconnect_properties, "ReasonString", ""))
    assert refused_at_connect(mutual, fleet_device) == NOT_AUTHORIZED
    assert observer.drain() == [], "a revoked session's will was published"

    mutual.cli("device", "activate", mutual.fleet_sn, device_sn)
    mutual.device_client(fleet_device).connect()


def test_inactivating_a_ca_cuts_every_session_it_authenticated(mutual: Instance, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", "line-ca")
    ca_sn = mutual.register_ca(ca, "line")
    devices = [make_device(tmp_path / f"d{n}", ca, f"line-{n}") for n in range(3)]
    clients = [
        mutual.device_client(device, version=V5 if n % 2 else V311) for n, device in enumerate(devices)
    ]
    for client in clients:
        client.connect()
    assert mutual.fleet_ca is not None
    bystander = mutual.device_client(make_device(tmp_path / "b", mutual.fleet_ca, "bystander"))
    bystander.connect()

    mutual.cli("ca", "inactivate", ca_sn)
    for client in clients:
        client.wait_disconnected(REVOCATION_DEADLINE)
    bystander.assert_connected()
    assert refused_at_connect(mutual, devices[0]) == NOT_AUTHORIZED

    mutual.cli("ca", "activate", ca_sn)
    mutual.device_client(devices[0]).connect()


def test_deleting_a_ca_removes_its_devices_and_cuts_their_sessions(mutual: Instance, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", "retired-ca")
    ca_sn = mutual.register_ca(ca, "retired")
    device = make_device(tmp_path, ca, "retired-device")
    client = mutual.device_client(device)
    client.connect()

    mutual.cli("ca", "delete", ca_sn)
    client.wait_disconnected(REVOCATION_DEADLINE)
    device_sn = device_sn_of(mutual, device)
    assert mutual.api.get(f"/device-certificates/{ca_sn}/{device_sn}").status_code == 404
    # The deleted CA leaves the TLS trust (the handshake fails) or, until the new context is in
    # place, the decision at CONNECT refuses it: either way the device is out.
    try:
        late = RawClient("127.0.0.1", mutual.broker.tls_port, tls=mutual.tls_context(device))
        try:
            assert late.connect("after-delete").reason_code == NOT_AUTHORIZED
        finally:
            late.close()
    except (ssl.SSLError, ConnectionClosed, ConnectionError):
        pass


def test_deleting_a_device_cuts_it_and_its_next_connection_registers_it_again(
    mutual: Instance, fleet_device: Issued
) -> None:
    client = mutual.device_client(fleet_device)
    client.connect()
    device_sn = device_sn_of(mutual, fleet_device)
    mutual.cli("device", "delete", mutual.fleet_sn, device_sn)
    client.wait_disconnected(REVOCATION_DEADLINE)
    mutual.device_client(fleet_device).connect()
    assert mutual.decisions(device_sn=device_sn)[0]["reason"] == "new-device"


def _mqtt_connect(sock: ssl.SSLSocket, client_id: str) -> int:
    """Send a 3.1.1 CONNECT on an established TLS socket and return the CONNACK return code."""
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id.encode()
    sock.sendall(bytes([0x10, len(body)]) + body)
    header = sock.recv(4)
    if not header:
        raise ConnectionError("closed before CONNACK")
    assert header[0] >> 4 == CONNACK
    return header[3]


def tls12_context(instance: Instance, device: Issued) -> ssl.SSLContext:
    """TLS 1.2, whose session ids are resumed in one round trip, and available at once."""
    context = instance.tls_context(device)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def connect_over_tls(
    instance: Instance, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[int, ssl.SSLSession | None]:
    """A 3.1.1 CONNECT over a new TLS connection, resuming ``session`` (one of ``context``'s) when
    given and asserting that the broker did: the CONNACK return code and the TLS session."""
    with (
        socket.create_connection(("127.0.0.1", instance.broker.tls_port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="localhost", session=session) as tls,
    ):
        if session is not None:
            assert tls.session_reused, "the broker did not resume the TLS session"
        return _mqtt_connect(tls, "resumer"), tls.session


def test_a_resumed_tls_session_is_still_checked_at_connect(mutual: Instance, fleet_device: Issued) -> None:
    context = tls12_context(mutual, fleet_device)
    code, session = connect_over_tls(mutual, context)
    assert code == 0 and session is not None

    device_sn = device_sn_of(mutual, fleet_device)
    mutual.cli("device", "inactivate", mutual.fleet_sn, device_sn)
    time.sleep(0.1)
    assert connect_over_tls(mutual, context, session)[0] == 0x05
    decision = mutual.decisions(device_sn=device_sn)[0]
    assert (decision["result"], decision["reason"]) == ("deny", "device-inactive")
