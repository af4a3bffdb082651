"""Auto-registration of first-time devices (step 6 of the decision procedure), in batches.

The broker lets a first-time device in at once and registers it behind its back. Registrations
are written together, one transaction and one commit per batch (group commit): a batch waits up
to ``delay`` for others to join it, holds at most :data:`REGISTRATION_BATCH`, and is handed to the
database thread before any other database work that starts meanwhile
(:attr:`DatabaseWorker.before_work <certmq.registry.worker.DatabaseWorker.before_work>`), so that
every read sees every device let in.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmq.pki import common_name, serial_hex
from certmq.registry.errors import SerialCollision
from certmq.registry.events import DeviceAdded
from certmq.registry.records import DeviceRecord
from certmq.registry.store import NewDevice
from certmq.registry.worker import RegistryPart, Shared

log = logging.getLogger("certmq.registry")

# At most this many first-time devices are written in one transaction (group commit).
REGISTRATION_BATCH = 256
# How long a first-time device's registration may wait for others to share its transaction.
REGISTRATION_DELAY = 0.2
# Devices named in the log line of one batch of registrations.
REGISTRATIONS_LOGGED = 10

# A device waiting for the database thread, and the future of its registration.
_Registration = tuple[NewDevice, "asyncio.Future[tuple[DeviceRecord, bool]]"]


def _settle(
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


class Registrations(RegistryPart):
    """The registrations under way, and the batch waiting for the database thread."""

    def __init__(self, shared: Shared, *, delay: float = REGISTRATION_DELAY) -> None:
        super().__init__(shared)
        self.delay = delay
        # (CA Sn, serial) -> the fingerprint being registered and its registration.
        self._registering: dict[tuple[str, str], tuple[str, asyncio.Future[tuple[DeviceRecord, bool]]]] = {}
        # The registrations that the database thread has not taken yet: written in one transaction,
        # submitted after ``delay`` or before any other database work, whichever first.
        self._batch: list[_Registration] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_batch: list[_Registration] | None = None
        self._lock = threading.Lock()

    async def register(self, ca_sn: str, certificate: x509.Certificate) -> DeviceRecord:
        """Store the device certificate as active under the CA ``ca_sn`` and return its record
        once it is durable. See :meth:`begin`."""
        return await self.begin(ca_sn, certificate)

    def begin(
        self,
        ca_sn: str,
        certificate: x509.Certificate,
        *,
        der: bytes | None = None,
        name: str | None = None,
        sha256: bytes | None = None,
    ) -> asyncio.Future[DeviceRecord]:
        """Start registering a device certificate as active under the CA ``ca_sn``, without
        waiting.

        Raises SerialCollision at once when another certificate holds, or is being registered
        with, the (CA, serial) pair. The returned future gives the record once it is committed,
        or the error that kept it from the registry (SerialCollision when another node registered
        another certificate first). Idempotent: concurrent calls for one device share one
        registration, and a registered device gives its record.

        ``der``, ``name`` and ``sha256``, the certificate's DER, CN and SHA-256 digest, may be
        given by a caller that has them (the broker's decision read them): each costs a new
        encoding, parse or hash."""
        device_sn = serial_hex(certificate)
        if der is None:
            der = certificate.public_bytes(Encoding.DER)
        digest = hashlib.sha256(der).digest() if sha256 is None else sha256
        known = self._index.device(ca_sn, device_sn)
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
            pending = self._queue(new)
            self._registering[key] = (fingerprint, pending)
            pending.add_done_callback(functools.partial(self._forget, key))
        else:
            pending_fingerprint, pending = registering
            if pending_fingerprint != fingerprint:
                raise SerialCollision(
                    f"another certificate is being registered with CA Sn {ca_sn} and serial {device_sn}",
                    ca_sn=ca_sn,
                    device_sn=device_sn,
                )
        mine: asyncio.Future[DeviceRecord] = asyncio.get_running_loop().create_future()
        pending.add_done_callback(functools.partial(_settle, mine, fingerprint))
        return mine

    def _forget(self, key: tuple[str, str], done: asyncio.Future[tuple[DeviceRecord, bool]]) -> None:
        registering = self._registering.get(key)
        if registering is not None and registering[1] is done:
            del self._registering[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure is not reported as unhandled

    def _queue(self, new: NewDevice) -> asyncio.Future[tuple[DeviceRecord, bool]]:
        """Add ``new`` to the registrations that the database thread has not taken yet. A new
        batch is submitted after ``delay``, when it is full, or before other work. The future is
        resolved on the loop, after the commit, the index and the event."""
        if self._worker.closed:
            raise RuntimeError("the registry service is closed")
        loop = asyncio.get_running_loop()
        registration: _Registration = (new, loop.create_future())
        with self._lock:
            batch = self._batch
            opened = batch is None or len(batch) >= REGISTRATION_BATCH
            if opened:
                batch = self._batch = []
            assert batch is not None
            batch.append(registration)
        if opened:
            self.submit_waiting()  # the previous batch, if it is still waiting
            self._timer = loop.call_later(self.delay, self.submit_waiting)
            self._waiting_batch = batch
        elif len(batch) >= REGISTRATION_BATCH:
            self.submit_waiting()
        return registration[1]

    async def written(self) -> None:
        """Wait until the registrations started so far are committed and in the index."""
        pending = [future for _, future in self._registering.values()]
        if pending:
            self.submit_waiting()
            await asyncio.wait(pending)

    def submit_waiting(self) -> None:
        """Hand the waiting batch of registrations, if any, to the database thread."""
        batch = self._waiting_batch
        if batch is None:
            return
        self._waiting_batch = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        written = self._worker.start(self._write, batch)
        written.add_done_callback(functools.partial(self._apply, batch))

    def _write(self, batch: list[_Registration]) -> list[tuple[DeviceRecord, bool] | Exception]:
        """On the database thread: close ``batch`` (later registrations start the next one) and
        write it in one transaction."""
        with self._lock:
            if self._batch is batch:
                self._batch = None
        try:
            return self._store.add_devices([new for new, _ in batch], self._clock())
        except Exception as error:
            return [error] * len(batch)

    def _apply(
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
                self._index.put_device(
                    new.ca_sn, new.device_sn, bytes.fromhex(record.fingerprint), record.active
                )
                if created:
                    self._events.emit(DeviceAdded(new.ca_sn, new.device_sn))
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
