"""The in-memory trust index: finding the issuing CA (name, key identifiers, signature), device
lookups, its counters, and loading a large registry quickly and compactly."""

from __future__ import annotations

import datetime
import gc
import tracemalloc

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from certmq import pki
from certmq.registry import RegistryService, TrustIndex
from certmq.registry.index import CaEntry, name_key
from certmq.registry.models import DeviceCertificateRow
from certmq.registry.store import RegistryStore

from .registry_fixtures import (
    INSTANCE_ID,
    clock,
    make_ca,
    make_device,
    postgresql_server,
    register,
    registry,
    store,
    synthetic_devices,
)

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures

SCALE_DEVICES = 100_000  # bench/registry_scale.py measures a million


def handmade_certificate(
    issuer: pki.CertifiedKey,
    issuer_name: x509.Name | None = None,
    *,
    authority_key_identifier: bytes | None = None,
    ca: bool = False,
    cn: str = "handmade",
) -> x509.Certificate:
    """A certificate built without certmq.pki's conventions: chosen issuer name encoding, with or
    without an authority key identifier, with or without a subject key identifier."""
    key = pki.generate_key("ec")
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_name or issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if authority_key_identifier is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(authority_key_identifier, None, None), critical=False
        )
    return builder.sign(issuer.key, hashes.SHA256())


async def test_issuer_by_name_and_key_identifier(registry: RegistryService) -> None:
    first, second = make_ca("Twin Root"), make_ca("Twin Root")  # same name, two keys
    first_record, second_record = await register(registry, first), await register(registry, second)
    assert registry.index.issuer_of(make_device(first)).sn == first_record.sn  # type: ignore[union-attr]
    assert registry.index.issuer_of(make_device(second)).sn == second_record.sn  # type: ignore[union-attr]


async def test_issuer_without_key_identifier_is_the_one_whose_key_verifies(registry: RegistryService) -> None:
    first, second = make_ca("Twin Root"), make_ca("Twin Root")
    await register(registry, first)
    second_record = await register(registry, second)
    device = handmade_certificate(second)  # no authority key identifier
    issuer = registry.index.issuer_of(device)
    assert issuer is not None and issuer.sn == second_record.sn


async def test_unregistered_issuer_with_a_registered_name(registry: RegistryService) -> None:
    await register(registry, make_ca("Fleet Root"))
    stranger = make_ca("Fleet Root")  # same name, unregistered key
    assert registry.index.issuer_of(make_device(stranger)) is None
    assert registry.index.issuer_of(make_device(make_ca("Unknown Root"))) is None


async def test_issuer_name_comparison_ignores_string_type_and_case(registry: RegistryService) -> None:
    ca = make_ca("Fleet Root")  # PrintableString or UTF8String, as cryptography chooses
    record = await register(registry, ca)
    utf8_lower = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "fleet  ROOT", x509.name._ASN1Type.PrintableString)]
    )
    device = handmade_certificate(ca, utf8_lower)
    issuer = registry.index.issuer_of(device)
    assert issuer is not None and issuer.sn == record.sn
    assert name_key(utf8_lower) == name_key(ca.certificate.subject)


async def test_ca_without_subject_key_identifier(registry: RegistryService) -> None:
    root = make_ca("Root")
    key = pki.generate_key("ec")
    now = datetime.datetime.now(datetime.UTC)
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bare CA")]))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    bare_ca = pki.CertifiedKey(bare, key)
    record = await register(registry, bare_ca)
    entry = registry.index.ca(record.sn)
    assert entry is not None and entry.subject_key_identifier is None
    device = handmade_certificate(bare_ca, authority_key_identifier=b"\x01" * 20)
    assert registry.index.issuer_of(device) == entry


async def test_inactive_ca_is_still_found(registry: RegistryService) -> None:
    ca = make_ca()
    record = await register(registry, ca)
    await registry.inactivate_ca(record.sn)
    issuer = registry.index.issuer_of(make_device(ca))
    assert issuer is not None and not issuer.active
    assert [entry.sn for entry in registry.index.cas()] == [record.sn]


async def test_device_lookup_of_odd_serials(registry: RegistryService) -> None:
    ca = make_ca()
    record = await register(registry, ca)
    for device_sn in ("", "0", "xyz", "not hex"):
        assert registry.index.device(record.sn, device_sn) is None
    assert registry.index.device("unknown-ca", "00") is None


