"""The registry's tables of CA and device certificates, registration codes and settings; the two
audit logs are :mod:`certmq.registry.log_store`'s, the connection :mod:`certmq.registry.database`'s.

:func:`open_registry` opens it and applies the migrations. :class:`RegistryStore` is synchronous:
every method is one transaction, committed before it returns, so what a caller acknowledges is
durable. The service calls it from its one worker thread (:mod:`certmq.registry.worker`); nothing
else should write to the same store from another thread of the same process.

On PostgreSQL, the transaction of every change also tells the other nodes of it
(:meth:`~certmq.registry.database.Database.announce`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError, OperationalError

from certmq.registry import events, models
from certmq.registry.database import READ_ONLY, Database, create_registry_engine, stored_time
from certmq.registry.errors import (
    CaNumExceed,
    FindCaBySnError,
    RegisterCodeError,
    RegisterCodeUsed,
    RegistryUnreachable,
    SerialCollision,
    SnNotUnique,
)
from certmq.registry.log_store import DECISION_TABLE, OPERATION_TABLE, LogTable
from certmq.registry.models import CaCertificateRow, DeviceCertificateRow, Status
from certmq.registry.records import CaRecord, DeviceRecord, RegistrationCode

# Rows fetched per round trip when streaming the device table into the in-memory index.
STREAM_BATCH = 10_000
IMPORT_BATCH = 50_000


def open_registry(url_or_path: str | Path, data_dir: Path | None = None) -> RegistryStore:
    """Open the registry at ``url_or_path`` (see :func:`~certmq.registry.database.registry_url`)
    and bring its schema up to date (``alembic upgrade head``). An SQLite file and its directory
    are created when missing."""
    engine = create_registry_engine(url_or_path, data_dir)
    store = RegistryStore(engine)
    try:
        store.migrate()
    except OperationalError as error:
        engine.dispose()
        raise RegistryUnreachable(
            f"cannot open the registry at {engine.url.render_as_string(hide_password=True)}: "
            f"{str(error.orig or error).strip().splitlines()[0]} (storage.url, CERTMQ_STORAGE_URL)"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return store


# --- converting rows ------------------------------------------------------------------------------


def _ca_record(row: CaCertificateRow) -> CaRecord:
    return CaRecord(
        sn=row.sn,
        name=row.name,
        pem=row.pem,
        fingerprint=row.fingerprint,
        subject=row.subject,
        valid_begin=row.valid_begin,
        valid_end=row.valid_end,
        status=Status(row.status),
        registration_code=row.registration_code,
        verification_pem=row.verification_pem,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _device_record(row: DeviceCertificateRow) -> DeviceRecord:
    return DeviceRecord(
        ca_sn=row.ca_sn,
        device_sn=row.device_sn,
        name=row.name,
        pem=row.pem,
        fingerprint=row.fingerprint,
        valid_begin=row.valid_begin,
        valid_end=row.valid_end,
        status=Status(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_DEVICE_COLUMNS = tuple(
    getattr(DeviceCertificateRow, field.name) for field in dataclasses.fields(DeviceRecord)
)


def _selected_device_record(row: Row[Any]) -> DeviceRecord:
    """The record of a row selected with ``_DEVICE_COLUMNS``."""
    return DeviceRecord(**{**row._mapping, "status": Status(row.status)})


@dataclass(frozen=True, slots=True)
class NewCa:
    """A CA certificate that passed the certificate checks of a registration, ready to be stored."""

    sn: str
    name: str
    pem: str
    fingerprint: str
    subject: str
    subject_der: bytes
    subject_key_identifier: bytes | None
    valid_begin: datetime.datetime
    valid_end: datetime.datetime
    registration_code: str
    verification_pem: str


@dataclass(frozen=True, slots=True)
class StoredCa:
    """What the in-memory index needs of a CA: its record, the parsed parts come from the PEM."""

    record: CaRecord
    subject_der: bytes
    subject_key_identifier: bytes | None


@dataclass(frozen=True, slots=True)
class NewDevice:
    ca_sn: str
    device_sn: str
    name: str
    pem: str
    fingerprint: str
    valid_begin: datetime.datetime
    valid_end: datetime.datetime


_NEW_DEVICE_COLUMNS = (
    "ca_sn, device_sn, name, pem, fingerprint, valid_begin, valid_end, status, created_at, updated_at"
)


def _device_row(device: NewDevice, created: object, sqlite: bool) -> tuple[object, ...]:
    """The values of :data:`_NEW_DEVICE_COLUMNS` for a new, active device, as the driver takes them."""
    valid_begin, valid_end = stored_time(device.valid_begin, sqlite), stored_time(device.valid_end, sqlite)
    return (device.ca_sn, device.device_sn, device.name, device.pem, device.fingerprint,
            valid_begin, valid_end, Status.ACTIVE.value, created, created)  # fmt: skip


def _new_device_record(device: NewDevice, created_at: datetime.datetime) -> DeviceRecord:
    """The record of a device just inserted, as reading its row back would give it."""
    return DeviceRecord(
        ca_sn=device.ca_sn,
        device_sn=device.device_sn,
        name=device.name,
        pem=device.pem,
        fingerprint=device.fingerprint,
        valid_begin=device.valid_begin.astimezone(datetime.UTC),
        valid_end=device.valid_end.astimezone(datetime.UTC),
        status=Status.ACTIVE,
        created_at=created_at,
        updated_at=created_at,
    )


def _conflicting_device(connection: Connection, device: NewDevice) -> DeviceRecord | None:
    """The stored device that kept ``device`` out: the one with its (CA, serial) pair, else the
    one with its fingerprint."""
    row = connection.execute(
        select(*_DEVICE_COLUMNS).where(
            DeviceCertificateRow.ca_sn == device.ca_sn, DeviceCertificateRow.device_sn == device.device_sn
        )
    ).first()
    if row is None:
        row = connection.execute(
            select(*_DEVICE_COLUMNS).where(DeviceCertificateRow.fingerprint == device.fingerprint)
        ).first()
    return None if row is None else _selected_device_record(row)


def _already_registered(
    device: NewDevice, stored: DeviceRecord | None
) -> tuple[DeviceRecord, bool] | Exception:
    """``(stored, False)`` when ``stored`` is ``device`` registered before (idempotent), else
    the SerialCollision that kept it out."""
    if stored is None:
        # It conflicted with a row that was gone when read (deleted meanwhile by another process).
        return SerialCollision(
            f"device certificate {device.device_sn} of CA {device.ca_sn} could not be registered",
            ca_sn=device.ca_sn,
            device_sn=device.device_sn,
        )
    if stored.fingerprint != device.fingerprint:
        return SerialCollision(
            f"another certificate is registered with CA Sn {device.ca_sn} and serial {device.device_sn} "
            f"(fingerprint {stored.fingerprint}); a CA must not reuse serial numbers",
            ca_sn=device.ca_sn,
            device_sn=device.device_sn,
        )
    if (stored.ca_sn, stored.device_sn) != (device.ca_sn, device.device_sn):
        return SerialCollision(
            f"this certificate is already registered under CA Sn {stored.ca_sn}",
            ca_sn=device.ca_sn,
            device_sn=device.device_sn,
        )
    return stored, False


class RegistryStore(Database):
    """The registry's tables, one transaction per method; ``decisions`` and ``operations`` are the
    two audit logs. Not thread-safe: use it from one thread."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.decisions = LogTable(self, DECISION_TABLE)
        self.operations = LogTable(self, OPERATION_TABLE)

    def __repr__(self) -> str:
        return f"RegistryStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # --- registration codes ---------------------------------------------------------------------

    def add_registration_code(self, code: RegistrationCode) -> None:
        with self.session() as session, session.begin():
            session.add(
                models.RegistrationCodeRow(
                    code=code.code, created_at=code.created_at, expires_at=code.expires_at
                )
            )

    def delete_expired_registration_codes(self, now: datetime.datetime) -> int:
        """Forget unused codes that expired (used ones stay: they document a CA's registration)."""
        with self.session() as session, session.begin():
            result = session.execute(
                delete(models.RegistrationCodeRow).where(
                    models.RegistrationCodeRow.expires_at < now,
                    models.RegistrationCodeRow.used_at.is_(None),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    # --- CA certificates ------------------------------------------------------------------------

    def add_ca(self, new: NewCa, *, now: datetime.datetime, ca_limit: int) -> CaRecord:
        """Store a CA whose certificates passed their checks: consume its registration code and
        insert it in one transaction, after the code, uniqueness and limit checks, in that order
        (docs/api.md, "Errors"). Of two registrations racing with one code, exactly one consumes it."""
        with self.session() as session, session.begin():
            code = session.get(models.RegistrationCodeRow, new.registration_code)
            if code is None:
                raise RegisterCodeError(
                    f"the verification certificate's CN {new.registration_code!r} is not a registration "
                    f"code of this instance; get one with GetRegisterCode (certmq ca code) and issue the "
                    f"verification certificate with it"
                )
            if code.used_at is not None:
                raise RegisterCodeUsed(
                    f"registration code {code.code!r} was already used to register CA {code.used_by_ca_sn}; "
                    f"get a new code and issue a new verification certificate"
                )
            if code.expires_at <= now:
                raise RegisterCodeError(
                    f"registration code {code.code!r} expired at {code.expires_at:%Y-%m-%d %H:%M:%S} UTC; "
                    f"get a new code and issue a new verification certificate"
                )
            existing = session.scalars(
                select(CaCertificateRow).where(
                    (CaCertificateRow.sn == new.sn) | (CaCertificateRow.fingerprint == new.fingerprint)
                )
            ).first()
            if existing is not None:
                what = "certificate" if existing.fingerprint == new.fingerprint else "serial number"
                raise SnNotUnique(
                    f"a CA with the same {what} is already registered (Sn {existing.sn}); "
                    f"delete it first, or register a CA with another serial number"
                )
            count = session.scalar(select(func.count()).select_from(CaCertificateRow)) or 0
            if count >= ca_limit:
                raise CaNumExceed(
                    f"this instance already has {count} CA certificates, its limit; "
                    f"delete CA certificates that are no longer used"
                )
            consumed = session.execute(
                update(models.RegistrationCodeRow)
                .where(
                    models.RegistrationCodeRow.code == new.registration_code,
                    models.RegistrationCodeRow.used_at.is_(None),
                )
                .values(used_at=now, used_by_ca_sn=new.sn)
            )
            if getattr(consumed, "rowcount", 0) != 1:
                raise RegisterCodeUsed(
                    f"registration code {new.registration_code!r} was used by another registration "
                    f"at the same time; get a new code"
                )
            row = CaCertificateRow(
                sn=new.sn,
                name=new.name,
                pem=new.pem,
                fingerprint=new.fingerprint,
                subject=new.subject,
                subject_der=new.subject_der,
                subject_key_identifier=new.subject_key_identifier,
                valid_begin=new.valid_begin,
                valid_end=new.valid_end,
                status=Status.ACTIVE.value,
                registration_code=new.registration_code,
                verification_pem=new.verification_pem,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError as error:
                raise SnNotUnique(
                    f"a CA with serial number {new.sn} or the same certificate was registered at the "
                    f"same time; list the CA certificates"
                ) from error
            self.announce(session.connection(), (events.CaAdded(new.sn),))
            return _ca_record(row)

    def get_ca(self, sn: str) -> CaRecord | None:
        with self.read_session() as session:
            row = session.scalars(select(CaCertificateRow).where(CaCertificateRow.sn == sn)).first()
            return None if row is None else _ca_record(row)

    def list_cas(self, offset: int, limit: int) -> tuple[list[CaRecord], int]:
        with self.read_session() as session:
            total = session.scalar(select(func.count()).select_from(CaCertificateRow)) or 0
            rows = session.scalars(
                select(CaCertificateRow).order_by(CaCertificateRow.id).offset(offset).limit(limit)
            )
            return [_ca_record(row) for row in rows], total

    def all_cas(self) -> list[StoredCa]:
        with self.read_session() as session:
            rows = session.scalars(select(CaCertificateRow).order_by(CaCertificateRow.id))
            return [StoredCa(_ca_record(row), row.subject_der, row.subject_key_identifier) for row in rows]

    def get_stored_ca(self, sn: str) -> StoredCa | None:
        with self.read_session() as session:
            row = session.scalars(select(CaCertificateRow).where(CaCertificateRow.sn == sn)).first()
            if row is None:
                return None
            return StoredCa(_ca_record(row), row.subject_der, row.subject_key_identifier)

    def set_ca_status(self, sn: str, status: Status, now: datetime.datetime) -> tuple[CaRecord, bool] | None:
        """The CA after the change, and whether its status changed; None if it is unknown."""
        with self.session() as session, session.begin():
            row = session.scalars(select(CaCertificateRow).where(CaCertificateRow.sn == sn)).first()
            if row is None:
                return None
            changed = row.status != status.value
            if changed:
                row.status = status.value
                row.updated_at = now
                self.announce(session.connection(), (events.CaStatusChanged(sn, status == Status.ACTIVE),))
            return _ca_record(row), changed

    def delete_ca(self, sn: str) -> bool:
        """Delete the CA and, by the foreign key's cascade, its device certificates."""
        with self.session() as session, session.begin():
            result = session.execute(delete(CaCertificateRow).where(CaCertificateRow.sn == sn))
            deleted = bool(getattr(result, "rowcount", 0))
            if deleted:
                self.announce(session.connection(), (events.CaDeleted(sn),))
            return deleted

    def count_cas(self) -> int:
        with self.read_session() as session:
            return session.scalar(select(func.count()).select_from(CaCertificateRow)) or 0

    # --- device certificates --------------------------------------------------------------------

    def add_device(self, new: NewDevice, now: datetime.datetime) -> tuple[DeviceRecord, bool]:
        """Register a device certificate as active. Returns the record and whether it was created:
        when the same certificate is already registered, that record (idempotent). Raises
        SerialCollision when another certificate holds its (CA, serial) pair, FindCaBySnError when
        the CA is not registered."""
        (result,) = self.add_devices([new], now)
        if isinstance(result, Exception):
            raise result
        return result

    def add_devices(
        self, devices: Sequence[NewDevice], now: datetime.datetime
    ) -> list[tuple[DeviceRecord, bool] | Exception]:
        """Register device certificates as active in one transaction, one commit for all (the
        first connections of many devices at once). For each device, in order, what
        :meth:`add_device` returns, or the error it would raise. When the transaction fails as a
        whole because of a row (a CA not registered, a value the database refuses), each device is
        tried again in its own transaction, so that one bad row fails alone."""
        if not devices:
            return []
        try:
            return self._insert_devices(devices, now)
        except OperationalError as error:
            # The database failed, not a row (unreachable, locked beyond the busy timeout):
            # every device fails with it rather than waiting for it once more each.
            return [error] * len(devices)
        except Exception as error:
            if len(devices) == 1:
                return [self._insert_error(devices[0], error)]
        results: list[tuple[DeviceRecord, bool] | Exception] = []
        for device in devices:
            try:
                results += self._insert_devices([device], now)
            except Exception as error:
                results.append(self._insert_error(device, error))
        return results

    def _insert_devices(
        self, devices: Sequence[NewDevice], now: datetime.datetime
    ) -> list[tuple[DeviceRecord, bool] | Exception]:
        """One transaction: one INSERT … ON CONFLICT DO NOTHING of every device. When every row
        went in, as it does unless another node registered one of them first, nothing is read:
        each record is what was inserted. Else the transaction is rolled back and written again
        with RETURNING, to learn which rows went in, and the stored row of each one that did not
        is read. The foreign key checks the CA (and, on PostgreSQL, locks it against deletion
        until the commit).

        Not RETURNING at first because each returned row is one more step of the statement, and
        the driver lets go of the interpreter lock around each: a handoff with the event loop per
        device, which costs more than the insert."""
        created_at = now.astimezone(datetime.UTC)
        sqlite = self.dialect == "sqlite"
        created = stored_time(created_at, sqlite)
        # Through the driver: SQLAlchemy's per-value conversions would cost more than the insert.
        row = f"({', '.join(['?' if sqlite else '%s'] * 10)})"
        # A (CA, serial) pair or a fingerprint already stored, or stored at the same time by
        # another process, is skipped rather than an error.
        statement = (
            f"INSERT INTO device_certificate ({_NEW_DEVICE_COLUMNS}) VALUES {', '.join([row] * len(devices))} "
            "ON CONFLICT DO NOTHING"
        )
        values = tuple(value for device in devices for value in _device_row(device, created, sqlite))
        with self.engine.connect() as connection:
            with connection.begin() as transaction:
                if connection.exec_driver_sql(statement, values).rowcount == len(devices):
                    self.announce(
                        connection, (events.DeviceAdded(new.ca_sn, new.device_sn) for new in devices)
                    )
                    return [(_new_device_record(device, created_at), True) for device in devices]
                transaction.rollback()
            with connection.begin():
                returned = connection.exec_driver_sql(f"{statement} RETURNING ca_sn, device_sn", values)
                inserted = {(row.ca_sn, row.device_sn) for row in returned}
                results: list[tuple[DeviceRecord, bool] | Exception] = []
                added: list[NewDevice] = []
                for device in devices:
                    key = (device.ca_sn, device.device_sn)
                    if key in inserted:
                        inserted.discard(key)  # the same device twice in a batch: the second finds the first
                        results.append((_new_device_record(device, created_at), True))
                        added.append(device)
                    else:
                        results.append(_already_registered(device, _conflicting_device(connection, device)))
                self.announce(connection, (events.DeviceAdded(new.ca_sn, new.device_sn) for new in added))
                return results

    def _insert_error(self, device: NewDevice, error: Exception) -> Exception:
        """The error of a device whose own transaction failed: FindCaBySnError when it is the
        foreign key, its CA not registered; else the database's error."""
        if isinstance(error, IntegrityError) and not self.ca_exists(device.ca_sn):
            return FindCaBySnError(f"no CA certificate is registered with Sn {device.ca_sn}")
        return error

    def import_devices(
        self, devices: Iterable[NewDevice], now: datetime.datetime, *, batch: int = IMPORT_BATCH
    ) -> int:
        """Insert many new device certificates as active, ``batch`` rows per transaction, and
        return how many. For imports and benchmarks: it writes through the driver directly (the
        ORM's per-value conversions cost five times more) and does not touch the in-memory
        index; rebuild it afterwards (``RegistryService.rebuild_index``). A row that breaks a
        constraint fails its whole batch."""
        sqlite = self.dialect == "sqlite"
        statement = f"INSERT INTO device_certificate ({_NEW_DEVICE_COLUMNS}) VALUES ({', '.join(['?' if sqlite else '%s'] * 10)})"
        created = stored_time(now, sqlite)
        rows: list[tuple[object, ...]] = []
        count = 0

        def write() -> None:
            with self.engine.begin() as connection:
                raw: Any = connection.connection.dbapi_connection
                cursor = raw.cursor()
                try:
                    cursor.executemany(statement, rows)
                finally:
                    cursor.close()
            rows.clear()

        for device in devices:
            rows.append(_device_row(device, created, sqlite))
            count += 1
            if len(rows) >= batch:
                write()
        if rows:
            write()
        return count

    def get_device(self, ca_sn: str, device_sn: str) -> DeviceRecord | None:
        with self.read_session() as session:
            row = session.scalars(
                select(DeviceCertificateRow).where(
                    DeviceCertificateRow.ca_sn == ca_sn, DeviceCertificateRow.device_sn == device_sn
                )
            ).first()
            return None if row is None else _device_record(row)

    def ca_exists(self, sn: str) -> bool:
        with self.read_session() as session:
            return session.scalar(select(CaCertificateRow.id).where(CaCertificateRow.sn == sn)) is not None

    @staticmethod
    def _device_filters(
        ca_sn: str | None, status: Status | None, name: str | None
    ) -> list[ColumnElement[bool]]:
        filters: list[ColumnElement[bool]] = []
        if ca_sn is not None:
            filters.append(DeviceCertificateRow.ca_sn == ca_sn)
        if status is not None:
            filters.append(DeviceCertificateRow.status == status.value)
        if name is not None:
            filters.append(DeviceCertificateRow.name == name)
        return filters

    def list_devices(
        self,
        offset: int,
        limit: int,
        *,
        ca_sn: str | None = None,
        status: Status | None = None,
        name: str | None = None,
        count: bool = True,
    ) -> tuple[list[DeviceRecord], int | None]:
        """A page of devices in ``(ca_sn, device_sn)`` order, and the number of matching devices
        when ``count``. The page's keys are found on an index alone (a deep OFFSET skips index
        entries, not table rows: an index-only scan), then only those rows are read."""
        filters = self._device_filters(ca_sn, status, name)
        order = (DeviceCertificateRow.ca_sn, DeviceCertificateRow.device_sn)
        keys = select(*order).where(*filters).order_by(*order).offset(offset).limit(limit)
        with self.read_session() as session:
            page_keys = session.execute(keys).all()
            items = []
            if page_keys:
                # The page is the range between its first and last keys, read on the same index.
                # Plain rows, not ORM objects: a page is read often and never modified.
                rows = session.execute(
                    select(*_DEVICE_COLUMNS)
                    .where(
                        *filters,
                        tuple_(*order) >= tuple_(*page_keys[0]),
                        tuple_(*order) <= tuple_(*page_keys[-1]),
                    )
                    .order_by(*order)
                    .limit(limit)
                )
                items = [_selected_device_record(row) for row in rows]
            total = None
            if count:
                total = (
                    session.scalar(select(func.count()).select_from(DeviceCertificateRow).where(*filters))
                    or 0
                )
            return items, total

    def set_device_status(
        self, ca_sn: str, device_sn: str, status: Status, now: datetime.datetime
    ) -> tuple[DeviceRecord, bool] | None:
        with self.session() as session, session.begin():
            row = session.scalars(
                select(DeviceCertificateRow).where(
                    DeviceCertificateRow.ca_sn == ca_sn, DeviceCertificateRow.device_sn == device_sn
                )
            ).first()
            if row is None:
                return None
            changed = row.status != status.value
            if changed:
                row.status = status.value
                row.updated_at = now
                self.announce(
                    session.connection(),
                    (events.DeviceStatusChanged(ca_sn, device_sn, status == Status.ACTIVE),),
                )
            return _device_record(row), changed

    def delete_device(self, ca_sn: str, device_sn: str) -> bool:
        with self.session() as session, session.begin():
            result = session.execute(
                delete(DeviceCertificateRow).where(
                    DeviceCertificateRow.ca_sn == ca_sn, DeviceCertificateRow.device_sn == device_sn
                )
            )
            deleted = bool(getattr(result, "rowcount", 0))
            if deleted:
                self.announce(session.connection(), (events.DeviceDeleted(ca_sn, device_sn),))
            return deleted

    def stream_device_keys(self, batch: int = STREAM_BATCH) -> Iterator[Sequence[tuple[str, str, str, str]]]:
        """Every device as ``(ca_sn, device_sn, fingerprint, status)`` tuples, in batches, straight
        from the driver's cursor: loading a million devices builds no ORM object."""
        table = DeviceCertificateRow.__table__
        query = select(table.c.ca_sn, table.c.device_sn, table.c.fingerprint, table.c.status)
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
            compiled = query.compile(connection)
            raw: Any = connection.connection.dbapi_connection
            connection.begin()  # one consistent snapshot for the whole load
            # PostgreSQL: a server-side cursor, so the client holds one batch at a time.
            cursor = raw.cursor(name="certmq_device_keys") if self.dialect == "postgresql" else raw.cursor()
            try:
                cursor.execute(str(compiled))
                while rows := cursor.fetchmany(batch):
                    yield rows
            finally:
                cursor.close()
                connection.rollback()

    def count_expiring(self, now: datetime.datetime, until: datetime.datetime) -> tuple[int, int]:
        """Numbers of CA and device certificates valid now that end before ``until``."""
        with self.read_session() as session:
            cas = session.scalar(
                select(func.count())
                .select_from(CaCertificateRow)
                .where(CaCertificateRow.valid_end >= now, CaCertificateRow.valid_end < until)
            )
            devices = session.scalar(
                select(func.count())
                .select_from(DeviceCertificateRow)
                .where(DeviceCertificateRow.valid_end >= now, DeviceCertificateRow.valid_end < until)
            )
            return cas or 0, devices or 0

    # --- settings -------------------------------------------------------------------------------

    def all_settings(self) -> dict[str, Any]:
        with self.read_session() as session:
            return {row.key: json.loads(row.value) for row in session.scalars(select(models.SettingRow))}

    def get_setting(self, key: str) -> Any | None:
        with self.read_session() as session:
            row = session.get(models.SettingRow, key)
            return None if row is None else json.loads(row.value)

    def set_setting(self, key: str, value: Any, now: datetime.datetime) -> None:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        with self.session() as session, session.begin():
            row = session.get(models.SettingRow, key)
            if row is None:
                session.add(models.SettingRow(key=key, value=text, updated_at=now))
            else:
                row.value = text
                row.updated_at = now
            self.announce(session.connection(), (events.SettingChanged(key),))

    def add_setting(self, key: str, value: Any, now: datetime.datetime) -> bool:
        """Store ``key`` unless it has a value already, committed here or by another node: True
        when this call stored it. One statement that does nothing on a conflict, so that two nodes
        adding the same key at once neither fail nor overwrite each other."""
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = (
            insert(models.SettingRow)
            .values(key=key, value=text, updated_at=now)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(models.SettingRow.key)
        )
        with self.session() as session, session.begin():
            connection = session.connection()
            added = connection.execute(statement).first() is not None
            if added:
                self.announce(connection, (events.SettingChanged(key),))
            return added
