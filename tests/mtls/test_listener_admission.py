"""Which listeners are open in each auth mode, and to whom: in mutual mode plain WebSocket closes
like plain TCP (Signature credentials sent in clear can be replayed) unless configured open, and
secure WebSocket keeps credential clients unless configured to ask for device certificates. Real
paho-mqtt and websockets clients against a real `certmq serve`; the start-up log, `certmq mode`
and the console say which listeners are open."""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openssl_pki import Issued, make_ca, make_device
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as websocket_connect

from conftest import Instance, running_instance
from paho_client import PahoClient

MUTUAL_DEFAULT = "tls: devices with certificates of registered CAs; wss: clients with Signature credentials; tcp, ws: closed"
ONE_WAY = "tcp, tls, ws, wss: clients with Signature credentials"
MUTUAL_SETTINGS = {"CERTMQ_INSTANCE_AUTH_MODE": "mutual", "CERTMQ_AUTH_ANONYMOUS": "false"}


def websocket_client(
    instance: Instance, *, secure: bool, signed: bool = True, device: Issued | None = None
) -> PahoClient:
    """A paho client over ws or wss (path /mqtt), with Signature credentials when ``signed``."""
    return instance.listener_client("wss" if secure else "ws", signed=signed, device=device)


def round_trip(client: PahoClient) -> None:
    """The session works: a message published to itself comes back."""
    topic = f"admission/{uuid.uuid4().hex[:8]}"
    assert client.subscribe(topic, qos=1) == [1]
    client.publish(topic, b"ping", qos=1)
    assert client.expect_message().payload == b"ping"


def nothing_listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def refused_in_wss_handshake(instance: Instance, device: Issued | None) -> None:
    """A WebSocket client over TLS, without a device certificate or with one the broker refuses:
    the TLS handshake (with TLS 1.3 the first read after it) fails, no upgrade is answered."""
    with pytest.raises(
        (ssl.SSLError, ConnectionError, EOFError, InvalidHandshake, ConnectionClosed)
    ) as refused:
        websocket_connect(
            f"wss://localhost:{instance.broker.wss_port}/mqtt",
            ssl=instance.tls_context(device),
            subprotocols=["mqtt"],  # type: ignore[list-item]
            open_timeout=5,
        ).close()
    assert not isinstance(refused.value, InvalidStatus), "the broker answered the upgrade over HTTP"
    causes: list[BaseException] = []
    error: BaseException | None = refused.value
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(cause, (ssl.SSLError, ConnectionError, EOFError)) for cause in causes), causes


def wss_decisions(instance: Instance, **query: str) -> list[dict[str, Any]]:
    return [decision for decision in instance.decisions(**query) if decision["listener"] == "wss"]


def test_mutual_mode_closes_plain_websocket_and_keeps_wss_for_credentials(mutual: Instance) -> None:
    assert nothing_listens(mutual.broker.ws_port)
    browser = websocket_client(mutual, secure=True)
    browser.connect()
    round_trip(browser)
    assert wss_decisions(mutual, reason="signature")
    # Anonymous access is off: a WebSocket client without credentials is refused.
    assert (
        websocket_client(mutual, secure=True, signed=False).connect(expect_success=False).reason_code == 0x87
    )

    # Every place that says which listeners are open says the same.
    assert f"auth mode mutual: {MUTUAL_DEFAULT}" in mutual.broker.log_file.read_text()
    assert mutual.cli("mode", "show").stdout.splitlines() == ["mutual", f"listeners: {MUTUAL_DEFAULT}"]
    assert mutual.cli_json("mode", "show") == {"mode": "mutual", "listeners": MUTUAL_DEFAULT}
    assert f"Listeners: {MUTUAL_DEFAULT}." in mutual.console_text("/console/server-certificate")


