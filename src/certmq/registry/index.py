"""The in-memory trust index that the authentication hot path reads (docs/registry.md).

The broker reads it synchronously on the event loop at every CONNECT: which CA issued a
certificate, and whether a device certificate is registered, with which fingerprint and status.
The registry service writes through to it after each commit, on the same loop, and rebuilds it
from the store when it opens; nothing else should modify it.

It must hold millions of devices, so a device costs no object of its own: per CA, a dict from
the serial number's DER content octets (the bytes that the ``Sn`` hex spells) to the 32-byte
SHA-256 fingerprint, and a set of the serials that are inactive (usually few).
:class:`DeviceEntry` values are made on lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certmq.registry.models import Status
from certmq.registry.records import CaRecord


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A registered device certificate as the hot path sees it."""

    fingerprint: bytes  # SHA-256 of the DER, 32 bytes
    active: bool


@dataclass(frozen=True, slots=True)
class CaEntry:
    """A registered CA certificate as the hot path sees it."""

    sn: str
    certificate: x509.Certificate
    active: bool
    subject_der: bytes
    subject_key_identifier: bytes | None
    fingerprint: bytes  # SHA-256 of the DER, 32 bytes

    @classmethod
    def from_record(
        cls, record: CaRecord, subject_der: bytes | None = None, subject_key_identifier: bytes | None = None
    ) -> CaEntry:
        certificate = x509.load_pem_x509_certificate(record.pem.encode())
        if subject_der is None:
            subject_der = certificate.subject.public_bytes()
            subject_key_identifier = subject_key_identifier_of(certificate)
        return cls(
            sn=record.sn,
            certificate=certificate,
            active=record.active,
            subject_der=subject_der,
            subject_key_identifier=subject_key_identifier,
            fingerprint=bytes.fromhex(record.fingerprint),
        )


