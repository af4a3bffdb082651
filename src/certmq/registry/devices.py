"""Device certificates: reading, listing, activating, inactivating and deleting (docs/api.md).
A device is registered on its first allowed connection: :mod:`certmq.registry.registration`."""

from __future__ import annotations

import functools

from certmq.registry.errors import unknown_ca, unknown_device
from certmq.registry.events import DeviceDeleted, DeviceStatusChanged
from certmq.registry.models import Status
from certmq.registry.parameters import check_paging, check_sn, parse_status
from certmq.registry.records import DeviceRecord, Page
from certmq.registry.registration import Registrations
from certmq.registry.worker import RegistryPart, Shared


class DeviceCertificates(RegistryPart):
    """The devices of the instance's CAs; each change committed, then put in the index and
    emitted as an event."""

    def __init__(self, shared: Shared, registrations: Registrations) -> None:
        super().__init__(shared)
        self._registrations = registrations

    def _missing(self, ca_sn: str, device_sn: str) -> Exception:
        """The error for a device that the store did not find (runs on the worker thread)."""
        if not self._store.ca_exists(ca_sn):
            return unknown_ca(ca_sn)
        return unknown_device(ca_sn, device_sn)

    async def get(self, ca_sn: str, device_sn: str) -> DeviceRecord:
        check_sn(ca_sn, "CaSn")
        check_sn(device_sn, "DeviceSn")

        def work() -> DeviceRecord:
            record = self._store.get_device(ca_sn, device_sn)
            if record is None:
                raise self._missing(ca_sn, device_sn)
            return record

        return await self._worker.run(work)

    async def list(
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
        check_paging(page_no, page_size)
        wanted = parse_status(status)
        if ca_sn is not None and self._index.ca(ca_sn) is None:
            raise unknown_ca(ca_sn)
        await self._registrations.written()  # the totals come from the index
        offset = (page_no - 1) * page_size
        total = self._total(ca_sn, wanted) if name is None else None
        if total is not None and offset >= total:
            return Page((), page_no, page_size, total)
        items, counted = await self._worker.run(
            functools.partial(
                self._store.list_devices,
                offset,
                page_size,
                ca_sn=ca_sn,
                status=wanted,
                name=name,
                count=total is None,
            )
        )
        return Page(tuple(items), page_no, page_size, total if total is not None else counted or 0)

    def _total(self, ca_sn: str | None, status: Status | None) -> int:
        """Matching devices, counted by the index rather than by scanning the table."""
        if ca_sn is None:
            devices, inactive = self._index.device_count, self._index.inactive_device_count
        else:
            devices, inactive = self._index.device_counts(ca_sn)
        if status is None:
            return devices
        return inactive if status == Status.INACTIVE else devices - inactive

    async def _set_status(self, ca_sn: str, device_sn: str, status: Status) -> DeviceRecord:
        check_sn(ca_sn, "CaSn")
        check_sn(device_sn, "DeviceSn")
        now = self._clock()

        def work() -> tuple[DeviceRecord, bool]:
            result = self._store.set_device_status(ca_sn, device_sn, status, now)
            if result is None:
                raise self._missing(ca_sn, device_sn)
            return result

        def after_commit(result: tuple[DeviceRecord, bool]) -> None:
            record, changed = result
            self._index.set_device_active(ca_sn, device_sn, record.active)
            if changed:
                self._events.emit(DeviceStatusChanged(ca_sn, device_sn, record.active))

        record, _ = await self._worker.commit(work, after_commit)
        return record

    async def activate(self, ca_sn: str, device_sn: str) -> DeviceRecord:
        return await self._set_status(ca_sn, device_sn, Status.ACTIVE)

    async def inactivate(self, ca_sn: str, device_sn: str) -> DeviceRecord:
        """Deny the device's new connections; subscribers disconnect its live sessions."""
        return await self._set_status(ca_sn, device_sn, Status.INACTIVE)

    async def delete(self, ca_sn: str, device_sn: str) -> None:
        """Remove the record; a later valid connection registers the device again. To block a
        device, inactivate it."""
        check_sn(ca_sn, "CaSn")
        check_sn(device_sn, "DeviceSn")

        def work() -> None:
            if not self._store.delete_device(ca_sn, device_sn):
                raise self._missing(ca_sn, device_sn)

        def after_commit(_: None) -> None:
            self._index.remove_device(ca_sn, device_sn)
            self._events.emit(DeviceDeleted(ca_sn, device_sn))

        await self._worker.commit(work, after_commit)

    async def reload(self, ca_sn: str, device_sn: str) -> None:
        """Bring the index's entry of the device up to date with the store, after another node
        registered it or changed its status."""
        device = await self._worker.run(functools.partial(self._store.get_device, ca_sn, device_sn))
        if device is None:
            self._index.remove_device(ca_sn, device_sn)
        else:
            self._index.put_device(
                device.ca_sn, device.device_sn, bytes.fromhex(device.fingerprint), device.active
            )
