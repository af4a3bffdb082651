"""The running instance: registry, broker, TLS trust and management API, wired together.

Data flows one way, transport → protocol → auth/registry → routing; registry changes come
back to the broker only as events: a changed CA set rebuilds the TLS trust, a revoked device
or CA disconnects its live sessions.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmq.access_keys import AccessKeyStore
from certmq.auth.admission import MQTT_LISTENERS, ListenerPolicy
from certmq.auth.authenticator import InstanceAuthenticator
from certmq.auth.decision import DeviceDecision, decide_device
from certmq.auth.handshake_refusal import decision_for_handshake_failure
from certmq.auth.mode import AuthMode
from certmq.auth.revocation import revocation_reason, revokes
from certmq.broker.connection import MQTTConnection
from certmq.broker.server import Broker
from certmq.broker.session import Session
from certmq.broker.topic_rules_file import TopicRulesFile
from certmq.config import Config, TlsSection, changed_settings
from certmq.control import (
    ConnectionInfo,
    ListenerInfo,
    ServerCertificateInfo,
    ServerCertificateRejected,
)
from certmq.demo import ensure_demo_ca
from certmq.http_application import serve_http
from certmq.instance import Instance, server_certificate_files
from certmq.mqtt.reason_codes import ReasonCode
from certmq.pki import fingerprint_sha256, serial_hex
from certmq.registry.errors import SerialCollision
from certmq.registry.events import CaAdded, CaDeleted, RegistryEvent
from certmq.registry.records import Decision
from certmq.registry.service import RegistryService
from certmq.registry.store import open_registry
from certmq.tls.context import ServerCertificateError, ServerContexts, TrustSettings
from certmq.web.metrics import Metrics

log = logging.getLogger("certmq")

AUTH_MODE_SETTING = "auth_mode"
# What a reload applies (see Application.reload): the log settings are applied by `certmq serve`.
RELOADED_SETTINGS = frozenset(
    {"auth.acl_file", "auth.acl_default", "tls.cert_file", "tls.key_file", "log.level", "log.format"}
)
RESTART_HINTS = {
    "instance.auth_mode": "the auth mode in use is switched at run time with `certmq mode set`, "
    "the API or the console",
}
SERVER_CERTIFICATE_SETTING = "server_certificate"


class Application:
    def __init__(self, config: Config, instance: Instance, *, demo: bool = False) -> None:
        self.config = config
        self.instance = instance
        # `make run`: register a demo device CA on a fresh instance (certmq.demo).
        self.demo = demo
        self.registry: RegistryService | None = None
        self.broker: Broker | None = None
        self.contexts: ServerContexts | None = None
        self.mode = AuthMode(config.instance.auth_mode)
        # Which listeners each mode opens, and to whom.
        self.policy = ListenerPolicy.from_config(config)
        self.started_at = datetime.now(UTC)
        self._http: Any = None
        self._unsubscribe: Any = None
        # Read by the Signature check on every CONNECT: keys created through the API work at once.
        self.access_keys = AccessKeyStore.for_instance(instance)
        self.metrics = Metrics()

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        store = open_registry(config.storage.url, config.data_dir)
        audit = config.audit
        registry = self.registry = RegistryService(
            store,
            instance_id=self.instance.id,
            decision_max_rows=audit.max_rows,
            decision_max_age=timedelta(days=audit.retention_days),
            fold_window=timedelta(seconds=audit.fold_window),
        )
        await registry.open()
        if self.demo:
            await ensure_demo_ca(registry, config.data_dir)
        stored_mode = await registry.get_setting(AUTH_MODE_SETTING)
        if stored_mode in tuple(AuthMode):
            self.mode = AuthMode(stored_mode)
        cert_file, key_file = await self._server_certificate_files(config.tls)
        self.contexts = ServerContexts(
            TrustSettings(
                cert_file, key_file, self.mode == AuthMode.MUTUAL, tuple(self._registered_ca_pems())
            )
        )
        authenticator = InstanceAuthenticator(
            instance_id=self.instance.id,
            access_keys=self.access_keys.secrets,
            auth_mode=lambda: self.mode,
            anonymous=config.auth.anonymous,
            index=registry.index,
            register_device=registry.begin_registration,
            on_registration_failure=self._registration_failed,
            audit=self._audit,
            bind_client_id=config.auth.bind_client_id,
            serial_collision_errors=(SerialCollision,),
            policy=self.policy,
        )
        self.broker = Broker(
            config,
            self.instance,
            authenticator,
            contexts=self.contexts,
            on_handshake_failure=self._handshake_failed,
            policy=self.policy,
        )
        self.broker.core.audit = self._audit
        self.broker.core.identity_valid = self._identity_still_valid
        self.broker.core.certificate_expiry.on_expired = self._certificate_expired
        self._unsubscribe = registry.events.subscribe(self._on_registry_event)
        log.info("auth mode %s: %s", self.mode, self.policy.describe(self.mode))
        closed = frozenset(name for name in MQTT_LISTENERS if not self.policy.is_open(name, self.mode))
        await self.broker.start(skip=closed)
        await self._start_http()

    async def _server_certificate_files(self, tls: TlsSection) -> tuple[Path, Path]:
        """The pair set through the API or the console, which is kept in the registry, or else
        the one ``[tls]`` names."""
        assert self.registry is not None
        stored = await self.registry.get_setting(SERVER_CERTIFICATE_SETTING)
        if isinstance(stored, dict):
            return Path(stored["cert_file"]), Path(stored["key_file"])
        return server_certificate_files(self.instance.data_dir, tls)

    async def _start_http(self) -> None:
        address = self.config.listeners.http
        if not address:
            return
        self._http = await serve_http(self, address)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.broker is not None:
            await self.broker.stop()
        if self.registry is not None:
            await self.registry.close()
            self.registry.store.close()

    # -- reload (SIGHUP) ----------------------------------------------------------------

    async def reload(self, config: Config) -> None:
        """Apply a configuration read again without dropping a session: the topic rules file and
        the server certificate files are read again (whether or not their keys changed); every
        other changed key is logged as needing a restart. The log settings are the command's."""
        assert self.broker is not None
        self.broker.reload_topic_rules(TopicRulesFile.from_config(config))
        await self._reload_server_certificate(config.tls)
        for name in changed_settings(self.config, config):
            if name not in RELOADED_SETTINGS:
                how = RESTART_HINTS.get(name, "it takes effect at the next start")
                log.warning("%s changed in the configuration but is not reloaded: %s", name, how)

    async def _reload_server_certificate(self, tls: TlsSection) -> None:
        assert self.contexts is not None
        before = self.contexts.generation
        cert_file, key_file = await self._server_certificate_files(tls)
        try:
            after = await self.contexts.update(cert_file=cert_file, key_file=key_file)
        except ServerCertificateError as error:
            log.error("server certificate not reloaded, the one in use stays: %s", error)
            return
        if after.certificate_sha256 == before.certificate_sha256:
            log.info("server certificate in %s: unchanged", cert_file)
        else:
            info = self.server_certificate()
            log.info(
                "server certificate reloaded from %s: %s, Sn %s, valid until %s; live connections are kept",
                cert_file, info.subject, info.serial, info.not_after.isoformat(),
            )  # fmt: skip

    # -- registry events ----------------------------------------------------------------

    def _registered_ca_pems(self) -> list[str]:
        assert self.registry is not None
        return [entry.certificate.public_bytes(Encoding.PEM).decode() for entry in self.registry.index.cas()]

    def _on_registry_event(self, event: RegistryEvent) -> None:
        if isinstance(event, (CaAdded, CaDeleted)):
            self._spawn(self._rebuild_trust())
        reason = revocation_reason(event)
        if reason is not None:
            self._revoke(lambda connection: revokes(event, connection.identity), reason)

    def _identity_still_valid(self, session: Session) -> bool:
        """Whether the identity a session's client authenticated with still stands: its device
        certificate registered and active, not expired, issued by a registered, active CA that
        has not expired; its AccessKey not deleted."""
        assert self.registry is not None
        identity = session.identity
        if identity.has_device_certificate:
            index = self.registry.index
            ca, device = index.ca(identity.ca_sn), index.device(identity.ca_sn, identity.device_sn)
            if ca is None or not ca.active or device is None or not device.active:
                return False
            now = datetime.now(UTC)
            not_after = identity.certificate_not_after
            if ca.certificate.not_valid_after_utc < now or (not_after is not None and not_after < now):
                return False
        access_key_id = identity.access_key_id
        return not access_key_id or access_key_id in self.access_keys.secrets

    def _registration_failed(self, ca_sn: str, device_sn: str, reason: str) -> None:
        """A device let in on its first connection could not be registered: cut it off."""
        self._revoke(
            lambda connection: connection.identity.is_device(ca_sn, device_sn),
            f"device certificate {device_sn} could not be registered ({reason})",
        )

    def _revoke(self, matches: Any, reason: str) -> None:
        assert self.broker is not None
        count = self.broker.core.disconnect_where(matches, reason)
        if count:
            log.info("%s: disconnected %d session(s)", reason, count)

    async def _rebuild_trust(self) -> None:
        assert self.contexts is not None
        await self.contexts.update(client_cas=self._registered_ca_pems())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        task.add_done_callback(_log_failure)

    # -- audit --------------------------------------------------------------------------

    def _audit(self, **fields: Any) -> None:
        assert self.registry is not None
        self.registry.record_decision(Decision(**fields))
        self.metrics.count_decision(fields["result"], fields["reason"])

    def _handshake_failed(self, listener: str, peer: str, error: BaseException) -> None:
        if self.registry is None:
            return
        decision = decision_for_handshake_failure(error, self.registry.index)
        if decision is not None:
            # A failed handshake proves no identity, whatever it presented.
            self._audit_refusal(decision, listener, peer, "", decision.detail, identity_known=False)

    def _certificate_expired(self, connection: MQTTConnection, valid_until: datetime) -> None:
        """A live session is cut as its certificate expires: recorded as the decision procedure
        decides on that certificate just after ``valid_until``."""
        assert self.registry is not None
        decision = decide_device(
            connection.peer_certificate,
            self.registry.index,
            now=valid_until + timedelta(seconds=1),
            verified_issuer=connection.verified_issuer,
        )
        detail = f"connected session disconnected at the end of the certificate's validity: {decision.detail}"
        self._audit_refusal(
            decision,
            connection.listener.name,
            connection.peer,
            connection.client_id,
            detail,
            identity_known=True,
        )

    def _audit_refusal(
        self,
        decision: DeviceDecision,
        listener: str,
        peer: str,
        client_id: str,
        detail: str,
        *,
        identity_known: bool,
    ) -> None:
        self._audit(
            listener=listener,
            peer=peer,
            client_id=client_id,
            ca_sn=decision.ca_sn,
            device_sn=decision.device_sn,
            cn=decision.cn,
            step=decision.step,
            result="deny",
            reason=decision.reason,
            detail=detail,
            identity_known=identity_known,
        )

    # -- BrokerControl ------------------------------------------------------------------

    def listeners(self) -> list[ListenerInfo]:
        assert self.broker is not None
        return [ListenerInfo(bound.name, bound.host, bound.port) for bound in self.broker.listeners]

    def connections(self) -> list[ConnectionInfo]:
        assert self.broker is not None
        return [
            ConnectionInfo(
                client_id=connection.client_id,
                listener=connection.listener.name,
                peer=connection.peer,
                protocol_version=connection.protocol_version,
                connected_at=connection.connected_at,
                identity=connection.identity,
            )
            for connection in self.broker.core.connections
            if connection.session is not None
        ]

    def kick(self, client_id: str) -> bool:
        assert self.broker is not None
        session = self.broker.core.sessions.get(client_id)
        if session is None or session.connection is None:
            return False
        session.connection.close(
            ReasonCode.ADMINISTRATIVE_ACTION, "disconnected by the operator", publish_will=True
        )
        return True

    def auth_mode(self) -> AuthMode:
        return self.mode

    async def set_auth_mode(self, mode: str, *, disconnect_nonconforming: bool = False) -> int:
        if mode not in tuple(AuthMode):
            raise ValueError(f"auth mode must be one-way or mutual, not {mode!r}")
        mode = AuthMode(mode)
        assert self.registry is not None and self.contexts is not None and self.broker is not None
        await self.registry.set_setting(AUTH_MODE_SETTING, mode.value)
        self.mode = mode
        await self.contexts.update(verifies_client_certificates=mode == AuthMode.MUTUAL)
        for name in MQTT_LISTENERS:
            if self.policy.is_open(name, mode):
                await self.broker.open_listener(name)
            else:
                await self.broker.close_listener(name)
        log.info("auth mode is now %s: %s", mode, self.policy.describe(mode))
        if not disconnect_nonconforming:
            return 0
        return self.broker.core.disconnect_where(
            lambda connection: not self._conforms(connection, mode), f"the auth mode changed to {mode}"
        )

    def nonconforming(self, mode: str) -> int:
        assert self.broker is not None
        return sum(1 for connection in self.broker.core.connections if not self._conforms(connection, mode))

    def _conforms(self, connection: MQTTConnection, mode: str) -> bool:
        return self.policy.conforms(connection.listener.name, connection.identity, mode)

    def describe_listeners(self, mode: str) -> str:
        return self.policy.describe(mode)

    def server_certificate(self) -> ServerCertificateInfo:
        assert self.contexts is not None
        generation = self.contexts.generation
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

    async def replace_server_certificate(self, chain_pem: str, key_pem: str) -> ServerCertificateInfo:
        """Write the pair under DIR/server/ with a new name, make it current, remember it."""
        assert self.contexts is not None and self.registry is not None
        from certmq.tls.server_certificate import store_server_certificate

        try:
            cert_file, key_file = store_server_certificate(self.config.data_dir, chain_pem, key_pem)
        except ValueError as error:
            raise ServerCertificateRejected(str(error)) from None
        try:
            await self.contexts.replace(cert_file, key_file)
        except ServerCertificateError as error:
            raise ServerCertificateRejected(str(error)) from None
        await self.registry.set_setting(
            SERVER_CERTIFICATE_SETTING, {"cert_file": str(cert_file), "key_file": str(key_file)}
        )
        return self.server_certificate()

    def stats(self) -> dict[str, int]:
        assert self.broker is not None
        stats = self.broker.core.stats
        counts = {f"connections_{name}": 0 for name in ("tcp", "tls", "ws", "wss")}
        for connection in self.broker.core.connections:
            counts[f"connections_{connection.listener.name}"] = (
                counts.get(f"connections_{connection.listener.name}", 0) + 1
            )
        counts.update(
            clients_connected=stats.clients_connected,
            messages_received=stats.messages_received,
            messages_sent=stats.messages_sent,
            messages_dropped=stats.messages_dropped,
            bytes_received=stats.bytes_received,
            bytes_sent=stats.bytes_sent,
            tls_handshake_failures=stats.tls_handshake_failures,
            malformed_packets=stats.malformed_packets,
            publishes_denied=stats.publishes_denied,
            wills_dropped=stats.wills_dropped,
            messages_dropped_queue_full=stats.messages_dropped_queue_full,
            retained_refused=stats.retained_refused,
            subscriptions_over_limit=stats.subscriptions_over_limit,
            topics_over_limit=stats.topics_over_limit,
            sessions_over_limit=stats.sessions_over_limit,
        )
        counts.update(self.broker.core.holdings())
        return counts


def _log_failure(task: Any) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
