"""Fixtures of the REST API tests: a real registry on a temporary SQLite file, an instance data
directory, a small stand-in for the broker, and the API served by uvicorn on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmq import pki
from certmq.access_keys import AccessKeyStore
from certmq.auth.admission import ListenerPolicy
from certmq.auth.identity import Identity
from certmq.control import (
    EVERY_CONNECTION,
    ClusterStatus,
    ConnectionInfo,
    ConnectionQuery,
    KickOutcome,
    ListenerInfo,
    LiveConnections,
    NodeStatus,
    ServerCertificateInfo,
    ServerCertificateRejected,
    select_connections,
)
from certmq.http_application import create_app
from certmq.instance import InitResult, init_instance, load_instance
from certmq.registry import RegistryService, open_registry
from certmq.web.listener import HttpListener
from certmq.web.metrics import Metrics


def pem(*certificates: x509.Certificate) -> str:
    return pki.certificates_pem(*certificates).decode()


def server_certificate_info(
    chain: list[x509.Certificate], cert_file: str, generation: int
) -> ServerCertificateInfo:
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(name.value) for name in san]
    except x509.ExtensionNotFound:
        sans = []
    return ServerCertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        sans=sans,
        serial=pki.serial_hex(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint_sha256=pki.fingerprint_sha256(leaf),
        cert_file=cert_file,
        generation=generation,
    )


NOT_COUNTED = "the stand-in broker cannot tell which live connections an auth mode refuses: ask a real one"


class StandInBroker:
    """A BrokerControl for tests that need no MQTT: connections and a server certificate in memory.

    It shows what a test gives it and counts nothing of its own: the broker's counters, and how
    many live connections an auth mode refuses, are the real broker's to tell (the tests that ask
    them run ``certmq serve`` with real clients: tests/mtls/test_auth_mode_counts.py,
    tests/interop/test_counters.py)."""

    node = "stand-in"

    def __init__(self, server_cert_file: Path) -> None:
        self.started_at = datetime.now(UTC)
        self.mode = "one-way"
        # What /readyz is to say this node lacks (a real node's are its listeners and NATS).
        self.missing: list[str] = []
        # The nodes of a cluster said not to answer: they are named in every answer.
        self.unanswered: list[str] = []
        self.live: dict[str, ConnectionInfo] = {}
        self.kicked: list[str] = []
        self.mode_changes: list[tuple[str, bool]] = []
        self._chain = pki.load_certificates(server_cert_file)
        self._cert_file = str(server_cert_file)
        self._generation = 1

    def connect(self, client_id: str, listener: str = "tls", **identity: str) -> None:
        self.live[client_id] = ConnectionInfo(
            client_id=client_id,
            listener=listener,
            peer="127.0.0.1:50000",
            protocol_version=5,
            connected_at=datetime.now(UTC),
            identity=Identity.from_fields(identity),
            node=self.node,
        )

    def listeners(self) -> list[ListenerInfo]:
        return [ListenerInfo("tcp", "127.0.0.1", 1883), ListenerInfo("tls", "127.0.0.1", 8883)]

    async def connections(self, query: ConnectionQuery = EVERY_CONNECTION) -> LiveConnections:
        picked = select_connections(self.live.values(), query)
        return LiveConnections(picked.items, picked.total, list(self.unanswered))

    async def kick(self, client_id: str) -> KickOutcome:
        if self.live.pop(client_id, None) is None:
            return KickOutcome(None, list(self.unanswered))
        self.kicked.append(client_id)
        return KickOutcome(self.node)

    async def nodes(self) -> ClusterStatus:
        return ClusterStatus(
            [NodeStatus(self.node, "", self.started_at, self.stats())], list(self.unanswered)
        )

    def unready(self) -> list[str]:
        return list(self.missing)

    def auth_mode(self) -> str:
        return self.mode

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        disconnected = await self.nonconforming(mode) if disconnect_nonconforming else 0
        self.mode = mode
        self.mode_changes.append((mode, disconnect_nonconforming))
        return disconnected

    async def nonconforming(self, mode: str) -> int:
        # With no live connection a mode refuses none; which of some it refuses, a real broker says.
        if self.live:
            raise AssertionError(NOT_COUNTED)
        return 0

    def describe_listeners(self, mode: str) -> str:
        # The listeners of the default configuration: no plain listeners in mutual mode.
        return ListenerPolicy().describe(mode)

    def server_certificate(self) -> ServerCertificateInfo:
        return server_certificate_info(self._chain, self._cert_file, self._generation)

    async def replace_server_certificate(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        try:
            chain = pki.parse_certificates(chain_pem.encode(), "the chain")
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            key = load_pem_private_key(key_pem.encode(), None)
        except (ValueError, pki.PkiError) as error:
            raise ServerCertificateRejected(f"unusable certificate or key: {error}") from None
        if not pki.public_keys_match(chain[0], key):  # type: ignore[arg-type]
            raise ServerCertificateRejected("the key does not belong to the certificate")
        self._chain = chain
        self._generation += 1
        self._cert_file = "replaced.pem"
        return self.server_certificate()

    def stats(self) -> dict[str, int]:
        # The connections given, counted; the other counters are a real broker's.
        counts = {"clients_connected": len(self.live)}
        for connection in self.live.values():
            key = f"connections_{connection.listener}"
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass
class Pki:
    """A CA with its key, and helpers to make what the tests register."""

    ca: pki.CertifiedKey

    @classmethod
    def create(cls, cn: str = "Test Devices CA") -> Pki:
        key = pki.generate_key("ec")
        return cls(pki.CertifiedKey(pki.create_ca(cn, key), key))

    @property
    def ca_pem(self) -> str:
        return pem(self.ca.certificate)

    @property
    def sn(self) -> str:
        return pki.serial_hex(self.ca.certificate)

    def verification_pem(self, code: str) -> str:
        return pem(pki.issue_verification_certificate(self.ca.certificate, self.ca.key, code))

    def device(self, cn: str, **options: object) -> x509.Certificate:
        key = pki.generate_key("ec")
        return pki.issue_device_certificate(
            self.ca.certificate,
            self.ca.key,
            cn,
            key.public_key(),
            **options,  # type: ignore[arg-type]
        )


@dataclass
class Api:
    url: str
    token: str
    init: InitResult
    data_dir: Path
    registry: RegistryService
    broker: StandInBroker
    access_keys: AccessKeyStore
    metrics: Metrics
    client: httpx.AsyncClient
    listener: HttpListener
    cas: list[Pki] = field(default_factory=list)

    async def register_ca(self, authority: Pki | None = None, name: str = "") -> dict[str, object]:
        authority = authority or Pki.create(f"CA {len(self.cas)}")
        self.cas.append(authority)
        code = (await self.client.post("/api/v1/registration-codes")).json()["code"]
        reply = await self.client.post(
            "/api/v1/ca-certificates",
            json={
                "name": name,
                "ca_pem": authority.ca_pem,
                "verification_pem": authority.verification_pem(code),
            },
        )
        assert reply.status_code == 201, reply.text
        body: dict[str, object] = reply.json()
        return body

    async def register_device(self, authority: Pki, cn: str) -> x509.Certificate:
        certificate = authority.device(cn)
        await self.registry.register_device(authority.sn, certificate)
        return certificate


@pytest.fixture
def instance_dir(tmp_path: Path) -> InitResult:
    result = init_instance(tmp_path / "data", "mqtt-test-1")
    assert result is not None
    return result


@pytest.fixture
async def api(instance_dir: InitResult, tmp_path: Path) -> AsyncIterator[Api]:
    instance = load_instance(instance_dir.data_dir)
    store = open_registry(tmp_path / "registry.db")
    registry = RegistryService(store, instance_id=instance.id)
    await registry.open()
    broker = StandInBroker(instance.server_cert_file)
    access_keys = AccessKeyStore.for_instance(instance)
    metrics = Metrics()
    app = create_app(
        registry=registry,
        control=broker,
        instance_id=instance.id,
        admin_token=instance.admin_token,
        access_keys_manager=access_keys,
        metrics=metrics,
    )
    listener = HttpListener(app, "127.0.0.1", 0)
    await listener.start()
    headers = {"Authorization": f"Bearer {instance.admin_token}"}
    async with httpx.AsyncClient(base_url=listener.url, headers=headers, timeout=10) as client:
        yield Api(
            url=listener.url,
            token=instance.admin_token,
            init=instance_dir,
            data_dir=instance.data_dir,
            registry=registry,
            broker=broker,
            access_keys=access_keys,
            metrics=metrics,
            client=client,
            listener=listener,
        )
    await listener.stop()
    await registry.close()
    store.close()


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def days(number: int) -> timedelta:
    return timedelta(days=number)