def subject_key_identifier_of(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def authority_key_identifier_of(certificate: x509.Certificate) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except (x509.ExtensionNotFound, ValueError):
        return None
    return extension.value.key_identifier


NameKey = tuple[frozenset[tuple[str, str | bytes]], ...]


def name_key(name: x509.Name) -> NameKey:
    """A comparison key for distinguished names in the spirit of RFC 5280 7.1: string types,
    letter case and runs of white space do not matter, so a device certificate whose issuer is
    encoded as a UTF8String still finds a CA whose subject is a PrintableString."""
    return tuple(
        frozenset(
            (
                attribute.oid.dotted_string,
                " ".join(attribute.value.split()).casefold()
                if isinstance(attribute.value, str)
                else attribute.value,
            )
            for attribute in rdn
        )
        for rdn in name.rdns
    )


# One sequence for every index in the process, so that no two indexes ever show the same
# generation and a remembered answer of one is never taken for the other's.
_ca_generations = itertools.count(1)


def _serial_key(device_sn: str) -> bytes | None:
    try:
        return bytes.fromhex(device_sn)
    except ValueError:
        return None


class TrustIndex:
    """Registered CAs and devices, in memory. Read it on the event loop thread only."""

    def __init__(self) -> None:
        self._cas: dict[str, CaEntry] = {}
        self._cas_by_subject: dict[NameKey, list[CaEntry]] = {}
        # ca_sn -> serial octets -> fingerprint; ca_sn -> inactive serial octets.
        self._devices: dict[str, dict[bytes, bytes]] = {}
        self._inactive: dict[str, set[bytes]] = {}
        self._device_count = 0
        self._inactive_count = 0
        self._ca_generation = next(_ca_generations)
        # Built again on the first lookup after the CAs change: (generation, fingerprint -> CA).
        self._cas_by_fingerprint: tuple[int, dict[bytes, CaEntry]] = (0, {})

    # --- reads (the hot path) -------------------------------------------------------------------

    def device(self, ca_sn: str, device_sn: str) -> DeviceEntry | None:
        """The registered device certificate with this CA Sn and serial (``Sn``), or None."""
        devices = self._devices.get(ca_sn)
        if devices is None:
            return None
        key = _serial_key(device_sn)
        if key is None:
            return None
        fingerprint = devices.get(key)
        if fingerprint is None:
            return None
        inactive = self._inactive.get(ca_sn)
        return DeviceEntry(fingerprint, not (inactive and key in inactive))

    def ca(self, sn: str) -> CaEntry | None:
        return self._cas.get(sn)

    def cas(self) -> list[CaEntry]:
        """Every registered CA, active or inactive, in registration order."""
        return list(self._cas.values())

    def issuer_of(self, certificate: x509.Certificate) -> CaEntry | None:
        """The registered CA that directly issued ``certificate`` (active or not), or None.

        The issuer name must equal the CA's subject and, when both are present, the certificate's
        authority key identifier must equal the CA's subject key identifier. Of several such CAs
        (a CA re-issued with the same name), the one whose key verifies the signature wins."""
        candidates = self._cas_by_subject.get(name_key(certificate.issuer))
        if not candidates:
            return None
        authority_key_id = authority_key_identifier_of(certificate)
        if authority_key_id is not None:
            candidates = [
                ca
                for ca in candidates
                if ca.subject_key_identifier is None or ca.subject_key_identifier == authority_key_id
            ]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        for ca in candidates:
            try:
                certificate.verify_directly_issued_by(ca.certificate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return candidates[0]

    def ca_by_fingerprint(self, fingerprint: bytes) -> CaEntry | None:
        """The registered CA (active or not) whose certificate has this SHA-256 fingerprint."""
        by_fingerprint = self._cas_by_fingerprint
        if by_fingerprint[0] != self._ca_generation:
            by_fingerprint = self._cas_by_fingerprint = (
                self._ca_generation,
                {ca.fingerprint: ca for ca in self._cas.values()},
            )
        return by_fingerprint[1].get(fingerprint)

    @property
    def ca_generation(self) -> int:
        """A number that changes whenever a CA is added, replaced (a status change) or removed,
        and that no other index shows: while it stays the same, :meth:`issuer_of` gives the same
        answer for the same certificate, so the decision procedure may remember that answer."""
        return self._ca_generation

    @property
    def device_count(self) -> int:
        return self._device_count

    @property
    def inactive_device_count(self) -> int:
        return self._inactive_count

    def device_counts(self, ca_sn: str) -> tuple[int, int]:
        """``(devices, inactive devices)`` registered under the CA ``ca_sn``."""
        return len(self._devices.get(ca_sn, ())), len(self._inactive.get(ca_sn, ()))

    def devices_of(self, ca_sn: str) -> Mapping[bytes, bytes]:
        """The devices registered under the CA ``ca_sn``: serial octets (``bytes.fromhex`` of the
        ``Sn``) to fingerprint. Read it, never change it."""
        return self._devices.get(ca_sn, {})

    def inactive_of(self, ca_sn: str) -> Set[bytes]:
        """The serial octets of the inactive devices registered under the CA ``ca_sn``."""
        return self._inactive.get(ca_sn, frozenset())

    def __len__(self) -> int:
        return self._device_count

    def __repr__(self) -> str:
        return f"TrustIndex({len(self._cas)} CAs, {self._device_count} devices)"

    # --- writes (the registry service, after commit) --------------------------------------------

    def put_ca(self, entry: CaEntry) -> None:
        """Add a CA, or replace the entry of a CA with the same Sn (a status change)."""
        previous = self._cas.get(entry.sn)
        self._cas[entry.sn] = entry
        key = name_key(entry.certificate.subject)
        same_subject = self._cas_by_subject.setdefault(key, [])
        if previous is not None:
            same_subject[:] = [entry if ca.sn == entry.sn else ca for ca in same_subject]
        else:
            same_subject.append(entry)
        self._devices.setdefault(entry.sn, {})
        # After the change, so that an answer found before it is never filed under the new number.
        self._ca_generation = next(_ca_generations)

    def set_ca_active(self, sn: str, active: bool) -> None:
        entry = self._cas.get(sn)
        if entry is not None and entry.active != active:
            self.put_ca(
                CaEntry(
                    entry.sn,
                    entry.certificate,
                    active,
                    entry.subject_der,
                    entry.subject_key_identifier,
                    entry.fingerprint,
                )
            )

    def remove_ca(self, sn: str) -> None:
        """Forget a CA and every device certificate registered under it."""
        entry = self._cas.pop(sn, None)
        if entry is not None:
            key = name_key(entry.certificate.subject)
            remaining = [ca for ca in self._cas_by_subject.get(key, []) if ca.sn != sn]
            if remaining:
                self._cas_by_subject[key] = remaining
            else:
                self._cas_by_subject.pop(key, None)
        self._device_count -= len(self._devices.pop(sn, ()))
        self._inactive_count -= len(self._inactive.pop(sn, ()))
        self._ca_generation = next(_ca_generations)

    def put_device(self, ca_sn: str, device_sn: str, fingerprint: bytes, active: bool) -> None:
        key = bytes.fromhex(device_sn)
        devices = self._devices.setdefault(ca_sn, {})
        if key not in devices:
            self._device_count += 1
        devices[key] = fingerprint
        self._set_inactive(ca_sn, key, not active)

    def set_device_active(self, ca_sn: str, device_sn: str, active: bool) -> None:
        key = _serial_key(device_sn)
        if key is not None and key in self._devices.get(ca_sn, {}):
            self._set_inactive(ca_sn, key, not active)

    def remove_device(self, ca_sn: str, device_sn: str) -> None:
        key = _serial_key(device_sn)
        devices = self._devices.get(ca_sn)
        if key is None or devices is None or devices.pop(key, None) is None:
            return
        self._device_count -= 1
        self._set_inactive(ca_sn, key, False)

    def _set_inactive(self, ca_sn: str, key: bytes, inactive: bool) -> None:
        serials = self._inactive.get(ca_sn)
        if inactive:
            if serials is None:
                serials = self._inactive[ca_sn] = set()
            if key not in serials:
                serials.add(key)
                self._inactive_count += 1
        elif serials is not None and key in serials:
            serials.discard(key)
            self._inactive_count -= 1
            if not serials:
                del self._inactive[ca_sn]

    def load(
        self, cas: Iterable[CaEntry], device_batches: Iterable[Sequence[tuple[str, str, str, str]]]
    ) -> None:
        """Fill an empty index: the CAs, then every device as ``(ca_sn, device_sn, fingerprint
        hex, status)``. Runs off the event loop on an index nobody reads yet; see :meth:`adopt`."""
        for ca in cas:
            self.put_ca(ca)
        devices_of = self._devices
        inactive_status = Status.INACTIVE.value
        fromhex = bytes.fromhex
        current_sn = ""
        current: dict[bytes, bytes] = {}
        count = 0
        for batch in device_batches:
            for ca_sn, device_sn, fingerprint, status in batch:
                if ca_sn != current_sn:
                    current = devices_of.setdefault(ca_sn, {})
                    current_sn = ca_sn
                key = fromhex(device_sn)
                current[key] = fromhex(fingerprint)
                count += 1
                if status == inactive_status:
                    self._set_inactive(ca_sn, key, True)
        self._device_count += count

    def adopt(self, other: TrustIndex) -> None:
        """Take over the contents of ``other`` (built off the loop by :meth:`load`) at once, so
        that readers holding this index see the new contents."""
        self._cas = other._cas
        self._cas_by_subject = other._cas_by_subject
        self._devices = other._devices
        self._inactive = other._inactive
        self._device_count = other._device_count
        self._inactive_count = other._inactive_count
        self._ca_generation = next(_ca_generations)
