"""The MQTT over TLS listener's TLS layer with real handshakes on loopback: Python's ssl module
(the system's OpenSSL) as the client, certmq's pyOpenSSL connection as the server."""

from __future__ import annotations

import asyncio
import datetime
import gc
import hashlib
import socket
import ssl
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from certmq.auth.decision import CA_NOT_REGISTERED, CERTIFICATE_EXPIRED, NO_CLIENT_CERTIFICATE
from certmq.auth.handshake_refusal import decision_for_handshake_failure
from certmq.broker.listeners import serve_tls
from certmq.pki import generate_key
from certmq.pki.files import certificates_pem, write_certificates, write_private_key
from certmq.pki.issue import CertifiedKey, create_ca, issue_device_certificate, issue_server_certificate
from certmq.tls.connection import HandshakeError
from certmq.tls.context import ServerContexts, TrustSettings


@dataclass
class Device:
    cert: Path
    key: Path
    der: bytes


@dataclass
class Pki:
    server_ca: Path
    server_cert: Path
    server_key: Path
    fleet: CertifiedKey
    device: Device
    expired: Device
    stranger: Device


def _device(directory: Path, name: str, ca: CertifiedKey, **validity: datetime.datetime) -> Device:
    key = generate_key("ec")
    certificate = issue_device_certificate(ca.certificate, ca.key, name, key.public_key(), **validity)
    write_certificates(directory / f"{name}.crt", certificate, ca.certificate)
    write_private_key(directory / f"{name}.key", key)
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Device(directory / f"{name}.crt", directory / f"{name}.key", der)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca_key = generate_key("ec")
    server_ca = CertifiedKey(create_ca("server CA", server_ca_key), server_ca_key)
    server_key = generate_key("ec")
    server = issue_server_certificate(
        server_ca.certificate, server_ca.key, "localhost", ["localhost", "127.0.0.1"], server_key.public_key()
    )
    write_certificates(directory / "server-ca.crt", server_ca.certificate)
    write_certificates(directory / "server.crt", server)
    write_private_key(directory / "server.key", server_key)
    fleet_key = generate_key("ec")
    fleet = CertifiedKey(create_ca("fleet CA", fleet_key), fleet_key)
    stranger_key = generate_key("ec")
    stranger_ca = CertifiedKey(create_ca("stranger CA", stranger_key), stranger_key)
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    return Pki(
        server_ca=directory / "server-ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        fleet=fleet,
        device=_device(directory, "device", fleet),
        expired=_device(
            directory, "expired", fleet, not_before=long_ago, not_after=long_ago + datetime.timedelta(days=1)
        ),
        stranger=_device(directory, "stranger", stranger_ca),
    )


class Echo(asyncio.Protocol):
    """Echoes what it reads; remembers the peer certificate it was given."""

    def __init__(self, seen: Listener) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.seen.peer_certificates.append(transport.get_extra_info("peer_certificate"))
        self.seen.ciphers.append(transport.get_extra_info("cipher"))
        verified_issuer = transport.get_extra_info("verified_issuer")
        self.seen.verified_issuers.append(verified_issuer() if verified_issuer is not None else None)
        self.seen.transports.append(weakref.ref(transport))

    def data_received(self, data: bytes) -> None:
        if data == b"bye":
            self.transport.close()
        else:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.seen.lost.set()


