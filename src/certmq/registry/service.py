"""The registry service: the one API over CA and device certificates, registration codes,
settings and the decision log (docs/registry.md). The ApsaraMQ RPC API, the REST API, the CLI, the
console and the broker all call it.

Every method that touches the database is ``async`` and runs the database work on one dedicated
worker thread, so SQLite writes are serialised and the event loop never blocks. A change is
committed before the method returns; then, on the event loop and in commit order, the in-memory
:class:`~certmq.registry.index.TrustIndex` is updated and the change event is emitted. Both happen
even when the caller is cancelled after the commit, so the index never drifts from the store.

Typical use::

    store = open_registry(config.storage.url, data_dir)
    registry = RegistryService(store, instance_id="mqtt-local-1")
    await registry.open()          # loads the index, starts the decision log writer
    ...
    await registry.close()         # writes the pending decisions
    store.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import functools
import hashlib
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmq.pki import common_name, serial_hex
from certmq.registry.errors import (
    FindCaBySnError,
    FindDeviceBySnError,
    MqttInstanceNotFound,
    ParameterFieldCheckFailed,
    SerialCollision,
)
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
from certmq.registry.folding import DECISIONS, OPERATIONS, RefusalFolding
from certmq.registry.index import CaEntry, TrustIndex
from certmq.registry.models import Result, Status
from certmq.registry.pending import (
    PARAMETER_NAME_LIMIT,
    PARAMETER_VALUE_LIMIT,
    PENDING_MAX_BYTES,
    PENDING_MAX_ROWS,
    TEXT_LIMIT,
    PendingRows,
    measured_decision,
    measured_operation,
)
from certmq.registry.proof import check_ca_registration
from certmq.registry.records import (
    CaRecord,
    Decision,
    DecisionRecord,
    DeviceRecord,
    Operation,
    OperationRecord,
    Page,
    RegistrationCode,
    RegistryCounts,
    utc_now,
)
from certmq.registry.store import NewDevice, RegistryStore

log = logging.getLogger("certmq.registry")

R = TypeVar("R")
Logged = TypeVar("Logged", Decision, Operation)  # a row of one of the two audit logs
# A device waiting for the database thread, and the future of its registration.
_Registration = tuple[NewDevice, "asyncio.Future[tuple[DeviceRecord, bool]]"]

DEFAULT_CA_LIMIT = 1000
REGISTRATION_CODE_LIFETIME = datetime.timedelta(hours=24)
MAX_PAGE_SIZE = 100
# Far beyond any real listing, and small enough that (PageNo - 1) * PageSize fits a 64-bit offset.
MAX_PAGE_NO = 1_000_000_000
MAX_CA_NAME = 128
MAX_DECISION_SEARCH = 1000
EXPIRING_WITHIN = datetime.timedelta(days=30)
# The decision log: how often pending decisions are written, and how much is kept.
DECISION_FLUSH_INTERVAL = 0.5
DECISION_FLUSH_ROWS = 500
DECISION_MAX_ROWS = 1_000_000
DECISION_MAX_AGE = datetime.timedelta(days=30)
# Refusals of strangers from one source for one reason (in the operations log: calls that were
# not authenticated, for one action and code) within this window make one row
# (certmq.registry.folding).
FOLD_WINDOW = datetime.timedelta(seconds=60)
RETENTION_INTERVAL = 60.0
# At most this many first-time devices are written in one transaction (group commit).
REGISTRATION_BATCH = 256
# How long a first-time device's registration may wait for others to share its transaction.
REGISTRATION_DELAY = 0.2
# Devices named in the log line of one batch of registrations.
REGISTRATIONS_LOGGED = 10
# Column sizes of the decision table; longer values are cut to fit.
_DECISION_LIMITS = {"listener": 32, "peer": 128, "ca_sn": 128, "device_sn": 128, "result": 8, "reason": 64}
# The operations log of the RPC API: kept longer than decisions, it is the record of who changed
# the registry. Written in batches with the decisions; the calls that were not authenticated are
# folded like the refusals of strangers.
OPERATION_MAX_ROWS = 1_000_000
OPERATION_MAX_AGE = datetime.timedelta(days=365)
MAX_OPERATION_SEARCH = 1000
_OPERATION_LIMITS = {
    "request_id": 64,
    "peer": 128,
    "access_key_id": 128,
    "signature_method": 32,
    "action": 64,
    "code": 64,
}


def _status(value: Status | str | None, what: str = "status") -> Status | None:
    if value is None or isinstance(value, Status):
        return value
    try:
        return Status(value)
    except ValueError:
        raise ParameterFieldCheckFailed(f"{what} must be 'active' or 'inactive', not {value!r}") from None


def _check_paging(page_no: int, page_size: int) -> None:
    if isinstance(page_no, bool) or not isinstance(page_no, int) or not 1 <= page_no <= MAX_PAGE_NO:
        raise ParameterFieldCheckFailed(f"PageNo must be an integer from 1 to {MAX_PAGE_NO}, not {page_no!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ParameterFieldCheckFailed(
            f"PageSize must be an integer from 1 to {MAX_PAGE_SIZE}, not {page_size!r}"
        )


def _check_sn(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ParameterFieldCheckFailed(f"{what} is required")


def _unknown_ca(sn: str) -> FindCaBySnError:
    return FindCaBySnError(
        f"no CA certificate is registered with Sn {sn!r}; list them with ListCaCertificate"
    )


def _unknown_device(ca_sn: str, device_sn: str) -> FindDeviceBySnError:
    return FindDeviceBySnError(
        f"no device certificate is registered with CA Sn {ca_sn!r} and DeviceSn {device_sn!r}; "
        f"a device is registered on its first successful connection"
    )


def _text(value: object, limit: int | None = None) -> str:
    text = "" if value is None else str(value)
    return text[:limit] if limit is not None and len(text) > limit else text


def _folded(count: Any, first_seen: object) -> tuple[int, datetime.datetime | None]:
    """The ``count`` and ``first_seen`` columns of a row that may be folded: a count from 1 that
    fits the column, and no first time unless the row stands for more than one."""
    try:
        counted = min(max(int(count), 1), 2**31 - 1)
    except (TypeError, ValueError):
        counted = 1
    if not isinstance(first_seen, datetime.datetime) or counted == 1:
        return counted, None
    if first_seen.tzinfo is None:
        first_seen = first_seen.replace(tzinfo=datetime.UTC)
    return counted, first_seen


def _decision_row(decision: Decision) -> dict[str, Any]:
    """The row of a decision. Every value is made to fit its column, so that one odd decision
    (a naive time, a None, an overlong peer) can never make a whole batch fail."""
    moment = decision.time
    if not isinstance(moment, datetime.datetime):
        moment = utc_now()
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        step = min(max(int(decision.step), 0), 32767)
    except (TypeError, ValueError):
        step = 0
    count, first_seen = _folded(decision.count, decision.first_seen)
    return {
        "time": moment,
        "listener": _text(decision.listener, _DECISION_LIMITS["listener"]),
        "peer": _text(decision.peer, _DECISION_LIMITS["peer"]),
        "client_id": _text(decision.client_id),
        "ca_sn": _text(decision.ca_sn, _DECISION_LIMITS["ca_sn"]),
        "device_sn": _text(decision.device_sn, _DECISION_LIMITS["device_sn"]),
        "cn": _text(decision.cn),
        "step": step,
        "result": _text(decision.result, _DECISION_LIMITS["result"]),
        "reason": _text(decision.reason, _DECISION_LIMITS["reason"]),
        "detail": _text(decision.detail),
        "count": count,
        "first_seen": first_seen,
        "identity_known": bool(decision.identity_known),
    }


def _operation_row(operation: Operation) -> dict[str, Any]:
    """The row of a call of the RPC API, every value made to fit its column (see _decision_row)."""
    moment = operation.time
    if not isinstance(moment, datetime.datetime):
        moment = utc_now()
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        status = min(max(int(operation.status), 0), 32767)
    except (TypeError, ValueError):
        status = 0
    try:
        duration = min(max(int(operation.duration_ms), 0), 2**31 - 1)
    except (TypeError, ValueError):
        duration = 0
    parameters = operation.parameters if isinstance(operation.parameters, dict) else {}
    count, first_seen = _folded(operation.count, operation.first_seen)
    return {
        "time": moment,
        "request_id": _text(operation.request_id, _OPERATION_LIMITS["request_id"]),
        "peer": _text(operation.peer, _OPERATION_LIMITS["peer"]),
        "access_key_id": _text(operation.access_key_id, _OPERATION_LIMITS["access_key_id"]),
        "authenticated": bool(operation.authenticated),
        "signature_method": _text(operation.signature_method, _OPERATION_LIMITS["signature_method"]),
        "action": _text(operation.action, _OPERATION_LIMITS["action"]),
        "parameters": json.dumps(
            {
                _text(key, PARAMETER_NAME_LIMIT): _text(value, PARAMETER_VALUE_LIMIT)
                for key, value in parameters.items()
            },
            ensure_ascii=False,
            sort_keys=True,
        ),
        "status": status,
        "code": _text(operation.code, _OPERATION_LIMITS["code"]),
        "message": _text(operation.message, TEXT_LIMIT),
        "duration_ms": duration,
        "count": count,
        "first_seen": first_seen,
    }


def _settle_registration(
    mine: asyncio.Future[DeviceRecord], fingerprint: str, done: asyncio.Future[tuple[DeviceRecord, bool]]
) -> None:
    """Resolve one caller's registration from the shared one: its record, unless the committed
    record is another certificate's (registered by another node first)."""
    if mine.done():
        return
    if done.cancelled():
        mine.cancel()
    elif (error := done.exception()) is not None:
        mine.set_exception(error)
    else:
        record, _ = done.result()
        if record.fingerprint == fingerprint:
            mine.set_result(record)
        else:
            mine.set_exception(
                SerialCollision(
                    f"another certificate is registered with CA Sn {record.ca_sn} and serial {record.device_sn}",
                    ca_sn=record.ca_sn,
                    device_sn=record.device_sn,
                )
            )


