"""The server certificate in use, replaced and reloaded without dropping a connection.

The pair an operator set through the API or the console is written under ``DATA_DIR/server/``
and named in the registry, so that it outlives a restart; until one is set, the pair ``[tls]``
names is used (:func:`certmq.instance.server_certificate_files`). A pair that cannot serve is
refused and the one in use stays.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cryptography import x509

from certmq.config import TlsSection
from certmq.control import ServerCertificateInfo, ServerCertificateRejected
from certmq.instance import server_certificate_files
from certmq.pki import fingerprint_sha256, serial_hex
from certmq.registry.events import RegistryEvent, SettingChanged
from certmq.registry.service import RegistryService
from certmq.sealed_secrets import open_secret, seal_secret
from certmq.tls.context import ServerCertificateError, ServerContexts
from certmq.tls.server_certificate import store_server_certificate

log = logging.getLogger("certmq")

# The registry setting that holds the pair an operator set: {"cert_file", "key_file"} where the
# node that took it wrote it, and the pair itself, {"chain_pem", "key_sealed"} (the key sealed
# with the instance key), for the other nodes of a cluster, which write it in their own data
# directories.
SERVER_CERTIFICATE_SETTING = "server_certificate"
_KEY_SEALED_FOR = b"certmq server certificate key"


async def server_certificate_files_in_use(
    registry: RegistryService, data_dir: Path, tls: TlsSection, instance_key: bytes
) -> tuple[Path, Path]:
    """The pair an operator set (written here when another node took it), or else the one
    ``[tls]`` names."""
    stored = await registry.get_setting(SERVER_CERTIFICATE_SETTING)
    if isinstance(stored, dict):
        cert_file, key_file = Path(stored["cert_file"]), Path(stored["key_file"])
        if (cert_file.exists() and key_file.exists()) or "chain_pem" not in stored:
            return cert_file, key_file
        key_pem = open_secret(instance_key, stored["key_sealed"], _KEY_SEALED_FOR)
        return store_server_certificate(data_dir, stored["chain_pem"], key_pem)
    return server_certificate_files(data_dir, tls)


class ServerCertificateInUse:
    def __init__(
        self, registry: RegistryService, contexts: ServerContexts, data_dir: Path, instance_key: bytes
    ) -> None:
        self._registry = registry
        self._contexts = contexts
        self._data_dir = data_dir
        self._instance_key = instance_key
        self._following: set[asyncio.Task[None]] = set()

    def info(self) -> ServerCertificateInfo:
        """The leaf certificate the next handshakes present."""
        generation = self._contexts.generation
        certificate = x509.load_pem_x509_certificates(generation.settings.cert_file.read_bytes())[0]
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(name.value) for name in san]
        except x509.ExtensionNotFound:
            sans = []
        return ServerCertificateInfo(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            sans=sans,
            serial=serial_hex(certificate),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=fingerprint_sha256(certificate),
            cert_file=str(generation.settings.cert_file),
            generation=generation.number,
        )

    async def replace(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        """Write the pair under DATA_DIR/server/ with a new name, make it current, remember it."""
        try:
            cert_file, key_file = store_server_certificate(self._data_dir, chain_pem, key_pem)
        except ValueError as error:
            raise ServerCertificateRejected(str(error)) from None
        try:
            await self._contexts.replace(cert_file, key_file)
        except ServerCertificateError as error:
            raise ServerCertificateRejected(str(error)) from None
        await self._registry.set_setting(
            SERVER_CERTIFICATE_SETTING,
            {
                "cert_file": str(cert_file),
                "key_file": str(key_file),
                "chain_pem": chain_pem,
                "key_sealed": seal_secret(self._instance_key, key_pem, _KEY_SEALED_FOR),
            },
        )
        return self.info()

    def on_registry_event(self, event: RegistryEvent) -> None:
        """Another node of the cluster took a server certificate: serve it here too."""
        if isinstance(event, SettingChanged) and event.key == SERVER_CERTIFICATE_SETTING:
            task = asyncio.get_running_loop().create_task(self._follow())
            self._following.add(task)
            task.add_done_callback(self._following.discard)

    async def _follow(self) -> None:
        stored = await self._registry.get_setting(SERVER_CERTIFICATE_SETTING)
        if not isinstance(stored, dict) or "chain_pem" not in stored:
            return
        chain_pem = stored["chain_pem"]
        current = self._contexts.generation.settings.cert_file
        if current.exists() and current.read_text() == chain_pem:
            return  # taken here, or already followed
        try:
            key_pem = open_secret(self._instance_key, stored["key_sealed"], _KEY_SEALED_FOR)
            cert_file, key_file = store_server_certificate(self._data_dir, chain_pem, key_pem)
            await self._contexts.replace(cert_file, key_file)
        except Exception:
            log.exception("the server certificate another node took could not be used here")
            return
        log.info("server certificate taken on another node: now serving %s", self.info().subject)

    async def reload(self, tls: TlsSection) -> None:
        """Read the files in use again (SIGHUP): a changed pair serves the next handshakes; one
        that cannot serve is logged and the one in use stays."""
        before = self._contexts.generation
        cert_file, key_file = await server_certificate_files_in_use(
            self._registry, self._data_dir, tls, self._instance_key
        )
        try:
            after = await self._contexts.update(cert_file=cert_file, key_file=key_file)
        except ServerCertificateError as error:
            log.error("server certificate not reloaded, the one in use stays: %s", error)
            return
        if after.certificate_sha256 == before.certificate_sha256:
            log.info("server certificate in %s: unchanged", cert_file)
        else:
            info = self.info()
            log.info(
                "server certificate reloaded from %s: %s, Sn %s, valid until %s; live connections are kept",
                cert_file, info.subject, info.serial, info.not_after.isoformat(),
            )  # fmt: skip
