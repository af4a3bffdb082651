"""paho-mqtt over every listener: TCP, TLS (verifying the server as localhost), WebSocket and
secure WebSocket on path /mqtt; TLS 1.2 and 1.3."""

from __future__ import annotations

import ssl

import pytest

from broker_process import write_test_ca
from paho_client import V5, V311, PahoClient
from raw_mqtt import RawClient

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
TRANSPORTS = [
    pytest.param("tcp", False, id="tcp"),
    pytest.param("tcp", True, id="tls"),
    pytest.param("websockets", False, id="ws"),
    pytest.param("websockets", True, id="wss"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("transport", "tls"), TRANSPORTS)
def test_publish_and_receive_over_each_listener(clients, topic, version, transport, tls):
    subscriber = clients.paho(version=version, transport=transport, tls=tls)
    subscriber.connect()
    subscriber.subscribe(f"{topic}/#", qos=2)
    # The publisher is on another listener: routing crosses listeners.
    publisher = clients.connected(V5)
    for qos in (0, 1, 2):
        publisher.publish(f"{topic}/q{qos}", f"over-{transport}-{qos}".encode(), qos=qos)
    received = subscriber.expect_messages(3)
    assert [(message.topic, message.payload, message.qos) for message in received] == [
        (f"{topic}/q{qos}", f"over-{transport}-{qos}".encode(), qos) for qos in (0, 1, 2)
    ]

    subscriber.publish(f"{topic}/back", b"from-" + transport.encode(), qos=1)
    assert subscriber.expect_message().payload == b"from-" + transport.encode()


@pytest.mark.parametrize(
    "tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_tls_versions(broker, clients, tls_version):
    context = ssl.create_default_context(cafile=str(broker.ca_file))
    context.minimum_version = context.maximum_version = tls_version
    client = RawClient("localhost", broker.tls_port, tls=context)
    try:
        assert client.connect(clients.client_id("tls")).reason_code == 0
        assert (
            client.sock.version()
            == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[tls_version]
        )
    finally:
        client.close()


def test_server_certificate_names_localhost(broker):
    context = ssl.create_default_context(cafile=str(broker.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch|doesn.t match"):
        RawClient("127.0.0.1", broker.tls_port, tls=context, server_hostname="not-the-broker.example")


def test_tls_with_the_wrong_ca_is_refused(broker, tmp_path):
    wrong_ca, _ = write_test_ca(tmp_path, "some other CA")
    client = PahoClient("localhost", broker.tls_port, client_id="wrong-ca", ca_file=wrong_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.client.connect("localhost", broker.tls_port)
    client.close()