@dataclass
class Listener:
    port: int
    contexts: ServerContexts
    peer_certificates: list[bytes | None] = field(default_factory=list)
    ciphers: list[object] = field(default_factory=list)
    verified_issuers: list[bytes | None] = field(default_factory=list)
    transports: list[weakref.ref[asyncio.BaseTransport]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    failed: asyncio.Event = field(default_factory=asyncio.Event)


async def _listen(
    pki: Pki, verifies_client_certificates: bool, handshake_timeout: float = 5.0
) -> tuple[asyncio.Server, Listener]:
    cas = (certificates_pem(pki.fleet.certificate).decode(),)
    contexts = ServerContexts(
        TrustSettings(pki.server_cert, pki.server_key, verifies_client_certificates, cas)
    )
    listener = Listener(0, contexts)

    def failed(peer: str, error: BaseException) -> None:
        listener.failures.append(error)
        listener.failed.set()

    server = await serve_tls(lambda: Echo(listener), contexts, "127.0.0.1", 0, handshake_timeout, failed)  # type: ignore[arg-type, return-value]
    listener.port = server.sockets[0].getsockname()[1]
    return server, listener


@pytest.fixture
async def mutual(pki: Pki) -> AsyncIterator[Listener]:
    server, listener = await _listen(pki, True)
    yield listener
    server.close()


def _client_context(pki: Pki, device: Device | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    if device is not None:
        context.load_cert_chain(str(device.cert), str(device.key))
    return context


async def _exchange(listener: Listener, context: ssl.SSLContext, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", listener.port, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_a_device_handshakes_and_the_protocol_gets_its_certificate(pki: Pki, mutual: Listener) -> None:
    assert await _exchange(mutual, _client_context(pki, pki.device), b"hello") == b"hello"
    assert mutual.peer_certificates == [pki.device.der]
    _, version, bits = mutual.ciphers[0]  # type: ignore[misc]
    assert version == "TLSv1.3" and bits >= 128
    assert mutual.failures == []


def _resume_twice(pki: Pki, port: int) -> list[bool]:
    """Two blocking connections, the second resuming the first's session: whether each resumed."""
    context = _client_context(pki, pki.device)
    session = None
    resumed = []
    for _ in range(2):
        raw = socket.create_connection(("127.0.0.1", port))
        with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"again")
            assert tls.recv(5) == b"again"  # the session ticket comes with it
            resumed.append(tls.session_reused)
            session = tls.session
    return resumed


async def test_the_handshake_names_the_ca_that_verified_the_device_and_a_resumed_one_none(
    pki: Pki, mutual: Listener
) -> None:
    assert await asyncio.to_thread(_resume_twice, pki, mutual.port) == [False, True]
    ca_fingerprint = hashlib.sha256(pki.fleet.certificate.public_bytes(serialization.Encoding.DER)).digest()
    # A resumed session verified nothing: the decision must check the signature itself.
    assert mutual.verified_issuers == [ca_fingerprint, None]
    assert mutual.peer_certificates == [pki.device.der, pki.device.der]


async def test_large_writes_both_ways_arrive_whole(pki: Pki, mutual: Listener) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: many TLS records, more than one read
    assert await _exchange(mutual, _client_context(pki, pki.device), payload) == payload


async def test_tls_1_2_clients_are_served(pki: Pki, mutual: Listener) -> None:
    context = _client_context(pki, pki.device)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await _exchange(mutual, context, b"twelve") == b"twelve"
    assert mutual.ciphers[0][1] == "TLSv1.2"  # type: ignore[index]


async def test_close_sends_close_notify_after_the_data(pki: Pki, mutual: Listener) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", mutual.port, ssl=_client_context(pki, pki.device), server_hostname="localhost"
    )
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.write(b"bye")
    # A clean TLS close: end of stream, not an error.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.wait_for(mutual.lost.wait(), 5)


async def test_a_closed_connection_is_freed_without_the_cycle_collector(pki: Pki, mutual: Listener) -> None:
    """Its TLS layer and OpenSSL connection go when the last reference does: a broker that
    leaves every connection to the cycle collector pays for its passes over them."""
    gc.disable()
    try:
        await test_close_sends_close_notify_after_the_data(pki, mutual)
        for _ in range(100):
            if mutual.transports[0]() is None:
                break
            await asyncio.sleep(0.01)
        assert mutual.transports[0]() is None
    finally:
        gc.enable()


async def _refused(listener: Listener, context: ssl.SSLContext) -> HandshakeError:
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _exchange(listener, context, b"x")
    await asyncio.wait_for(listener.failed.wait(), 5)
    (error,) = listener.failures
    assert isinstance(error, HandshakeError)
    return error


@pytest.mark.parametrize(
    ("device", "verify_code", "reason"),
    # The stranger sends its CA along: a self-signed certificate in the chain (19).
    [("stranger", 19, CA_NOT_REGISTERED), ("expired", 10, CERTIFICATE_EXPIRED)],
)
async def test_a_refused_certificate_is_reported_with_openssls_verify_code(
    pki: Pki, mutual: Listener, device: str, verify_code: int, reason: str
) -> None:
    error = await _refused(mutual, _client_context(pki, getattr(pki, device)))
    assert error.reason == "CERTIFICATE_VERIFY_FAILED"
    assert error.verify_code == verify_code
    assert error.verify_message is not None and error.verify_message in str(error)
    decision = decision_for_handshake_failure(error)
    assert decision is not None and decision.reason == reason and not decision.allowed
    assert mutual.peer_certificates == []  # the MQTT protocol never saw the connection


async def test_no_client_certificate_in_mutual_mode(pki: Pki, mutual: Listener) -> None:
    error = await _refused(mutual, _client_context(pki, None))
    decision = decision_for_handshake_failure(error)
    assert decision is not None and decision.reason == NO_CLIENT_CERTIFICATE


async def test_one_way_mode_asks_for_no_certificate(pki: Pki) -> None:
    server, listener = await _listen(pki, False)
    try:
        # A client certificate offered is simply not asked for.
        assert await _exchange(listener, _client_context(pki, pki.device), b"one") == b"one"
        assert await _exchange(listener, _client_context(pki, None), b"two") == b"two"
        assert listener.peer_certificates == [None, None]
    finally:
        server.close()


async def test_the_next_handshake_uses_the_new_generation(pki: Pki, mutual: Listener) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", mutual.port, ssl=_client_context(pki, pki.device), server_hostname="localhost"
    )
    await mutual.contexts.update(verifies_client_certificates=False)
    # The live connection keeps its context; a new one is not asked for a certificate.
    writer.write(b"live")
    assert await reader.readexactly(4) == b"live"
    assert await _exchange(mutual, _client_context(pki, None), b"new") == b"new"
    assert mutual.peer_certificates == [pki.device.der, None]
    writer.close()


