"""The running instance: registry, broker, TLS trust and management API, wired together. This
module only builds the parts and connects them; each part's work is in its own module.

Data flows one way, transport → protocol → auth/registry → routing; registry changes come back
to the broker only as events (:mod:`certmq.revocation_enforcement`): a changed CA set rebuilds the
TLS trust, a revoked device or CA disconnects its live sessions. Decisions are recorded by
:mod:`certmq.decision_audit`; the management interfaces reach the broker through
:mod:`certmq.instance_control`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from certmq.access_keys import AccessKeyStore
from certmq.auth.admission import ListenerPolicy
from certmq.auth.authenticator import InstanceAuthenticator
from certmq.auth.mode import AuthMode
from certmq.auth_mode_switch import AuthModeSwitch, stored_auth_mode
from certmq.broker.checkpoint_store import STATE_FILE_NAME
from certmq.broker.journal_log import JOURNAL_DIRECTORY, segment_numbers
from certmq.broker.server import Broker
from certmq.broker.topic_rules_file import TopicRulesFile
from certmq.broker.worker_balance import ConnectionBalance
from certmq.config import Config, changed_settings, nats_servers, node_name, state_in_nats
from certmq.control import BrokerControl
from certmq.decision_audit import DecisionAudit
from certmq.demo import ensure_demo_ca
from certmq.http_application import serve_http
from certmq.instance import WORKERS_DIR, Instance, worker_state_directory
from certmq.instance_control import InstanceControl
from certmq.registry.errors import SerialCollision
from certmq.registry.service import RegistryService
from certmq.registry.store import open_registry
from certmq.revocation_enforcement import RevocationEnforcement, registered_ca_pems
from certmq.server_certificate_in_use import ServerCertificateInUse, server_certificate_files_in_use
from certmq.tls.context import ServerContexts, TrustSettings
from certmq.web.metrics import Metrics

if TYPE_CHECKING:
    from certmq.cluster.node import ClusterNode

log = logging.getLogger("certmq")

# What a reload applies (see Application.reload): the log settings are applied by `certmq serve`.
RELOADED_SETTINGS = frozenset(
    {"auth.acl_file", "auth.acl_default", "tls.cert_file", "tls.key_file", "log.level", "log.format"}
)
RESTART_HINTS = {
    "instance.auth_mode": "the auth mode in use is switched at run time with `certmq mode set`, "
    "the API or the console",
}


class Application:
    def __init__(self, config: Config, instance: Instance, *, demo: bool = False, worker: int = 0) -> None:
        self.config = config
        self.instance = instance
        # `make run`: register a demo device CA on a fresh instance (certmq.demo).
        self.demo = demo
        # One of the workers of `certmq serve --workers N` (certmq.cli.worker_supervisor), its
        # number (0: not a worker): its listeners share their ports with the other workers' and
        # hand new connections over to the less loaded ones, its sessions are its own.
        self.worker = worker
        self.registry: RegistryService | None = None
        self.broker: Broker | None = None
        self.control: BrokerControl | None = None
        self.cluster: ClusterNode | None = None
        # Which listeners each mode opens, and to whom.
        self.policy = ListenerPolicy.from_config(config)
        self.started_at = datetime.now(UTC)
        self._http: Any = None
        self._unsubscribe: Any = None
        self._unsubscribe_mode: Any = None
        self._unsubscribe_certificate: Any = None
        self._unsubscribe_access_keys: Any = None
        self._server_certificate: ServerCertificateInUse | None = None
        # Read by the Signature check on every CONNECT: keys created through the API work at once.
        self.access_keys = AccessKeyStore.for_instance(instance)
        self.metrics = Metrics()

    async def start(self) -> None:
        config = self.config
        store = open_registry(config.storage.url, config.data_dir)
        audit_settings = config.audit
        registry = self.registry = RegistryService(
            store,
            instance_id=self.instance.id,
            decision_max_rows=audit_settings.max_rows,
            decision_max_age=timedelta(days=audit_settings.retention_days),
            fold_window=timedelta(seconds=audit_settings.fold_window),
            # In a cluster the registry's changes come from every node (docs/cluster.md).
            listen=bool(nats_servers(config)),
        )
        await registry.open()
        if nats_servers(config):
            # In a cluster every node uses the AccessKey pairs of the registry (certmq.access_keys).
            self._unsubscribe_access_keys = await self.access_keys.share(registry)
        if self.demo:
            await ensure_demo_ca(registry, config.data_dir)
        mode = await stored_auth_mode(registry, AuthMode(config.instance.auth_mode))
        cert_file, key_file = await server_certificate_files_in_use(
            registry, self.instance.data_dir, config.tls, self.instance.instance_key
        )
        contexts = ServerContexts(
            TrustSettings(
                cert_file, key_file, mode == AuthMode.MUTUAL, tuple(registered_ca_pems(registry.index))
            )
        )
        audit = DecisionAudit(registry, self.metrics)
        # The broker is built with the authenticator, and the auth mode switch and the revocation
        # enforcement act on the broker: the authenticator reaches them through names bound below,
        # before the first CONNECT.
        auth_modes: AuthModeSwitch | None = None
        authenticator = InstanceAuthenticator(
            instance_id=self.instance.id,
            access_keys=self.access_keys.secrets,
            auth_mode=lambda: mode if auth_modes is None else auth_modes.mode,
            anonymous=config.auth.anonymous,
            index=registry.index,
            register_device=registry.begin_registration,
            on_registration_failure=lambda *failure: enforcement.registration_failed(*failure),
            audit=audit.record,
            bind_client_id=config.auth.bind_client_id,
            serial_collision_errors=(SerialCollision,),
            policy=self.policy,
        )
        state_directory = None
        if self.worker and not state_in_nats(config):
            state_directory = worker_state_directory(config.data_dir, node_name(config))
            state_directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        broker = self.broker = Broker(
            config,
            authenticator,
            contexts,
            self.policy,
            on_handshake_failure=audit.handshake_failed,
            state_directory=state_directory,
            reuse_port=bool(self.worker),
        )
        if self.worker:
            broker.balance = ConnectionBalance(config.data_dir, config.data_dir / WORKERS_DIR, self.worker)
        enforcement = RevocationEnforcement(registry.index, self.access_keys.secrets, contexts, broker)
        broker.core.audit = audit.record
        broker.core.identity_valid = enforcement.identity_still_valid
        broker.core.certificate_expiry.on_expired = audit.certificate_expired
        self._unsubscribe = registry.events.subscribe(enforcement.on_registry_event)
        auth_modes = AuthModeSwitch(mode, self.policy, registry, contexts, broker)
        self._unsubscribe_mode = registry.events.subscribe(auth_modes.on_registry_event)
        self._server_certificate = ServerCertificateInUse(
            registry, contexts, self.instance.data_dir, self.instance.instance_key
        )
        self._unsubscribe_certificate = registry.events.subscribe(self._server_certificate.on_registry_event)
        node = InstanceControl(
            broker, auth_modes, self._server_certificate, node=node_name(config), started_at=self.started_at
        )
        self.control = node
        if nats_servers(config):
            # Imported here: a single node needs neither NATS nor its client library.
            from certmq.cluster.node import ClusterNode

            self.cluster = ClusterNode(config, broker.core)
            self.control = self.cluster.control_over(node)
            storage = await self.cluster.open_storage()
            if storage is not None:
                broker.keep_state_in(storage)
                self._warn_of_local_state(config)
        log.info("auth mode %s: %s", mode, self.policy.describe(mode))
        await broker.start(
            skip=auth_modes.closed_listeners(),
            before_listening=None if self.cluster is None else self.cluster.start,
        )
        if config.listeners.http:
            self._http = await serve_http(self, config.listeners.http, reuse_port=bool(self.worker))
            node.http = f"{self._http.host}:{self._http.port}"

    def _warn_of_local_state(self, config: Config) -> None:
        """Say so when the data directory holds sessions this node kept there before it kept
        them in JetStream: they are not read."""
        local = worker_state_directory(config.data_dir, node_name(config)) if self.worker else config.data_dir
        if (local / STATE_FILE_NAME).exists() or segment_numbers(local / JOURNAL_DIRECTORY):
            log.warning(
                "%s holds sessions and retained messages kept there before; this node keeps them in "
                'JetStream (cluster.state_storage = "nats") and does not read those: set '
                'cluster.state_storage = "local" to go on using them',
                local,
            )

    def listening(self) -> list[str]:
        """The URLs of the listeners open now, MQTT first, then HTTP."""
        urls = [] if self.broker is None else [bound.url for bound in self.broker.listeners]
        return urls if self._http is None else [*urls, self._http.url]

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for unsubscribe in (
            self._unsubscribe_mode,
            self._unsubscribe_certificate,
            self._unsubscribe_access_keys,
        ):
            if unsubscribe is not None:
                unsubscribe()
        if self.cluster is not None:
            await self.cluster.stop_consuming()
        if self.broker is not None:
            await self.broker.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.registry is not None:
            await self.registry.close()
            self.registry.store.close()

    async def reload(self, config: Config) -> None:
        """Apply a configuration read again without dropping a session (SIGHUP): the topic rules
        file and the server certificate files are read again (whether or not their keys
        changed); every other changed key is logged as needing a restart. The log settings are
        the command's."""
        assert self.broker is not None and self._server_certificate is not None
        self.broker.reload_topic_rules(TopicRulesFile.from_config(config))
        await self._server_certificate.reload(config.tls)
        for name in changed_settings(self.config, config):
            if name not in RELOADED_SETTINGS:
                how = RESTART_HINTS.get(name, "it takes effect at the next start")
                log.warning("%s changed in the configuration but is not reloaded: %s", name, how)