class RegistryService:
    """CA and device certificates, registration codes, settings and the decision log.

    ``index`` is the in-memory trust index for the authentication hot path; ``events`` fans out
    every committed change."""

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
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.ca_limit = ca_limit
        self.events = events if events is not None else RegistryEvents()
        self.index = TrustIndex()
        self.registration_code_lifetime = registration_code_lifetime
        self.decision_flush_interval = decision_flush_interval
        self.decision_flush_rows = decision_flush_rows
        self.decision_max_rows = decision_max_rows
        self.decision_max_age = decision_max_age
        self.operation_max_rows = operation_max_rows
        self.operation_max_age = operation_max_age
        self.retention_interval = retention_interval
        self.registration_delay = registration_delay
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certmq-registry")
        self._settings: dict[str, Any] = {}
        # (CA Sn, serial) -> the fingerprint being registered and its registration.
        self._registering: dict[tuple[str, str], tuple[str, asyncio.Future[tuple[DeviceRecord, bool]]]] = {}
        # The registrations that the database thread has not taken yet: written in one transaction,
        # submitted after ``registration_delay`` or before any other database work, whichever first.
        self._registrations: list[_Registration] | None = None
        self._registrations_timer: asyncio.TimerHandle | None = None
        self._waiting_batch: list[_Registration] | None = None
        self._registrations_lock = threading.Lock()
        # What waits to be written, bounded in rows and bytes (certmq.registry.pending).
        self._decisions = PendingRows[Decision](
            "decision log",
            "decisions",
            measured_decision,
            max_rows=pending_max_rows,
            max_bytes=pending_max_bytes,
        )
        self._decisions_written = 0
        self._folding = RefusalFolding(DECISIONS, fold_window)
        self._operations = PendingRows[Operation](
            "operations log",
            "API operations",
            measured_operation,
            max_rows=pending_max_rows,
            max_bytes=pending_max_bytes,
        )
        self._operation_folding = RefusalFolding(OPERATIONS, fold_window)
        self._flush_wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False

    def __repr__(self) -> str:
        return f"RegistryService({self.instance_id!r}, {self.store!r}, {self.index!r})"

    # --- running database work ------------------------------------------------------------------

    async def _run(self, work: Callable[[], R]) -> R:
        """Run ``work`` on the worker thread and wait for it."""
        if self._closed:
            raise RuntimeError("the registry service is closed")
        # Registrations queued before this work are written before it: reads see every device
        # whose connection was allowed.
        self._submit_registrations()
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _submit(self, work: Callable[[], R], after_commit: Callable[[R], None]) -> asyncio.Future[R]:
        """Run ``work`` (which commits) on the worker thread; ``after_commit(result)`` then runs on
        the loop before anyone awaiting the returned future resumes, even if they were cancelled."""
        if self._closed:
            raise RuntimeError("the registry service is closed")
        self._submit_registrations()
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)

        def apply(done: asyncio.Future[R]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            try:
                after_commit(done.result())
            except Exception:
                log.exception("could not apply a committed registry change to the index")

        future.add_done_callback(apply)
        return future

    async def _commit(self, work: Callable[[], R], after_commit: Callable[[R], None]) -> R:
        return await asyncio.shield(self._submit(work, after_commit))

    def _emit(self, event: RegistryEvent) -> None:
        self.events.emit(event)

    # --- life cycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the index and the settings from the store and start writing the decision log."""
        if self._opened:
            return
        await self.rebuild_index()
        self._settings = await self._run(self.store.all_settings)
        self._opened = True
        self._writer = asyncio.get_running_loop().create_task(
            self._write_decisions(), name="certmq-decision-log"
        )

    async def close(self) -> None:
        """Write the pending decisions and stop the worker thread. The store stays open."""
        if self._closed:
            return
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        try:
            await self.flush_decisions(close_all_windows=True)
        except Exception:
            log.exception("could not write the last decisions to the registry")
        try:
            await self.flush_operations(close_all_windows=True)
        except Exception:
            log.exception("could not write the last API operations to the registry")
        await self._registrations_written()
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._executor.shutdown, wait=True)
        )

    async def rebuild_index(self) -> None:
        """Rebuild the in-memory index from the store (on open; after a node missed changes)."""

        def build() -> TrustIndex:
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

        self.index.adopt(await self._run(build))

    def check_instance_id(self, instance_id: str) -> None:
        """Raise MqttInstanceNotFound unless ``instance_id`` is this instance's MqttInstanceId."""
        if instance_id != self.instance_id:
            raise MqttInstanceNotFound(
                f"instance {instance_id!r} does not exist here; this instance is {self.instance_id!r}"
            )

    # --- registration codes and CAs -------------------------------------------------------------

    async def issue_registration_code(self) -> RegistrationCode:
        """A fresh random code for the CN of a verification certificate: single use, valid 24 h."""
        now = self.clock()
        code = RegistrationCode(secrets.token_hex(16), now, now + self.registration_code_lifetime)
        await self._run(functools.partial(self.store.add_registration_code, code))
        return code

    async def register_ca(self, name: str, ca_pem: str | bytes, verification_pem: str | bytes) -> CaRecord:
        """Register a CA with proof of possession of its key; every check in order, each with its
        error (docs/api.md, "Errors"). The CA is stored active and the code consumed, atomically."""
        if not isinstance(name, str) or len(name) > MAX_CA_NAME:
            raise ParameterFieldCheckFailed(f"CaName must be a string of at most {MAX_CA_NAME} characters")
        if not ca_pem:
            raise ParameterFieldCheckFailed("CaContent is required: the CA certificate, PEM")
        if not verification_pem:
            raise ParameterFieldCheckFailed(
                "VerificationContent is required: the verification certificate, PEM"
            )
        now = self.clock()

        def work() -> CaRecord:
            new = check_ca_registration(name.strip(), ca_pem, verification_pem, now)
            return self.store.add_ca(new, now=now, ca_limit=self.ca_limit)

        def after_commit(record: CaRecord) -> None:
            self.index.put_ca(CaEntry.from_record(record))
            self._emit(CaAdded(record.sn))

        record = await self._commit(work, after_commit)
        log.info("CA %s registered: %s", record.sn, record.subject)
        return record

    async def get_ca(self, sn: str) -> CaRecord:
        _check_sn(sn, "Sn")
        record = await self._run(functools.partial(self.store.get_ca, sn))
        if record is None:
            raise _unknown_ca(sn)
        return record

    async def list_cas(self, page_no: int = 1, page_size: int = 20) -> Page[CaRecord]:
        _check_paging(page_no, page_size)
        items, total = await self._run(
            functools.partial(self.store.list_cas, (page_no - 1) * page_size, page_size)
        )
        return Page(tuple(items), page_no, page_size, total)

    async def _set_ca_status(self, sn: str, status: Status) -> CaRecord:
        _check_sn(sn, "Sn")
        now = self.clock()

        def work() -> tuple[CaRecord, bool]:
            result = self.store.set_ca_status(sn, status, now)
            if result is None:
                raise _unknown_ca(sn)
            return result

        def after_commit(result: tuple[CaRecord, bool]) -> None:
            record, changed = result
            self.index.set_ca_active(sn, record.active)
            if changed:
                self._emit(CaStatusChanged(sn, record.active))

        record, _ = await self._commit(work, after_commit)
        return record

    async def activate_ca(self, sn: str) -> CaRecord:
        return await self._set_ca_status(sn, Status.ACTIVE)

    async def inactivate_ca(self, sn: str) -> CaRecord:
        """Deny new connections through the CA; subscribers disconnect its live sessions."""
        return await self._set_ca_status(sn, Status.INACTIVE)

    async def delete_ca(self, sn: str) -> None:
        """Delete the CA and every device certificate it issued."""
        _check_sn(sn, "Sn")

        def work() -> None:
            if not self.store.delete_ca(sn):
                raise _unknown_ca(sn)

        def after_commit(_: None) -> None:
            self.index.remove_ca(sn)
            self._emit(CaDeleted(sn))

        await self._commit(work, after_commit)
        log.info("CA %s deleted with its device certificates", sn)

    # --- device certificates --------------------------------------------------------------------

    def _device_or_error(self, ca_sn: str, device_sn: str) -> Exception:
        """The error for a device that the store did not find (runs on the worker thread)."""
        if not self.store.ca_exists(ca_sn):
            return _unknown_ca(ca_sn)
        return _unknown_device(ca_sn, device_sn)

    async def get_device(self, ca_sn: str, device_sn: str) -> DeviceRecord:
        _check_sn(ca_sn, "CaSn")
        _check_sn(device_sn, "DeviceSn")

        def work() -> DeviceRecord:
            record = self.store.get_device(ca_sn, device_sn)
            if record is None:
                raise self._device_or_error(ca_sn, device_sn)
            return record

        return await self._run(work)

    async def list_devices(
        self,
        page_no: int = 1,
        page_size: int = 20,
        *,
        ca_sn: str | None = None,
        status: Status | str | None = None,
        name: str | None = None,
    ) -> Page[DeviceRecord]:
        """A page of device certificates in ``(ca_sn, device_sn)`` order, optionally only those
        of one CA, with one status, or with one DeviceName (exact)."""
        _check_paging(page_no, page_size)
        wanted = _status(status)
        if ca_sn is not None and self.index.ca(ca_sn) is None:
            raise _unknown_ca(ca_sn)
        await self._registrations_written()  # the totals come from the index
        offset = (page_no - 1) * page_size
        total = self._device_total(ca_sn, wanted) if name is None else None
        if total is not None and offset >= total:
            return Page((), page_no, page_size, total)
        items, counted = await self._run(
            functools.partial(
                self.store.list_devices,
                offset,
                page_size,
                ca_sn=ca_sn,
                status=wanted,
                name=name,
                count=total is None,
            )
        )
        return Page(tuple(items), page_no, page_size, total if total is not None else counted or 0)

    def _device_total(self, ca_sn: str | None, status: Status | None) -> int:
        """Matching devices, counted by the index rather than by scanning the table."""
        if ca_sn is None:
            devices, inactive = self.index.device_count, self.index.inactive_device_count
        else:
            devices, inactive = self.index.device_counts(ca_sn)
        if status is None:
            return devices
        return inactive if status == Status.INACTIVE else devices - inactive

    async def _set_device_status(self, ca_sn: str, device_sn: str, status: Status) -> DeviceRecord:
        _check_sn(ca_sn, "CaSn")
        _check_sn(device_sn, "DeviceSn")
        now = self.clock()

        def work() -> tuple[DeviceRecord, bool]:
            result = self.store.set_device_status(ca_sn, device_sn, status, now)
            if result is None:
                raise self._device_or_error(ca_sn, device_sn)
            return result

        def after_commit(result: tuple[DeviceRecord, bool]) -> None:
            record, changed = result
            self.index.set_device_active(ca_sn, device_sn, record.active)
            if changed:
                self._emit(DeviceStatusChanged(ca_sn, device_sn, record.active))

        record, _ = await self._commit(work, after_commit)
        return record

    async def activate_device(self, ca_sn: str, device_sn: str) -> DeviceRecord:
        return await self._set_device_status(ca_sn, device_sn, Status.ACTIVE)

    async def inactivate_device(self, ca_sn: str, device_sn: str) -> DeviceRecord:
        """Deny the device's new connections; subscribers disconnect its live sessions."""
        return await self._set_device_status(ca_sn, device_sn, Status.INACTIVE)

    async def delete_device(self, ca_sn: str, device_sn: str) -> None:
        """Remove the record; a later valid connection registers the device again. To block a
        device, inactivate it."""
        _check_sn(ca_sn, "CaSn")
        _check_sn(device_sn, "DeviceSn")

        def work() -> None:
            if not self.store.delete_device(ca_sn, device_sn):
                raise self._device_or_error(ca_sn, device_sn)

        def after_commit(_: None) -> None:
            self.index.remove_device(ca_sn, device_sn)
            self._emit(DeviceDeleted(ca_sn, device_sn))

        await self._commit(work, after_commit)

    async def register_device(self, ca_sn: str, certificate: x509.Certificate) -> DeviceRecord:
        """Auto-registration (step 6 of the decision procedure): store the device certificate as
        active under the CA ``ca_sn`` and return its record once it is durable. See
        :meth:`begin_registration`."""
        return await self.begin_registration(ca_sn, certificate)

    def begin_registration(
        self,
        ca_sn: str,
        certificate: x509.Certificate,
        *,
        der: bytes | None = None,
        name: str | None = None,
        sha256: bytes | None = None,
    ) -> asyncio.Future[DeviceRecord]:
        """Start registering a device certificate as active under the CA ``ca_sn``, without
        waiting: the broker lets a first-time device in at once and registers it behind its back.

        Raises SerialCollision at once when another certificate holds, or is being registered
        with, the (CA, serial) pair. The returned future gives the record once it is committed,
        or the error that kept it from the registry (SerialCollision when another node registered
        another certificate first). Idempotent: concurrent calls for one device share one
        registration, and a registered device gives its record.

        Registrations are written together, one transaction and one commit per batch: a batch
        waits up to ``registration_delay`` for others to join it, and is written before any other
        database work that starts meanwhile, so that every read sees every device let in.

        ``der``, ``name`` and ``sha256``, the certificate's DER, CN and SHA-256 digest, may be
        given by a caller that has them (the broker's decision read them): each costs a new
        encoding, parse or hash."""
        device_sn = serial_hex(certificate)
        if der is None:
            der = certificate.public_bytes(Encoding.DER)
        digest = hashlib.sha256(der).digest() if sha256 is None else sha256
        known = self.index.device(ca_sn, device_sn)
        if known is not None and known.fingerprint != digest:
            raise SerialCollision(
                f"another certificate is registered with CA Sn {ca_sn} and serial {device_sn}; "
                f"a CA must not reuse serial numbers",
                ca_sn=ca_sn,
                device_sn=device_sn,
            )
        fingerprint = digest.hex()
        key = (ca_sn, device_sn)
        registering = self._registering.get(key)
        if registering is None:
            new = NewDevice(
                ca_sn=ca_sn,
                device_sn=device_sn,
                name=common_name(certificate) if name is None else name,
                pem=ssl.DER_cert_to_PEM_cert(der),  # as cryptography writes it, without a new encoding
                fingerprint=fingerprint,
                valid_begin=certificate.not_valid_before_utc,
                valid_end=certificate.not_valid_after_utc,
            )
            pending = self._queue_registration(new)
            self._registering[key] = (fingerprint, pending)
            pending.add_done_callback(functools.partial(self._forget_registration, key))
        else:
            pending_fingerprint, pending = registering
            if pending_fingerprint != fingerprint:
                raise SerialCollision(
                    f"another certificate is being registered with CA Sn {ca_sn} and serial {device_sn}",
                    ca_sn=ca_sn,
                    device_sn=device_sn,
                )
        mine: asyncio.Future[DeviceRecord] = asyncio.get_running_loop().create_future()
        pending.add_done_callback(functools.partial(_settle_registration, mine, fingerprint))
        return mine

    def _forget_registration(
        self, key: tuple[str, str], done: asyncio.Future[tuple[DeviceRecord, bool]]
    ) -> None:
        registering = self._registering.get(key)
        if registering is not None and registering[1] is done:
            del self._registering[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure is not reported as unhandled

    def _queue_registration(self, new: NewDevice) -> asyncio.Future[tuple[DeviceRecord, bool]]:
        """Add ``new`` to the registrations that the database thread has not taken yet. A new
        batch is submitted after ``registration_delay``, when it is full, or before other work.
        The future is resolved on the loop, after the commit, the index and the event."""
        if self._closed:
            raise RuntimeError("the registry service is closed")
        loop = asyncio.get_running_loop()
        registration: _Registration = (new, loop.create_future())
        with self._registrations_lock:
            batch = self._registrations
            opened = batch is None or len(batch) >= REGISTRATION_BATCH
            if opened:
                batch = self._registrations = []
            assert batch is not None
            batch.append(registration)
        if opened:
            self._submit_registrations()  # the previous batch, if it is still waiting
            self._registrations_timer = loop.call_later(self.registration_delay, self._submit_registrations)
            self._waiting_batch = batch
        elif len(batch) >= REGISTRATION_BATCH:
            self._submit_registrations()
        return registration[1]

    async def _registrations_written(self) -> None:
        """Wait until the registrations started so far are committed and in the index."""
        pending = [future for _, future in self._registering.values()]
        if pending:
            self._submit_registrations()
            await asyncio.wait(pending)

    def _submit_registrations(self) -> None:
        """Hand the waiting batch of registrations, if any, to the database thread."""
        batch = self._waiting_batch
        if batch is None:
            return
        self._waiting_batch = None
        if self._registrations_timer is not None:
            self._registrations_timer.cancel()
            self._registrations_timer = None
        written = asyncio.get_running_loop().run_in_executor(self._executor, self._write_registrations, batch)
        written.add_done_callback(functools.partial(self._apply_registrations, batch))

    def _write_registrations(self, batch: list[_Registration]) -> list[tuple[DeviceRecord, bool] | Exception]:
        """On the database thread: close ``batch`` (later registrations start the next one) and
        write it in one transaction."""
        with self._registrations_lock:
            if self._registrations is batch:
                self._registrations = None
        try:
            return self.store.add_devices([new for new, _ in batch], self.clock())
        except Exception as error:
            return [error] * len(batch)

    def _apply_registrations(
        self,
        batch: list[_Registration],
        written: asyncio.Future[list[tuple[DeviceRecord, bool] | Exception]],
    ) -> None:
        """On the loop, in commit order with the other changes: update the index, emit
        DeviceAdded for each device registered and log them in one line, then resolve the futures."""
        results: list[tuple[DeviceRecord, bool] | Exception]
        if written.cancelled():
            results = [RuntimeError("the registration was cancelled")] * len(batch)
        elif (error := written.exception()) is not None:
            results = [error if isinstance(error, Exception) else RuntimeError(str(error))] * len(batch)
        else:
            results = written.result()
        added: list[str] = []
        for (new, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                if not future.done():
                    future.set_exception(result)
                continue
            record, created = result
            try:
                self.index.put_device(
                    new.ca_sn, new.device_sn, bytes.fromhex(record.fingerprint), record.active
                )
                if created:
                    self._emit(DeviceAdded(new.ca_sn, new.device_sn))
                    added.append(f"{new.device_sn} of CA {new.ca_sn} ({record.name})")
            except Exception:
                log.exception("could not apply a committed registry change to the index")
            if not future.done():
                future.set_result(result)
        if added:
            shown = "; ".join(added[:REGISTRATIONS_LOGGED])
            more = (
                f"; and {len(added) - REGISTRATIONS_LOGGED} more" if len(added) > REGISTRATIONS_LOGGED else ""
            )
            log.info("registered %d device%s: %s%s", len(added), "" if len(added) == 1 else "s", shown, more)

    # --- reapplying changes made elsewhere ------------------------------------------------------

    async def apply_change(self, event: RegistryEvent) -> None:
        """Bring the index and settings up to date with a change committed by another node, read
        back from the store, then emit ``event`` to local subscribers. See
        :mod:`certmq.registry.events` for the PostgreSQL LISTEN/NOTIFY seam."""
        if isinstance(event, CaAdded | CaStatusChanged):
            stored = await self._run(functools.partial(self.store.get_stored_ca, event.sn))
            if stored is None:
                self.index.remove_ca(event.sn)
            elif self.index.ca(event.sn) is not None:
                self.index.set_ca_active(event.sn, stored.record.active)
            else:
                self.index.put_ca(
                    CaEntry.from_record(stored.record, stored.subject_der, stored.subject_key_identifier)
                )
        elif isinstance(event, CaDeleted):
            self.index.remove_ca(event.sn)
        elif isinstance(event, DeviceAdded | DeviceStatusChanged):
            device = await self._run(functools.partial(self.store.get_device, event.ca_sn, event.device_sn))
            if device is None:
                self.index.remove_device(event.ca_sn, event.device_sn)
            else:
                self.index.put_device(
                    device.ca_sn, device.device_sn, bytes.fromhex(device.fingerprint), device.active
                )
        elif isinstance(event, DeviceDeleted):
            self.index.remove_device(event.ca_sn, event.device_sn)
        elif isinstance(event, SettingChanged):
            value = await self._run(functools.partial(self.store.get_setting, event.key))
            if value is None:
                self._settings.pop(event.key, None)
            else:
                self._settings[event.key] = value
        self._emit(event)

    # --- settings -------------------------------------------------------------------------------

    async def get_setting(self, key: str) -> Any | None:
        """A run-time setting (JSON value), or None when it was never set. Served from memory."""
        value = self._settings.get(key)
        return copy.deepcopy(value)

    async def set_setting(self, key: str, value: Any) -> None:
        """Store a run-time setting (any JSON value) durably and emit SettingChanged."""
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise ParameterFieldCheckFailed("a setting key is a string of 1 to 128 characters")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ParameterFieldCheckFailed(f"setting {key!r} must be a JSON value: {error}") from error
        now = self.clock()
        stored = copy.deepcopy(value)

        def after_commit(_: None) -> None:
            self._settings[key] = stored
            self._emit(SettingChanged(key))

        await self._commit(functools.partial(self.store.set_setting, key, stored, now), after_commit)

    # --- the decision log -----------------------------------------------------------------------

    def record_decision(self, decision: Decision) -> None:
        """Queue a decision for the audit log. Cheap and synchronous, for the hot path: the
        decision is written within about half a second, in a batch, by a background task. A
        refusal of a stranger (``identity_known`` false) is folded with the others of its source
        and reason, in memory (:mod:`certmq.registry.folding`)."""
        if decision.identity_known:
            self._queue((decision,), self._decisions)
        else:
            self._queue(self._folding.add(decision), self._decisions)

    def _queue(self, rows: Iterable[Logged], pending: PendingRows[Logged]) -> None:
        for row in rows:
            pending.append(row)
        if len(pending) >= self.decision_flush_rows:
            self._flush_wakeup.set()

    def _close_fold_windows(
        self, folding: RefusalFolding[Logged], pending: PendingRows[Logged], *, every: bool = False
    ) -> None:
        """Queue the rows of the fold windows that have closed by now (all of them with ``every``)."""
        if folding.open_windows:
            self._queue(folding.close_all() if every else folding.close_expired(self.clock()), pending)

    @property
    def refusals_folded(self) -> dict[str, int]:
        """Refusals of strangers counted into folded rows instead of written one by one, by reason."""
        return dict(self._folding.folded)

    @property
    def calls_folded(self) -> dict[str, int]:
        """Calls of the RPC API that were not authenticated, counted into folded rows of the
        operations log instead of written one by one, by error code."""
        return dict(self._operation_folding.folded)

    @property
    def open_fold_windows(self) -> int:
        return self._folding.open_windows

    @property
    def decisions_pending(self) -> int:
        return len(self._decisions)

    @property
    def decisions_dropped(self) -> int:
        return self._decisions.dropped

    @property
    def decisions_pending_bytes(self) -> int:
        """What the queued decisions take in memory, estimated."""
        return self._decisions.bytes

    async def flush_decisions(self, *, close_all_windows: bool = False) -> None:
        """Write every queued decision now, with the rows of the fold windows that have closed
        (all of them with ``close_all_windows``), and wait for the writes already under way."""
        self._close_fold_windows(self._folding, self._decisions, every=close_all_windows)
        batch = self._decisions.take()

        def write() -> None:
            self.store.add_decisions([_decision_row(decision) for decision in batch])

        try:
            await self._run(write)
        except Exception:
            # Put them back, in order, so that the next flush tries again.
            self._decisions.put_back(batch)
            raise
        self._decisions_written += len(batch)

    async def _write_decisions(self) -> None:
        last_retention = -self.retention_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wakeup.wait(), timeout=self.decision_flush_interval)
            self._flush_wakeup.clear()
            try:
                self._close_fold_windows(self._folding, self._decisions)
                self._close_fold_windows(self._operation_folding, self._operations)
                if self._decisions:
                    await self.flush_decisions()
                if self._operations:
                    await self.flush_operations()
                if time.monotonic() - last_retention >= self.retention_interval:
                    last_retention = time.monotonic()
                    await self.enforce_retention()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not write decisions to the registry; retrying")
                await asyncio.sleep(self.decision_flush_interval)

    async def enforce_retention(self) -> int:
        """Delete decisions beyond the retention bound (rows and age) and expired unused
        registration codes. Runs periodically on its own; returns how many decisions went."""
        now = self.clock()

        def work() -> int:
            removed = self.store.prune_decisions(
                max_rows=self.decision_max_rows, older_than=now - self.decision_max_age
            )
            self.store.prune_operations(
                max_rows=self.operation_max_rows, older_than=now - self.operation_max_age
            )
            self.store.delete_expired_registration_codes(now)
            return removed

        return await self._run(work)

    async def search_decisions(
        self,
        *,
        device_sn: str | None = None,
        ca_sn: str | None = None,
        client_id: str | None = None,
        result: str | None = None,
        reason: str | None = None,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DecisionRecord]:
        """Recorded decisions, newest first, matching every filter given. Decisions still queued
        in memory are not included: ``flush_decisions`` first to see them."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DECISION_SEARCH:
            raise ParameterFieldCheckFailed(f"limit must be from 1 to {MAX_DECISION_SEARCH}, not {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ParameterFieldCheckFailed(f"offset must be 0 or more, not {offset!r}")
        if result is not None and result not in (Result.ALLOW, Result.DENY):
            raise ParameterFieldCheckFailed(f"result must be 'allow' or 'deny', not {result!r}")
        for moment in (since, until):
            if moment is not None and moment.tzinfo is None:
                raise ParameterFieldCheckFailed("since and until must be timezone-aware times")
        return await self._run(
            functools.partial(
                self.store.search_decisions,
                device_sn=device_sn,
                ca_sn=ca_sn,
                client_id=client_id,
                result=None if result is None else str(result),
                reason=reason,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )

    # --- the operations log of the RPC API ------------------------------------------------------

    def record_operation(self, operation: Operation) -> None:
        """Queue a call of the RPC API for the operations log. Cheap and synchronous: the call is
        written within about half a second, in a batch with others. A call that was not
        authenticated is folded with the others of its source, action and code, in memory
        (:mod:`certmq.registry.folding`)."""
        self._queue(self._operation_folding.add(operation), self._operations)

    @property
    def operations_pending(self) -> int:
        return len(self._operations)

    @property
    def operations_pending_bytes(self) -> int:
        """What the queued calls take in memory, estimated."""
        return self._operations.bytes

    @property
    def operations_dropped(self) -> int:
        return self._operations.dropped

    async def flush_operations(self, *, close_all_windows: bool = False) -> None:
        """Write every queued call now, with the rows of the fold windows that have closed (all
        of them with ``close_all_windows``)."""
        self._close_fold_windows(self._operation_folding, self._operations, every=close_all_windows)
        batch = self._operations.take()

        def write() -> None:
            self.store.add_operations([_operation_row(operation) for operation in batch])

        try:
            await self._run(write)
        except Exception:
            self._operations.put_back(batch)
            raise

    async def search_operations(
        self,
        *,
        access_key_id: str | None = None,
        action: str | None = None,
        code: str | None = None,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[OperationRecord]:
        """Recorded calls, newest first, matching every filter given. Calls still queued in memory
        are not included: ``flush_operations`` first to see them."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_OPERATION_SEARCH:
            raise ParameterFieldCheckFailed(f"limit must be from 1 to {MAX_OPERATION_SEARCH}, not {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ParameterFieldCheckFailed(f"offset must be 0 or more, not {offset!r}")
        for moment in (since, until):
            if moment is not None and moment.tzinfo is None:
                raise ParameterFieldCheckFailed("since and until must be timezone-aware times")
        return await self._run(
            functools.partial(
                self.store.search_operations,
                access_key_id=access_key_id,
                action=action,
                code=code,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )

    # --- overview -------------------------------------------------------------------------------

    async def counts(self, expiring_within: datetime.timedelta = EXPIRING_WITHIN) -> RegistryCounts:
        """Numbers of CAs and devices by status, and of certificates valid now that expire within
        ``expiring_within`` (30 days)."""
        now = self.clock()
        cas_expiring, devices_expiring = await self._run(
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