async def test_a_silent_client_times_out(pki: Pki) -> None:
    server, listener = await _listen(pki, True, handshake_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        await asyncio.wait_for(listener.failed.wait(), 5)
        assert "timed out" in str(listener.failures[0])
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        server.close()


async def test_garbage_instead_of_a_client_hello_closes_only_that_connection(
    pki: Pki, mutual: Listener
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", mutual.port)
    writer.write(b"MQTT is not TLS\r\n" * 10)
    await asyncio.wait_for(mutual.failed.wait(), 5)
    assert decision_for_handshake_failure(mutual.failures[0]) is None
    await asyncio.wait_for(reader.read(), 5)
    writer.close()
    # The listener still serves others.
    assert await _exchange(mutual, _client_context(pki, pki.device), b"ok") == b"ok"


async def test_a_client_that_hangs_up_mid_handshake_is_reported(pki: Pki, mutual: Listener) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", mutual.port)
    writer.close()
    await asyncio.wait_for(mutual.failed.wait(), 5)
    assert isinstance(mutual.failures[0], HandshakeError)
    assert decision_for_handshake_failure(mutual.failures[0]) is None


def test_errors_without_openssls_queue_are_described_too() -> None:
    error = HandshakeError.from_openssl(SSL.SysCallError(-1, "Unexpected EOF"), None)
    assert (error.reason, error.verify_code) == (None, 0) and str(error)
    assert decision_for_handshake_failure(error) is None
    queued = SSL.Error([("SSL routines", "", "peer did not return a certificate")])
    error = HandshakeError.from_openssl(queued, None)
    assert error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