@pytest.fixture
def plain_websocket_open(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    with running_instance(
        tmp_path_factory, **MUTUAL_SETTINGS, CERTMQ_LISTENERS_WS_IN_MUTUAL_MODE="true"
    ) as instance:
        yield instance


def test_plain_websocket_opens_in_mutual_mode_when_configured(plain_websocket_open: Instance) -> None:
    client = websocket_client(plain_websocket_open, secure=False)
    client.connect()
    round_trip(client)
    described = "tls: devices with certificates of registered CAs; ws, wss: clients with Signature credentials; tcp: closed"
    assert f"auth mode mutual: {described}" in plain_websocket_open.broker.log_file.read_text()
    assert plain_websocket_open.cli_json("mode", "show")["listeners"] == described


@pytest.fixture
def wss_certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    settings = MUTUAL_SETTINGS | {"CERTMQ_LISTENERS_WSS_IN_MUTUAL_MODE": "certificates"}
    with running_instance(tmp_path_factory, **settings) as instance:
        instance.fleet_ca = make_ca(instance.work / "fleet", "wss-fleet-ca")
        instance.fleet_sn = instance.register_ca(instance.fleet_ca, "wss-fleet")
        yield instance


def test_wss_that_asks_for_certificates_decides_like_the_tls_listener(
    wss_certificates: Instance, tmp_path: Path
) -> None:
    instance = wss_certificates
    described = "tls, wss: devices with certificates of registered CAs; tcp, ws: closed"
    assert f"auth mode mutual: {described}" in instance.broker.log_file.read_text()
    assert instance.cli_json("mode", "show")["listeners"] == described

    # Signature credentials alone no longer let a client in: the handshake asks for a certificate.
    refused_in_wss_handshake(instance, None)
    refusal = wss_decisions(instance, result="deny", reason="no-client-certificate")
    assert refusal and refusal[0]["step"] == 1

    # A device certificate of a registered CA: the decision procedure lets it in and registers it.
    assert instance.fleet_ca is not None
    device = make_device(tmp_path, instance.fleet_ca, "wss-device")
    client = websocket_client(instance, secure=True, signed=False, device=device)
    client.connect()
    round_trip(client)
    allowed = wss_decisions(instance, result="allow")
    assert [(d["reason"], d["cn"], d["step"]) for d in allowed] == [("new-device", "wss-device", 6)]
    live = {item["client_id"]: item for item in instance.api.get("/connections").json()["items"]}
    assert live[client.client._client_id.decode()]["listener"] == "wss"
    assert live[client.client._client_id.decode()]["identity"]["cert.cn"] == "wss-device"

    # A certificate of a CA nobody registered fails the handshake, recorded as on the tls listener.
    stranger = make_device(
        tmp_path / "stranger", make_ca(tmp_path / "stranger-ca", "stranger-ca"), "stranger"
    )
    refused_in_wss_handshake(instance, stranger)
    assert wss_decisions(instance, result="deny", reason="ca-not-registered")

    # Inactivating the device cuts its secure WebSocket session, as it does on tls.
    device_sn = allowed[0]["device_sn"]
    instance.cli("device", "inactivate", instance.fleet_sn, device_sn)
    client.wait_disconnected(5)
    refused = websocket_client(instance, secure=True, signed=False, device=device).connect(
        expect_success=False
    )
    assert refused.reason_code == 0x87


def test_switching_the_mode_opens_and_closes_plain_websocket(one_way: Instance) -> None:
    assert f"auth mode one-way: {ONE_WAY}" in one_way.broker.log_file.read_text()
    kept = websocket_client(one_way, secure=False)
    kept.connect()
    cut = websocket_client(one_way, secure=False)
    cut.connect()
    browser = websocket_client(one_way, secure=True)
    browser.connect()

    # The console's confirmation counts the two plain WebSocket sessions mutual mode refuses.
    confirmation = one_way.console_text("/console/server-certificate/auth-mode?mode=mutual")
    assert "Ticked, 2 live connections will be disconnected." in confirmation
    assert f"Listeners after the switch: {MUTUAL_DEFAULT}." in confirmation

    # Switched without disconnecting: no new plain WebSocket connection, the live ones stay.
    switched = one_way.cli("mode", "set", "mutual").stdout.splitlines()
    assert switched == ["auth mode is mutual", f"listeners: {MUTUAL_DEFAULT}"]
    assert nothing_listens(one_way.broker.ws_port)
    round_trip(kept)
    websocket_client(one_way, secure=True).connect()  # wss still takes credentials

    # Switching again with --disconnect-nonconforming cuts them; wss credential sessions stay.
    assert one_way.cli_json("mode", "set", "mutual", "--disconnect-nonconforming") == {
        "mode": "mutual",
        "disconnected": 2,
        "listeners": MUTUAL_DEFAULT,
    }
    kept.wait_disconnected(5)
    cut.wait_disconnected(5)
    round_trip(browser)

    # Back in one-way mode plain WebSocket opens again.
    assert one_way.cli("mode", "set", "one-way").stdout.splitlines() == [
        "auth mode is one-way",
        f"listeners: {ONE_WAY}",
    ]
    again = websocket_client(one_way, secure=False)
    again.connect()
    round_trip(again)
    assert f"Listeners: {ONE_WAY}." in one_way.console_text("/console/server-certificate")
