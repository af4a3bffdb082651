"""Registering CA certificates: every check in order with its error, root and
intermediate CAs, RSA and EC, CAs made with certmq.pki and with the openssl command line, the CA
limit, one code raced by two registrations, statuses, deletion and paging."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from certmq import pki
from certmq.registry import (
    CaAdded,
    CaDeleted,
    CaNumExceed,
    CaStatusChanged,
    CertificateContentError,
    FindCaBySnError,
    FindDeviceBySnError,
    MqttInstanceNotFound,
    ParameterFieldCheckFailed,
    RegisterCodeError,
    RegisterCodeUsed,
    RegistryError,
    RegistryEvent,
    RegistryService,
    SerialCollision,
    SnNotUnique,
    Status,
    open_registry,
)
from certmq.registry.store import RegistryStore

from .registry_fixtures import (
    INSTANCE_ID,
    Clock,
    clock,
    make_ca,
    make_device,
    openssl_leaf,
    openssl_root_ca,
    openssl_sign,
    pem,
    postgresql_server,
    register,
    registry,
    store,
    verification_by_hand,
)

__all__ = ["clock", "postgresql_server", "registry", "store"]  # fixtures


async def verification_for(registry: RegistryService, ca: pki.CertifiedKey) -> str:
    code = await registry.issue_registration_code()
    return pem(pki.issue_verification_certificate(ca.certificate, ca.key, code.code))


# --- success --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "size"), [("ec", 256), ("ec", 384), ("rsa", 2048), ("rsa", 3072)])
async def test_register_root_ca_made_with_pki(
    registry: RegistryService, kind: pki.KeyKind, size: int
) -> None:
    ca = make_ca(f"{kind} {size} Root", kind, size=size)
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, code.code)

    record = await registry.register_ca("my root", pem(ca.certificate), pem(verification))

    assert record.sn == pki.serial_hex(ca.certificate)
    assert record.name == "my root"
    assert record.status == Status.ACTIVE and record.active
    assert record.subject == f"CN={kind} {size} Root"
    assert record.fingerprint == pki.fingerprint_sha256(ca.certificate)
    assert x509.load_pem_x509_certificate(record.pem.encode()) == ca.certificate
    assert x509.load_pem_x509_certificate(record.verification_pem.encode()) == verification
    assert record.registration_code == code.code
    assert record.valid_begin == ca.certificate.not_valid_before_utc
    assert record.valid_end == ca.certificate.not_valid_after_utc
    assert record.valid_end.tzinfo is datetime.UTC
    assert await registry.get_ca(record.sn) == record
    entry = registry.index.ca(record.sn)
    assert entry is not None and entry.active and entry.certificate == ca.certificate


async def test_registration_code_is_random_and_lasts_24_hours(
    registry: RegistryService, clock: Clock
) -> None:
    before = clock.now
    codes = [await registry.issue_registration_code() for _ in range(20)]
    assert len({code.code for code in codes}) == 20
    assert all(len(code.code) >= 32 for code in codes)
    assert before <= codes[0].created_at <= clock.now
    assert codes[0].expires_at - codes[0].created_at == datetime.timedelta(hours=24)


async def test_name_defaults_to_the_ca_common_name(registry: RegistryService) -> None:
    record = await register(registry, make_ca("Fleet Root"))
    assert record.name == "Fleet Root"


async def test_intermediate_ca_alone_is_enough(registry: RegistryService) -> None:
    root = make_ca("Unregistered Root")
    intermediate = make_ca("Fleet Intermediate", "rsa", issuer=root)
    record = await register(registry, intermediate)
    device = make_device(intermediate)

    issuer = registry.index.issuer_of(device)
    assert issuer is not None and issuer.sn == record.sn
    assert registry.index.issuer_of(intermediate.certificate) is None  # its root is not registered


@pytest.mark.parametrize(
    ("kind", "pss"), [("rsa", False), ("rsa", True), ("ec", False)], ids=["rsa-pkcs1v15", "rsa-pss", "ec"]
)
async def test_register_ca_made_with_openssl(
    registry: RegistryService, tmp_path: Path, kind: str, pss: bool
) -> None:
    ca = openssl_root_ca(tmp_path, "root", kind)
    code = await registry.issue_registration_code()
    verification = openssl_sign(tmp_path, ca, "verification", code.code, pss=pss)

    record = await registry.register_ca("openssl root", ca.pem(), verification.pem())

    certificate = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    assert record.sn == pki.serial_hex(certificate)
    assert record.subject == "CN=root"
    assert registry.index.ca(record.sn) is not None


async def test_register_intermediate_made_with_openssl(registry: RegistryService, tmp_path: Path) -> None:
    root = openssl_root_ca(tmp_path, "root", "rsa")
    intermediate = openssl_sign(tmp_path, root, "intermediate", "OpenSSL Intermediate", ca=True)
    code = await registry.issue_registration_code()
    verification = openssl_sign(tmp_path, intermediate, "verification", code.code)

    record = await registry.register_ca("", intermediate.pem(), verification.pem())

    assert record.name == "OpenSSL Intermediate"
    assert record.subject == "CN=OpenSSL Intermediate"


# --- each check of a registration, in order -------------------------------------------------------


@pytest.mark.parametrize(
    "content", ["", "not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
async def test_ca_content_not_a_pem_certificate(registry: RegistryService, content: str) -> None:
    verification = await verification_for(registry, make_ca())
    expected = ParameterFieldCheckFailed if not content else CertificateContentError
    with pytest.raises(expected):
        await registry.register_ca("x", content, verification)


async def test_verification_content_not_a_pem_certificate(registry: RegistryService) -> None:
    ca = make_ca()
    with pytest.raises(CertificateContentError, match="VerificationContent"):
        await registry.register_ca("x", pem(ca.certificate), "garbage")


async def test_ca_content_with_two_certificates(registry: RegistryService) -> None:
    ca = make_ca()
    verification = await verification_for(registry, ca)
    with pytest.raises(CertificateContentError, match="exactly one"):
        await registry.register_ca("x", pem(ca.certificate, make_ca("Other").certificate), verification)


async def test_not_a_ca(registry: RegistryService) -> None:
    ca = make_ca()
    device = make_device(ca)
    code = await registry.issue_registration_code()
    # Even with a valid proof, a leaf certificate is not a CA.
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, code.code)
    with pytest.raises(CertificateContentError, match="CA:TRUE"):
        await registry.register_ca("x", pem(device), pem(verification))


async def test_not_a_ca_made_with_openssl(registry: RegistryService, tmp_path: Path) -> None:
    leaf = openssl_leaf(tmp_path, "leaf")
    code = await registry.issue_registration_code()
    verification = openssl_sign(tmp_path, leaf, "verification", code.code)
    with pytest.raises(CertificateContentError, match="CA:TRUE"):
        await registry.register_ca("x", leaf.pem(), verification.pem())


async def test_expired_ca(registry: RegistryService, clock: Clock) -> None:
    ca = make_ca(
        "Old Root",
        not_before=clock.now - datetime.timedelta(days=800),
        not_after=clock.now - datetime.timedelta(days=1),
    )
    code = await registry.issue_registration_code()
    verification = verification_by_hand(ca, code.code)
    with pytest.raises(CertificateContentError, match="expired"):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_ca_not_yet_valid(registry: RegistryService, clock: Clock) -> None:
    ca = make_ca("Future Root", not_before=clock.now + datetime.timedelta(days=1))
    with pytest.raises(CertificateContentError, match="not valid before"):
        await registry.register_ca("x", pem(ca.certificate), await verification_for(registry, ca))


async def test_verification_signed_by_another_key(registry: RegistryService) -> None:
    ca = make_ca("Fleet Root")
    impostor = make_ca("Fleet Root")  # same name, another key
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(impostor.certificate, impostor.key, code.code)
    assert verification.issuer == ca.certificate.subject
    with pytest.raises(CertificateContentError, match="signature"):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_verification_signed_by_another_key_with_openssl(
    registry: RegistryService, tmp_path: Path
) -> None:
    ca = openssl_root_ca(tmp_path, "root", "rsa", cn="Same Name")
    impostor = openssl_root_ca(tmp_path, "impostor", "rsa", cn="Same Name")
    code = await registry.issue_registration_code()
    verification = openssl_sign(tmp_path, impostor, "verification", code.code)
    with pytest.raises(CertificateContentError, match="signature"):
        await registry.register_ca("x", ca.pem(), verification.pem())


async def test_verification_issuer_is_not_the_ca_subject(registry: RegistryService) -> None:
    ca = make_ca("Fleet Root")
    other = make_ca("Other Root")
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(other.certificate, other.key, code.code)
    with pytest.raises(CertificateContentError, match="issuer"):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_verification_with_the_ca_key_but_another_issuer_name(registry: RegistryService) -> None:
    ca = make_ca("Fleet Root")
    renamed = pki.CertifiedKey(pki.create_ca("Renamed Root", ca.key), ca.key)
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(renamed.certificate, renamed.key, code.code)
    with pytest.raises(CertificateContentError, match="issuer"):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_code_not_issued_by_this_instance(registry: RegistryService, tmp_path: Path) -> None:
    ca = make_ca()
    verification = pki.issue_verification_certificate(
        ca.certificate, ca.key, "0123456789abcdef0123456789abcdef"
    )
    with pytest.raises(RegisterCodeError, match="GetRegisterCode"):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))

    other_store = open_registry("", tmp_path / "other")
    other = RegistryService(other_store, instance_id="mqtt-other")
    await other.open()
    try:
        foreign_code = await other.issue_registration_code()
    finally:
        await other.close()
        other_store.close()
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, foreign_code.code)
    with pytest.raises(RegisterCodeError):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_verification_without_common_name(registry: RegistryService) -> None:
    ca = make_ca()
    key = pki.generate_key("ec")
    now = datetime.datetime.now(datetime.UTC)
    verification = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "No CN")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(RegisterCodeError, match="no Subject CN"):
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_expired_code(registry: RegistryService, clock: Clock) -> None:
    ca = make_ca()
    verification = await verification_for(registry, ca)
    clock.advance(hours=24, seconds=1)
    with pytest.raises(RegisterCodeError, match="expired"):
        await registry.register_ca("x", pem(ca.certificate), verification)


async def test_code_just_before_expiry_works(registry: RegistryService, clock: Clock) -> None:
    ca = make_ca()
    verification = await verification_for(registry, ca)
    clock.advance(hours=23, minutes=59)
    assert (await registry.register_ca("x", pem(ca.certificate), verification)).active


async def test_reused_code(registry: RegistryService) -> None:
    first, second = make_ca("First"), make_ca("Second")
    code = await registry.issue_registration_code()
    await registry.register_ca(
        "first",
        pem(first.certificate),
        pem(pki.issue_verification_certificate(first.certificate, first.key, code.code)),
    )
    verification = pki.issue_verification_certificate(second.certificate, second.key, code.code)
    with pytest.raises(RegisterCodeUsed):
        await registry.register_ca("second", pem(second.certificate), pem(verification))


async def test_used_code_reports_used_even_after_expiry(registry: RegistryService, clock: Clock) -> None:
    first, second = make_ca("First"), make_ca("Second")
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(first.certificate, first.key, code.code)
    await registry.register_ca("first", pem(first.certificate), pem(verification))
    clock.advance(days=2)
    verification = pki.issue_verification_certificate(second.certificate, second.key, code.code)
    with pytest.raises(RegisterCodeUsed):
        await registry.register_ca("second", pem(second.certificate), pem(verification))


async def test_duplicate_serial_number(registry: RegistryService) -> None:
    first = make_ca("First", serial=0x1234)
    second = make_ca("Second", serial=0x1234)
    await register(registry, first)
    verification = await verification_for(registry, second)
    with pytest.raises(SnNotUnique, match="serial number"):
        await registry.register_ca("x", pem(second.certificate), verification)


async def test_duplicate_fingerprint(registry: RegistryService) -> None:
    ca = make_ca()
    await register(registry, ca)
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, code.code)
    with pytest.raises(SnNotUnique, match="same certificate"):
        await registry.register_ca("again", pem(ca.certificate), pem(verification))
    # A failed registration leaves its code unused.
    other = make_ca("Other")
    verification = pki.issue_verification_certificate(other.certificate, other.key, code.code)
    assert (await registry.register_ca("other", pem(other.certificate), pem(verification))).active


async def test_ca_limit(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, ca_limit=2, clock=clock)
    await registry.open()
    try:
        await register(registry, make_ca("One"))
        await register(registry, make_ca("Two"))
        third = make_ca("Three")
        code = await registry.issue_registration_code()
        verification = pki.issue_verification_certificate(third.certificate, third.key, code.code)
        with pytest.raises(CaNumExceed):
            await registry.register_ca("three", pem(third.certificate), pem(verification))
        # Deleting one makes room, and the code was not consumed by the refusal.
        await registry.delete_ca((await registry.list_cas(1, 10)).items[0].sn)
        assert (await registry.register_ca("three", pem(third.certificate), pem(verification))).active
    finally:
        await registry.close()


# The checks run in the order of docs/api.md, "Errors": an earlier failure wins over every later one.


async def test_order_certificate_checks_before_the_code(registry: RegistryService) -> None:
    ca = make_ca()
    device = make_device(ca)
    wrong_code = pki.issue_verification_certificate(ca.certificate, ca.key, "not-a-code")
    with pytest.raises(CertificateContentError):
        await registry.register_ca("x", pem(device), pem(wrong_code))  # not a CA, and a wrong code
    other = make_ca("Other")
    with pytest.raises(CertificateContentError):  # foreign signature, and a wrong code
        await registry.register_ca(
            "x",
            pem(ca.certificate),
            pem(pki.issue_verification_certificate(other.certificate, other.key, "nope")),
        )


async def test_order_is_a_ca_before_the_proof(registry: RegistryService, clock: Clock) -> None:
    expired = make_ca(
        "Old",
        not_before=clock.now - datetime.timedelta(days=10),
        not_after=clock.now - datetime.timedelta(days=1),
    )
    other = make_ca("Other")
    verification = pki.issue_verification_certificate(other.certificate, other.key, "x")
    with pytest.raises(CertificateContentError, match="expired"):
        await registry.register_ca("x", pem(expired.certificate), pem(verification))


async def test_order_code_used_before_duplicate(registry: RegistryService) -> None:
    ca = make_ca()
    record = await register(registry, ca)
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, record.registration_code)
    with pytest.raises(RegisterCodeUsed):  # a duplicate CA with a used code
        await registry.register_ca("x", pem(ca.certificate), pem(verification))


async def test_order_duplicate_before_the_limit(store: RegistryStore, clock: Clock) -> None:
    registry = RegistryService(store, instance_id=INSTANCE_ID, ca_limit=1, clock=clock)
    await registry.open()
    try:
        ca = make_ca()
        await register(registry, ca)
        with pytest.raises(SnNotUnique):  # a duplicate at the limit
            await registry.register_ca("x", pem(ca.certificate), await verification_for(registry, ca))
    finally:
        await registry.close()


# --- one code, two registrations at once -------------------------------------------------------


async def test_concurrent_registrations_with_one_code(registry: RegistryService) -> None:
    cas = [make_ca(f"Racer {n}") for n in range(5)]
    code = await registry.issue_registration_code()
    attempts = [
        registry.register_ca(
            f"racer {n}",
            pem(ca.certificate),
            pem(pki.issue_verification_certificate(ca.certificate, ca.key, code.code)),
        )
        for n, ca in enumerate(cas)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [result for result in results if not isinstance(result, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(result, RegisterCodeUsed) for result in results if result not in winners)
    assert (await registry.list_cas(1, 10)).total == 1


async def test_concurrent_registrations_with_one_code_from_two_services(tmp_path: Path) -> None:
    """Two services on one SQLite file, each with its own worker thread, as two processes would
    be: the database decides, and exactly one registration consumes the code."""
    stores = [open_registry("", tmp_path) for _ in range(2)]
    services = [RegistryService(store, instance_id=INSTANCE_ID) for store in stores]
    for service in services:
        await service.open()
    try:
        for _round in range(5):
            code = await services[0].issue_registration_code()
            cas = [make_ca(f"Racer {n}") for n in range(2)]
            results = await asyncio.gather(
                *(
                    service.register_ca(
                        "racer",
                        pem(ca.certificate),
                        pem(pki.issue_verification_certificate(ca.certificate, ca.key, code.code)),
                    )
                    for service, ca in zip(services, cas, strict=True)
                ),
                return_exceptions=True,
            )
            assert sum(not isinstance(result, BaseException) for result in results) == 1, results
            assert sum(isinstance(result, RegisterCodeUsed) for result in results) == 1, results
    finally:
        for service in services:
            await service.close()
        for store in stores:
            store.close()


# --- statuses, deletion, listing -----------------------------------------------------------------


async def test_inactivate_and_activate(registry: RegistryService) -> None:
    events: list[RegistryEvent] = []
    registry.events.subscribe(events.append)
    record = await register(registry, make_ca())

    inactive = await registry.inactivate_ca(record.sn)
    assert inactive.status == Status.INACTIVE and not inactive.active
    assert inactive.updated_at >= record.updated_at
    assert (await registry.get_ca(record.sn)).status == Status.INACTIVE
    entry = registry.index.ca(record.sn)
    assert entry is not None and not entry.active
    await registry.inactivate_ca(record.sn)  # no change: no event

    active = await registry.activate_ca(record.sn)
    assert active.active
    entry = registry.index.ca(record.sn)
    assert entry is not None and entry.active
    assert events == [CaAdded(record.sn), CaStatusChanged(record.sn, False), CaStatusChanged(record.sn, True)]


async def test_unknown_ca(registry: RegistryService) -> None:
    for operation in (registry.get_ca, registry.activate_ca, registry.inactivate_ca, registry.delete_ca):
        with pytest.raises(FindCaBySnError, match=r"^no CA certificate is registered with Sn '00ff';"):
            await operation("00ff")
        with pytest.raises(ParameterFieldCheckFailed, match=r"^Sn is required$"):
            await operation("")


async def test_delete_ca_removes_its_devices(registry: RegistryService, store: RegistryStore) -> None:
    events: list[RegistryEvent] = []
    ca, other = make_ca("Doomed"), make_ca("Kept")
    record, kept = await register(registry, ca), await register(registry, other)
    devices = [await registry.register_device(record.sn, make_device(ca, f"d{n}")) for n in range(3)]
    survivor = await registry.register_device(kept.sn, make_device(other, "survivor"))
    registry.events.subscribe(events.append)

    await registry.delete_ca(record.sn)

    assert events == [CaDeleted(record.sn)]
    with pytest.raises(FindCaBySnError):
        await registry.get_ca(record.sn)
    with pytest.raises(FindCaBySnError):
        await registry.get_device(record.sn, devices[0].device_sn)
    with store.engine.connect() as connection:
        left = connection.exec_driver_sql("SELECT ca_sn FROM device_certificate").scalars().all()
    assert left == [kept.sn]
    assert registry.index.ca(record.sn) is None
    assert registry.index.device(record.sn, devices[0].device_sn) is None
    assert registry.index.device_count == 1
    assert (await registry.list_devices(1, 10)).items == (survivor,)


async def test_list_cas_paging(registry: RegistryService) -> None:
    records = [await register(registry, make_ca(f"CA {n}")) for n in range(5)]
    pages = [await registry.list_cas(page_no, 2) for page_no in (1, 2, 3, 4)]
    assert [page.total for page in pages] == [5, 5, 5, 5]
    assert [len(page.items) for page in pages] == [2, 2, 1, 0]
    assert [item for page in pages for item in page.items] == records  # registration order
    assert (pages[0].page_no, pages[0].page_size) == (1, 2)


@pytest.mark.parametrize(
    ("page_no", "page_size"), [(0, 10), (-1, 10), (1, 0), (1, 101), (True, 10), ("1", 10)]
)
async def test_paging_is_validated(registry: RegistryService, page_no: object, page_size: object) -> None:
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.list_cas(page_no, page_size)  # type: ignore[arg-type]
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.list_devices(page_no, page_size)  # type: ignore[arg-type]


async def test_ca_name_is_validated(registry: RegistryService) -> None:
    ca = make_ca()
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.register_ca("n" * 129, pem(ca.certificate), await verification_for(registry, ca))
    with pytest.raises(ParameterFieldCheckFailed):
        await registry.register_ca("x", pem(ca.certificate), "")


async def test_instance_id(registry: RegistryService) -> None:
    registry.check_instance_id(INSTANCE_ID)
    with pytest.raises(MqttInstanceNotFound, match=INSTANCE_ID):
        registry.check_instance_id("mqtt-elsewhere")


def test_error_codes_and_statuses() -> None:
    expected = {
        ParameterFieldCheckFailed: ("ParameterFieldCheckFailed", 400),
        MqttInstanceNotFound: ("MqttInstanceNotFound", 400),
        RegisterCodeError: ("RegisterCodeError", 400),
        RegisterCodeUsed: ("RegisterCodeUsed", 401),
        CaNumExceed: ("CaNumExceed", 401),
        CertificateContentError: ("CertificateContentError", 401),
        SnNotUnique: ("SnNotUnique", 401),
        FindCaBySnError: ("FindCaBySnError", 400),
        FindDeviceBySnError: ("FindDeviceBySnError", 400),
    }
    for error, (code, status) in expected.items():
        assert issubclass(error, RegistryError)
        assert (error.code, error.http_status) == (code, status)
    assert issubclass(SerialCollision, RegistryError)


def self_signed_ca(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )


@pytest.mark.parametrize("kind", ["rsa-1024", "ed25519"])
async def test_unsupported_ca_keys(registry: RegistryService, kind: str) -> None:
    """CAs are RSA (at least 2048 bits) or ECDSA (P-256, P-384)."""
    key = (
        rsa.generate_private_key(65537, 1024) if kind == "rsa-1024" else ed25519.Ed25519PrivateKey.generate()
    )
    ca = self_signed_ca(key, f"{kind} Root")
    code = await registry.issue_registration_code()
    verification = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code.code)]))
        .issuer_name(ca.subject)
        .public_key(pki.generate_key("ec").public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1))
        .not_valid_after(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1))
        .sign(key, None if kind == "ed25519" else hashes.SHA256())
    )
    with pytest.raises(CertificateContentError, match="unsupported key"):
        await registry.register_ca("x", pem(ca), pem(verification))