def test_counters() -> None:
    index = TrustIndex()
    ca = make_ca()
    entry = CaEntry(
        sn="0a",
        certificate=ca.certificate,
        active=True,
        subject_der=ca.certificate.subject.public_bytes(),
        subject_key_identifier=None,
        fingerprint=b"\x00" * 32,
    )
    index.put_ca(entry)
    index.put_device("0a", "01", b"\x01" * 32, True)
    index.put_device("0a", "02", b"\x02" * 32, False)
    index.put_device("0a", "02", b"\x02" * 32, False)  # again: no double count
    assert (index.device_count, index.inactive_device_count) == (2, 1)
    assert index.device_counts("0a") == (2, 1)
    index.set_device_active("0a", "02", True)
    assert index.inactive_device_count == 0
    index.set_device_active("0a", "01", False)
    index.remove_device("0a", "01")
    assert (index.device_count, index.inactive_device_count) == (1, 0)
    index.set_ca_active("0a", False)
    assert index.ca("0a") is not None and not index.ca("0a").active  # type: ignore[union-attr]
    index.remove_ca("0a")
    assert (index.device_count, index.inactive_device_count, index.cas()) == (0, 0, [])
    assert index.issuer_of(make_device(ca)) is None


def test_status_changes_touch_only_what_they_name() -> None:
    index = TrustIndex()
    same_name = [make_ca("Plant CA"), make_ca("Plant CA")]
    entries = [
        CaEntry(
            sn=sn,
            certificate=ca.certificate,
            active=True,
            subject_der=ca.certificate.subject.public_bytes(),
            subject_key_identifier=None,
            fingerprint=bytes([number]) * 32,
        )
        for number, (sn, ca) in enumerate(zip(("0a", "0b"), same_name, strict=True))
    ]
    for entry in entries:
        index.put_ca(entry)
    devices = [make_device(ca) for ca in same_name]
    # A device of a CA the index has not seen yet (its CA's change is still on its way).
    index.put_device("0c", "01", b"\x03" * 32, True)
    assert index.device("0c", "01") is not None
    # Two inactive devices; one made active again: the other stays inactive.
    for device_sn in ("01", "02", "03"):
        index.put_device("0a", device_sn, bytes.fromhex(device_sn) * 32, device_sn == "03")
    index.set_device_active("0a", "01", True)
    assert [index.device("0a", sn).active for sn in ("01", "02", "03")] == [True, False, True]  # type: ignore[union-attr]
    # Unknown devices and CAs: nothing changes, nothing fails.
    index.set_device_active("0a", "ff", False)
    index.set_device_active("ff", "01", False)
    index.remove_device("0a", "ff")
    index.remove_device("ff", "01")
    index.remove_ca("ff")
    assert (index.device_count, index.inactive_device_count) == (4, 1)
    # A CA's status change leaves its namesake as it was, and keeps its fingerprint.
    index.set_ca_active("0a", False)
    assert [ca.active for ca in index.cas()] == [False, True]
    assert [index.issuer_of(device).sn for device in devices] == ["0a", "0b"]  # type: ignore[union-attr]
    assert index.ca_by_fingerprint(bytes([0]) * 32) is index.ca("0a")
    # Removing a CA forgets its devices, inactive ones too, and not its namesake.
    index.remove_ca("0a")
    assert (index.device_count, index.inactive_device_count) == (1, 0)
    assert index.issuer_of(devices[1]) is index.ca("0b") and index.issuer_of(devices[0]) is index.ca("0b")


async def test_a_large_registry_loads_whole_and_compact(
    registry: RegistryService, store: RegistryStore
) -> None:
    # How long the load takes is measured by bench/registry_scale.py, not asserted here.
    # PostgreSQL runs the same code on a fifth of the rows: its cost is the server's, not ours.
    scale = SCALE_DEVICES if store.dialect == "sqlite" else SCALE_DEVICES // 5
    ca = make_ca()
    record = await register(registry, ca)
    store.import_devices(synthetic_devices(record.sn, scale), datetime.datetime.now(datetime.UTC))
    with store.engine.begin() as connection:
        connection.execute(
            update(DeviceCertificateRow).where(DeviceCertificateRow.name.like("%7")).values(status="inactive")
        )

    reopened = RegistryService(store, instance_id=INSTANCE_ID)
    await reopened.open()
    try:
        index = reopened.index
        assert (index.device_count, index.inactive_device_count) == (scale, scale // 10)
        sample = next(synthetic_devices(record.sn, 1, start=12_345))
        entry = index.device(record.sn, sample.device_sn)
        assert entry is not None and entry.fingerprint.hex() == sample.fingerprint and entry.active
        inactive = next(synthetic_devices(record.sn, 1, start=7))
        assert not index.device(record.sn, inactive.device_sn).active  # type: ignore[union-attr]

        page = await reopened.list_devices(scale // 100, 100, ca_sn=record.sn)
        assert page.total == scale and len(page.items) == 100
        assert (await reopened.list_devices(1, 100, status="inactive")).total == scale // 10
    finally:
        await reopened.close()

    # Memory: measured apart, since tracing every allocation slows the load down.
    measured = RegistryService(store, instance_id=INSTANCE_ID)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        await measured.open()
        gc.collect()
        per_device = (tracemalloc.get_traced_memory()[0] - baseline) / scale
    finally:
        tracemalloc.stop()
        await measured.close()
    assert per_device < 250, f"the index holds {per_device:.0f} bytes per device"
