"""CA certificates: registration codes, registering a CA with proof of possession of its key,
reading, listing, activating, inactivating and deleting (docs/api.md)."""

from __future__ import annotations

import datetime
import functools
import logging
import secrets

from certmq.registry.errors import ParameterFieldCheckFailed, unknown_ca
from certmq.registry.events import CaAdded, CaDeleted, CaStatusChanged
from certmq.registry.index import CaEntry
from certmq.registry.models import Status
from certmq.registry.parameters import check_paging, check_sn
from certmq.registry.proof import check_ca_registration
from certmq.registry.records import CaRecord, Page, RegistrationCode
from certmq.registry.worker import RegistryPart, Shared

log = logging.getLogger("certmq.registry")

DEFAULT_CA_LIMIT = 1000
REGISTRATION_CODE_LIFETIME = datetime.timedelta(hours=24)
MAX_CA_NAME = 128


class CaCertificates(RegistryPart):
    """The CAs of the instance, at most ``ca_limit``; each change committed, then put in the index
    and emitted as an event."""

    def __init__(
        self,
        shared: Shared,
        *,
        ca_limit: int = DEFAULT_CA_LIMIT,
        registration_code_lifetime: datetime.timedelta = REGISTRATION_CODE_LIFETIME,
    ) -> None:
        super().__init__(shared)
        self.ca_limit = ca_limit
        self.registration_code_lifetime = registration_code_lifetime

    async def issue_registration_code(self) -> RegistrationCode:
        """A fresh random code for the CN of a verification certificate: single use, valid 24 h."""
        now = self._clock()
        code = RegistrationCode(secrets.token_hex(16), now, now + self.registration_code_lifetime)
        await self._worker.run(functools.partial(self._store.add_registration_code, code))
        return code

    async def register(self, name: str, ca_pem: str | bytes, verification_pem: str | bytes) -> CaRecord:
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
        now = self._clock()

        def work() -> CaRecord:
            new = check_ca_registration(name.strip(), ca_pem, verification_pem, now)
            return self._store.add_ca(new, now=now, ca_limit=self.ca_limit)

        def after_commit(record: CaRecord) -> None:
            self._index.put_ca(CaEntry.from_record(record))
            self._events.emit(CaAdded(record.sn))

        record = await self._worker.commit(work, after_commit)
        log.info("CA %s registered: %s", record.sn, record.subject)
        return record

    async def get(self, sn: str) -> CaRecord:
        check_sn(sn, "Sn")
        record = await self._worker.run(functools.partial(self._store.get_ca, sn))
        if record is None:
            raise unknown_ca(sn)
        return record

    async def list(self, page_no: int = 1, page_size: int = 20) -> Page[CaRecord]:
        check_paging(page_no, page_size)
        items, total = await self._worker.run(
            functools.partial(self._store.list_cas, (page_no - 1) * page_size, page_size)
        )
        return Page(tuple(items), page_no, page_size, total)

    async def _set_status(self, sn: str, status: Status) -> CaRecord:
        check_sn(sn, "Sn")
        now = self._clock()

        def work() -> tuple[CaRecord, bool]:
            result = self._store.set_ca_status(sn, status, now)
            if result is None:
                raise unknown_ca(sn)
            return result

        def after_commit(result: tuple[CaRecord, bool]) -> None:
            record, changed = result
            self._index.set_ca_active(sn, record.active)
            if changed:
                self._events.emit(CaStatusChanged(sn, record.active))

        record, _ = await self._worker.commit(work, after_commit)
        return record

    async def activate(self, sn: str) -> CaRecord:
        return await self._set_status(sn, Status.ACTIVE)

    async def inactivate(self, sn: str) -> CaRecord:
        """Deny new connections through the CA; subscribers disconnect its live sessions."""
        return await self._set_status(sn, Status.INACTIVE)

    async def delete(self, sn: str) -> None:
        """Delete the CA and every device certificate it issued."""
        check_sn(sn, "Sn")

        def work() -> None:
            if not self._store.delete_ca(sn):
                raise unknown_ca(sn)

        def after_commit(_: None) -> None:
            self._index.remove_ca(sn)
            self._events.emit(CaDeleted(sn))

        await self._worker.commit(work, after_commit)
        log.info("CA %s deleted with its device certificates", sn)

    async def reload(self, sn: str) -> None:
        """Bring the index's entry of the CA ``sn`` up to date with the store, after another node
        added it or changed its status."""
        stored = await self._worker.run(functools.partial(self._store.get_stored_ca, sn))
        if stored is None:
            self._index.remove_ca(sn)
        elif self._index.ca(sn) is not None:
            self._index.set_ca_active(sn, stored.record.active)
        else:
            self._index.put_ca(
                CaEntry.from_record(stored.record, stored.subject_der, stored.subject_key_identifier)
            )
