"""Server TLS contexts in generations.

A generation is everything a handshake depends on: the server certificate, whether client
certificates are asked for (mutual mode) and the registered CA certificates that device
certificates are verified against. Every accepted
connection asks for :meth:`ServerContexts.current` and handshakes with the newest generation,
so a replaced server certificate, a switched auth mode or a changed CA set applies to the next
handshake without a restart, while live connections keep the context they began with.
Contexts are built in a worker thread: loading keys and certificates must not stall the loop.

Every TLS listener (MQTT over TLS, secure WebSocket) runs on pyOpenSSL (see
:mod:`certmq.tls.connection`). A generation holds a context that asks for no client
certificate and, in mutual mode, one that asks for a device certificate and verifies it
against the registered CAs; each listener takes the one its admission calls for
(:mod:`certmq.auth.admission`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto

from certmq.file_stamp import file_stamp
from certmq.tls.connection import note_verify_result

log = logging.getLogger("certmq.tls")


class ServerCertificateError(Exception):
    """The server certificate or key cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """What one generation is built from."""

    cert_file: Path
    key_file: Path
    # Whether handshakes may ask for a device certificate and verify it against client_cas: the
    # instance is in mutual mode (certmq.auth.mode).
    verifies_client_certificates: bool = False
    # PEM of every registered CA certificate (active or inactive: status is decided at CONNECT).
    client_cas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContextGeneration:
    number: int
    settings: TrustSettings
    # Asks for no client certificate: one-way mode, and listeners that take credentials.
    one_way: SSL.Context
    # Asks for a device certificate and verifies it against the registered CAs; mutual mode only.
    mutual: SSL.Context | None
    # SHA-256 of the server certificate it presents: tells a reload that changed it from one that did not.
    certificate_sha256: bytes

    @property
    def verifies_client_certificates(self) -> bool:
        return self.mutual is not None

    def context(self, asks_for_certificate: bool) -> SSL.Context:
        if asks_for_certificate and self.mutual is not None:
            return self.mutual
        return self.one_way


# Python's ssl module's choice for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults).
_TLS12_CIPHERS = b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"


def _server_context(settings: TrustSettings, asks_for_certificate: bool) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(_TLS12_CIPHERS)
    # Sessions (and tickets) belong to this listener; OpenSSL refuses to resume without it.
    context.set_session_id(b"certmq-mqtt")
    try:
        context.use_certificate_chain_file(str(settings.cert_file))
        context.use_privatekey_file(str(settings.key_file))
        context.check_privatekey()
    except (OSError, SSL.Error) as error:
        raise ServerCertificateError(
            f"cannot use server certificate {settings.cert_file} with key {settings.key_file}: {error}"
        ) from error
    if asks_for_certificate:
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, note_verify_result)
        store = context.get_cert_store()
        assert store is not None
        # Trust ends at a registered CA, root or intermediate: partial chains are fine.
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
        for pem in settings.client_cas:
            store.add_cert(crypto.X509.from_cryptography(x509.load_pem_x509_certificate(pem.encode())))
    return context


def build_generation(number: int, settings: TrustSettings) -> ContextGeneration:
    one_way = _server_context(settings, False)
    mutual = _server_context(settings, True) if settings.verifies_client_certificates else None
    certificate = SSL.Connection(one_way, None).get_certificate()
    assert certificate is not None  # the context loaded one, or raised
    sha256 = certificate.to_cryptography().fingerprint(hashes.SHA256())
    return ContextGeneration(number, settings, one_way, mutual, sha256)


class ServerContexts:
    """The current generation and the ways to move to a new one."""

    def __init__(self, settings: TrustSettings) -> None:
        self._generation = build_generation(1, settings)
        self._stamps = self._read_stamps(settings)
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def _read_stamps(settings: TrustSettings) -> tuple[object, object]:
        return file_stamp(settings.cert_file), file_stamp(settings.key_file)

    @property
    def generation(self) -> ContextGeneration:
        return self._generation

    async def update(
        self,
        *,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        verifies_client_certificates: bool | None = None,
        client_cas: Sequence[str] | None = None,
    ) -> ContextGeneration:
        """Build the next generation with the given changes and make it current."""
        async with self._lock:
            settings = self._generation.settings
            changes: dict[str, object] = {}
            if cert_file is not None:
                changes["cert_file"] = cert_file
                changes["key_file"] = key_file or cert_file
            if verifies_client_certificates is not None:
                changes["verifies_client_certificates"] = verifies_client_certificates
            if client_cas is not None:
                changes["client_cas"] = tuple(client_cas)
            settings = replace(settings, **changes)  # type: ignore[arg-type]
            number = self._generation.number + 1
            generation = await asyncio.to_thread(build_generation, number, settings)
            self._generation = generation
            self._stamps = self._read_stamps(settings)
        log.info(
            "TLS generation %d: certificate %s, %s, %d registered CAs",
            number, settings.cert_file,
            "device certificates asked for" if settings.verifies_client_certificates else "no client certificates",
            len(settings.client_cas),
        )  # fmt: skip
        return generation

    async def replace(self, cert_file: Path, key_file: Path) -> ContextGeneration:
        """Use a new server certificate for the next handshakes."""
        return await self.update(cert_file=cert_file, key_file=key_file)

    def watch(self, interval: float = 2.0) -> None:
        """Reload the certificate when its files change on disk."""
        if self._watch_task is None:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(interval))

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            settings = self._generation.settings
            stamps = self._read_stamps(settings)
            if stamps == self._stamps or None in stamps:
                continue
            try:
                await self.update(cert_file=settings.cert_file, key_file=settings.key_file)
            except ServerCertificateError as error:
                # Often a half-written pair (certificate replaced, key not yet): try again next tick.
                log.warning("%s; keeping the certificate in use", error)

    def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
