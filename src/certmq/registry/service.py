"""The registry service: the one API over CA and device certificates, registration codes,
settings and the two audit logs (docs/registry.md). The ApsaraMQ RPC API, the REST API, the CLI,
the console and the broker all call it.

Each of its jobs is a module of its own, and :class:`RegistryService` wires them together:

- CA certificates and registration codes: :mod:`certmq.registry.cas`;
- device certificates: :mod:`certmq.registry.devices`;
- auto-registration of first-time devices, in batches: :mod:`certmq.registry.registration`;
- run-time settings: :mod:`certmq.registry.settings`;
- the RPC API's signature nonces and rate buckets, for the nodes of a cluster:
  :mod:`certmq.registry.api_guards`;
- the changes other nodes commit to a shared PostgreSQL registry: :mod:`certmq.registry.change_feed`,
  and what a node missed while it was not listening: :mod:`certmq.registry.missed_changes`;
- the decision log and the operations log of the RPC API, one type used twice:
  :mod:`certmq.registry.audit_log`, searched with :mod:`certmq.registry.log_query`;
- the one database thread all of them run their work on: :mod:`certmq.registry.worker`.

Here: opening and closing, the in-memory trust index, changes committed by other nodes (applied
one by one, or caught up after the node missed some), the task that writes the logs and enforces
retention, and the counts.

Typical use::

    store = open_registry(config.storage.url, data_dir)
    registry = RegistryService(store, instance_id="mqtt-local-1")
    await registry.open()          # loads the index, starts the decision log writer
    ...
    await registry.close()         # writes the pending decisions
    store.close()

A node of several sharing a PostgreSQL registry listens to the others' changes::

    registry = RegistryService(store, instance_id="mqtt-local-1", listen=True)
    await registry.open()          # LISTEN, then load: no change committed since is missed
    registry.change_feed.state     # connected, applied, malformed, reconnects, last_lag …
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from certmq.registry.api_guards import ApiGuards
from certmq.registry.audit_log import DECISION_LOG, OPERATIONS_LOG, AuditLog
from certmq.registry.cas import DEFAULT_CA_LIMIT, REGISTRATION_CODE_LIFETIME, CaCertificates
from certmq.registry.devices import DeviceCertificates
from certmq.registry.errors import MqttInstanceNotFound
from certmq.registry.events import (
    CaAdded,
    CaDeleted,
    CaStatusChanged,
    DeviceAdded,
    DeviceDeleted,
    DeviceStatusChanged,
    RegistryEvent,
    RegistryEvents,
    SettingChanged,
)
from certmq.registry.index import CaEntry, TrustIndex
from certmq.registry.missed_changes import missed_changes
from certmq.registry.pending import PENDING_MAX_BYTES, PENDING_MAX_ROWS
from certmq.registry.records import RegistryCounts, utc_now
from certmq.registry.registration import REGISTRATION_DELAY, Registrations
from certmq.registry.settings import Settings
from certmq.registry.store import RegistryStore
from certmq.registry.worker import DatabaseWorker, Shared

if TYPE_CHECKING:
    from certmq.registry.change_feed import ChangeFeed

log = logging.getLogger("certmq.registry")

EXPIRING_WITHIN = datetime.timedelta(days=30)
# The audit logs: how often pending entries are written, and how much is kept.
DECISION_FLUSH_INTERVAL = 0.5
DECISION_FLUSH_ROWS = 500
DECISION_MAX_ROWS = 1_000_000
DECISION_MAX_AGE = datetime.timedelta(days=30)
# Refusals of strangers from one source for one reason (in the operations log: calls that were
# not authenticated, for one action and code) within this window make one row
# (certmq.registry.folding).
FOLD_WINDOW = datetime.timedelta(seconds=60)
RETENTION_INTERVAL = 60.0
# The operations log of the RPC API is kept longer than decisions: it is the record of who
# changed the registry.
OPERATION_MAX_ROWS = 1_000_000
OPERATION_MAX_AGE = datetime.timedelta(days=365)
# Events emitted by a catch-up between two turns of the event loop.
CATCH_UP_EVENTS_PER_TURN = 1000


class RegistryService:
    """CA and device certificates, registration codes, settings and the audit logs.

    ``index`` is the in-memory trust index for the authentication hot path; ``events`` fans out
    every committed change. The methods are those of the parts (see the module), bound here
    once: a call costs no more than calling the part. The state of each log (what waits to be
    written, what was dropped) is its own: ``decision_log``, ``operations_log``.

    ``node_id`` names this node in the notices of its changes, so that it ignores its own; it
    must differ from every other node's (a random one by default). With ``listen``, on
    PostgreSQL only, ``change_feed`` applies the changes of the other nodes from :meth:`open` to
    :meth:`close`; its ``state`` is for metrics and readiness."""

    def __init__(
        self,
        store: RegistryStore,
        *,
        instance_id: str,
        ca_limit: int = DEFAULT_CA_LIMIT,
        events: RegistryEvents | None = None,
        registration_code_lifetime: datetime.timedelta = REGISTRATION_CODE_LIFETIME,
        decision_flush_interval: float = DECISION_FLUSH_INTERVAL,
        decision_flush_rows: int = DECISION_FLUSH_ROWS,
        decision_max_rows: int = DECISION_MAX_ROWS,
        decision_max_age: datetime.timedelta = DECISION_MAX_AGE,
        fold_window: datetime.timedelta = FOLD_WINDOW,
        operation_max_rows: int = OPERATION_MAX_ROWS,
        operation_max_age: datetime.timedelta = OPERATION_MAX_AGE,
        pending_max_rows: int = PENDING_MAX_ROWS,
        pending_max_bytes: int = PENDING_MAX_BYTES,
        retention_interval: float = RETENTION_INTERVAL,
        registration_delay: float = REGISTRATION_DELAY,
        clock: Callable[[], datetime.datetime] = utc_now,
        node_id: str | None = None,
        listen: bool = False,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.node_id = node_id if node_id is not None else secrets.token_hex(8)
        store.origin = self.node_id
        self.change_feed: ChangeFeed | None = None
        if listen:
            self.change_feed = self._change_feed()
        self.events = events if events is not None else RegistryEvents()
        self.index = TrustIndex()
        self.decision_flush_interval = decision_flush_interval
        self.retention_interval = retention_interval
        self.clock = clock
        worker = self._worker = DatabaseWorker()
        shared = Shared(worker, store, self.index, self.events, clock)
        self.cas = CaCertificates(
            shared, ca_limit=ca_limit, registration_code_lifetime=registration_code_lifetime
        )
        self.registrations = Registrations(shared, delay=registration_delay)
        worker.before_work = self.registrations.submit_waiting
        self.devices = DeviceCertificates(shared, self.registrations)
        self.settings = Settings(shared)
        self.api_guards = ApiGuards(shared)
        self._flush_wakeup = asyncio.Event()
        for_both_logs: dict[str, Any] = {
            "wakeup": self._flush_wakeup,
            "flush_rows": decision_flush_rows,
            "fold_window": fold_window,
            "pending_max_rows": pending_max_rows,
            "pending_max_bytes": pending_max_bytes,
            "clock": clock,
        }
        self.decision_log = AuditLog(
            DECISION_LOG,
            store.decisions,
            worker,
            max_rows=decision_max_rows,
            max_age=decision_max_age,
            **for_both_logs,
        )
        self.operations_log = AuditLog(
            OPERATIONS_LOG,
            store.operations,
            worker,
            max_rows=operation_max_rows,
            max_age=operation_max_age,
            **for_both_logs,
        )
        self._writer: asyncio.Task[None] | None = None
        self._opened = False

        # CA certificates and registration codes.
        self.issue_registration_code = self.cas.issue_registration_code
        self.register_ca = self.cas.register
        self.get_ca = self.cas.get
        self.list_cas = self.cas.list
        self.activate_ca = self.cas.activate
        self.inactivate_ca = self.cas.inactivate
        self.delete_ca = self.cas.delete
        # Device certificates, and their auto-registration (step 6 of the decision procedure).
        self.get_device = self.devices.get
        self.list_devices = self.devices.list
        self.activate_device = self.devices.activate
        self.inactivate_device = self.devices.inactivate
        self.delete_device = self.devices.delete
        self.register_device = self.registrations.register
        self.begin_registration = self.registrations.begin
        # Run-time settings.
        self.get_setting = self.settings.get
        self.set_setting = self.settings.set
        self.add_setting = self.settings.add
        # The RPC API's nonces and rate buckets, shared by the nodes of a cluster.
        self.spend_nonce = self.api_guards.spend_nonce
        self.take_api_call = self.api_guards.take_call
        # The audit logs.
        self.record_decision = self.decision_log.record
        self.flush_decisions = self.decision_log.flush
        self.search_decisions = self.decision_log.search
        self.record_operation = self.operations_log.record
        self.flush_operations = self.operations_log.flush
        self.search_operations = self.operations_log.search

    def __repr__(self) -> str:
        return f"RegistryService({self.instance_id!r}, {self.store!r}, {self.index!r})"

    @property
    def ca_limit(self) -> int:
        return self.cas.ca_limit

    @ca_limit.setter
    def ca_limit(self, limit: int) -> None:
        self.cas.ca_limit = limit

    @property
    def registration_delay(self) -> float:
        return self.registrations.delay

    def _change_feed(self) -> ChangeFeed:
        if self.store.dialect != "postgresql":
            raise ValueError(
                f"only a PostgreSQL registry carries changes between nodes; this one is "
                f"{self.store.dialect} (set storage.url to postgresql://…)"
            )
        # Imported here: psycopg is needed by PostgreSQL registries only.
        from certmq.registry.change_feed import ChangeFeed

        conninfo = self.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return ChangeFeed(self, conninfo, node_id=self.node_id)

    # --- life cycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the index and the settings from the store and start writing the audit logs; with
        a change feed, listen first, so that no change committed after the load is missed."""
        if self._opened:
            return
        feed = self.change_feed
        if feed is not None:
            await feed.listen()
        try:
            await self.rebuild_index()
            await self.settings.load()
        except BaseException:
            if feed is not None:
                await feed.stop()
            raise
        self._opened = True
        self._writer = asyncio.get_running_loop().create_task(self._write_logs(), name="certmq-decision-log")
        if feed is not None:
            feed.start()

    async def close(self) -> None:
        """Stop listening, write the pending entries of the logs and stop the worker thread. The
        store stays open."""
        if self._worker.closed:
            return
        if self.change_feed is not None:
            await self.change_feed.stop()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for audit_log in (self.decision_log, self.operations_log):
            try:
                await audit_log.flush(close_all_windows=True)
            except Exception:
                log.exception("could not write the last %s to the registry", audit_log.kind.items)
        await self.registrations.written()
        await self._worker.close()

    async def rebuild_index(self) -> None:
        """Rebuild the in-memory index from the store (on open)."""
        self.index.adopt(await self._worker.run(self._read_index))

    def _read_index(self) -> TrustIndex:
        """A new index of what the store holds (on the database thread)."""
        started = time.perf_counter()
        index = TrustIndex()
        cas = [
            CaEntry.from_record(ca.record, ca.subject_der, ca.subject_key_identifier)
            for ca in self.store.all_cas()
        ]
        index.load(cas, self.store.stream_device_keys())
        log.info(
            "registry index loaded: %d CAs, %d devices in %.2f s",
            len(cas),
            index.device_count,
            time.perf_counter() - started,
        )
        return index

    def check_instance_id(self, instance_id: str) -> None:
        """Raise MqttInstanceNotFound unless ``instance_id`` is this instance's MqttInstanceId."""
        if instance_id != self.instance_id:
            raise MqttInstanceNotFound(
                f"instance {instance_id!r} does not exist here; this instance is {self.instance_id!r}"
            )

    # --- reapplying changes made elsewhere ------------------------------------------------------

    async def apply_change(self, event: RegistryEvent) -> None:
        """Bring the index and settings up to date with a change committed by another node, read
        back from the store, then emit ``event`` to local subscribers. See
        :mod:`certmq.registry.events` for the PostgreSQL LISTEN/NOTIFY seam."""
        if isinstance(event, CaAdded | CaStatusChanged):
            await self.cas.reload(event.sn)
        elif isinstance(event, CaDeleted):
            self.index.remove_ca(event.sn)
        elif isinstance(event, DeviceAdded | DeviceStatusChanged):
            await self.devices.reload(event.ca_sn, event.device_sn)
        elif isinstance(event, DeviceDeleted):
            self.index.remove_device(event.ca_sn, event.device_sn)
        elif isinstance(event, SettingChanged):
            await self.settings.reload(event.key)
        self.events.emit(event)

    async def catch_up(self) -> int:
        """After this node missed changes (its change feed lost its connection): read the index
        and the settings again from the store, take them, and emit for every difference the event
        a change made elsewhere would have (:func:`certmq.registry.missed_changes.missed_changes`),
        so that subscribers cut the sessions they must. Returns how many events."""
        fresh, settings = await self._worker.run(lambda: (self._read_index(), self.store.all_settings()))
        # Taken at once, before any later change committed here is applied to the index: on the
        # loop, the result of the read comes before the after-commit of any work queued after it.
        before = TrustIndex()
        before.adopt(self.index)
        self.index.adopt(fresh)
        settings_before = self.settings.adopt(settings)
        changes = missed_changes(before, fresh, settings_before, settings)
        for number, event in enumerate(changes, 1):
            self.events.emit(event)
            if number % CATCH_UP_EVENTS_PER_TURN == 0:
                await asyncio.sleep(0)
        return len(changes)

    # --- writing the audit logs, and retention --------------------------------------------------

    async def _write_logs(self) -> None:
        last_retention = -self.retention_interval
        logs = (self.decision_log, self.operations_log)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wakeup.wait(), timeout=self.decision_flush_interval)
            self._flush_wakeup.clear()
            try:
                for audit_log in logs:
                    audit_log.close_fold_windows()
                for audit_log in logs:
                    if audit_log.pending:
                        await audit_log.flush()
                if time.monotonic() - last_retention >= self.retention_interval:
                    last_retention = time.monotonic()
                    await self.enforce_retention()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not write decisions to the registry; retrying")
                await asyncio.sleep(self.decision_flush_interval)

    async def enforce_retention(self) -> int:
        """Delete the rows of the logs beyond their retention bounds (rows and age) and expired
        unused registration codes. Runs periodically on its own; returns how many decisions went."""
        now = self.clock()

        def work() -> int:
            removed = self.decision_log.prune(now)
            self.operations_log.prune(now)
            self.store.delete_expired_registration_codes(now)
            return removed

        return await self._worker.run(work)

    @property
    def refusals_folded(self) -> dict[str, int]:
        """Refusals of strangers counted into folded rows instead of written one by one, by reason."""
        return self.decision_log.folded

    @property
    def calls_folded(self) -> dict[str, int]:
        """Calls of the RPC API that were not authenticated, counted into folded rows of the
        operations log instead of written one by one, by error code."""
        return self.operations_log.folded

    # --- overview -------------------------------------------------------------------------------

    async def counts(self, expiring_within: datetime.timedelta = EXPIRING_WITHIN) -> RegistryCounts:
        """Numbers of CAs and devices by status, and of certificates valid now that expire within
        ``expiring_within`` (30 days)."""
        now = self.clock()
        cas_expiring, devices_expiring = await self._worker.run(
            functools.partial(self.store.count_expiring, now, now + expiring_within)
        )
        cas = self.index.cas()
        active_cas = sum(1 for ca in cas if ca.active)
        return RegistryCounts(
            cas_active=active_cas,
            cas_inactive=len(cas) - active_cas,
            devices_active=self.index.device_count - self.index.inactive_device_count,
            devices_inactive=self.index.inactive_device_count,
            cas_expiring=cas_expiring,
            devices_expiring=devices_expiring,
            expiring_within=expiring_within,
        )
