"""The decision procedure remembers what a certificate's bytes say, never what the registry or the
clock says: every registry change and the passing of time are seen at the next decision."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmq import pki
from certmq.auth import decision
from certmq.auth.decision import DeviceDecision, PresentedCertificateCache, decide_device
from certmq.registry.index import CaEntry, DeviceEntry, TrustIndex, subject_key_identifier_of


def ca_entry(ca: pki.CertifiedKey, active: bool = True) -> CaEntry:
    certificate = ca.certificate
    return CaEntry(
        sn=pki.serial_hex(certificate),
        certificate=certificate,
        active=active,
        subject_der=certificate.subject.public_bytes(),
        subject_key_identifier=subject_key_identifier_of(certificate),
        fingerprint=bytes.fromhex(pki.fingerprint_sha256(certificate)),
    )


def make_ca(name: str = "cache CA") -> pki.CertifiedKey:
    key = pki.generate_key("ec")
    return pki.CertifiedKey(pki.create_ca(name, key), key)


def device_der(ca: pki.CertifiedKey, name: str) -> bytes:
    certificate = pki.issue_device_certificate(
        ca.certificate, ca.key, name, pki.generate_key("ec").public_key()
    )
    return certificate.public_bytes(Encoding.DER)


def register(index: TrustIndex, der: bytes) -> DeviceDecision:
    """Decide (so the certificate is remembered), then register the device as step 6 would."""
    first = decide_device(der, index)
    assert (first.allowed, first.reason) == (True, "new-device")
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(der).digest(), True)
    allowed = decide_device(der, index)
    assert (allowed.allowed, allowed.step, allowed.reason) == (True, 6, "registered-device")
    return allowed


def outcome(result: DeviceDecision) -> tuple[bool, int, str]:
    return result.allowed, result.step, result.reason


@pytest.fixture
def fleet() -> tuple[TrustIndex, pki.CertifiedKey]:
    ca = make_ca()
    index = TrustIndex()
    index.put_ca(ca_entry(ca))
    return index, ca


def test_the_same_bytes_are_parsed_once(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    der = device_der(ca, "parsed-once")
    first, again = decide_device(der, index), decide_device(bytes(bytearray(der)), index)
    assert again.certificate is first.certificate
    assert again == first


def test_a_device_inactivated_after_an_allow_is_refused(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    der = device_der(ca, "inactivated")
    allowed = register(index, der)
    index.set_device_active(allowed.ca_sn, allowed.device_sn, False)
    refused = decide_device(der, index)
    assert outcome(refused) == (False, 2, "device-inactive")
    index.set_device_active(allowed.ca_sn, allowed.device_sn, True)
    assert outcome(decide_device(der, index)) == (True, 6, "registered-device")


def test_a_device_deleted_after_an_allow_is_new_again(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    der = device_der(ca, "deleted")
    allowed = register(index, der)
    index.remove_device(allowed.ca_sn, allowed.device_sn)
    again = decide_device(der, index)
    assert (outcome(again), again.needs_registration) == ((True, 6, "new-device"), True)


def test_another_certificate_registered_with_the_serial_is_a_collision(
    fleet: tuple[TrustIndex, pki.CertifiedKey],
) -> None:
    index, ca = fleet
    der = device_der(ca, "collided")
    allowed = register(index, der)
    index.put_device(allowed.ca_sn, allowed.device_sn, hashlib.sha256(b"other bytes").digest(), True)
    assert outcome(decide_device(der, index)) == (False, 2, "serial-collision")


def test_a_ca_inactivated_after_an_allow_refuses_its_devices(
    fleet: tuple[TrustIndex, pki.CertifiedKey],
) -> None:
    index, ca = fleet
    registered, new = device_der(ca, "registered"), device_der(ca, "new")
    register(index, registered)
    assert outcome(decide_device(new, index)) == (True, 6, "new-device")
    ca_sn = pki.serial_hex(ca.certificate)
    index.set_ca_active(ca_sn, False)
    refused = decide_device(registered, index)
    assert (outcome(refused), refused.detail) == ((False, 5, "ca-inactive"), f"CA {ca_sn} is inactive")
    assert outcome(decide_device(new, index)) == (False, 4, "ca-inactive")
    index.set_ca_active(ca_sn, True)
    assert outcome(decide_device(registered, index)) == (True, 6, "registered-device")
    assert outcome(decide_device(new, index)) == (True, 6, "new-device")


def test_a_ca_deleted_and_registered_again_after_an_allow(
    fleet: tuple[TrustIndex, pki.CertifiedKey],
) -> None:
    index, ca = fleet
    der = device_der(ca, "orphan")
    register(index, der)
    ca_sn = pki.serial_hex(ca.certificate)
    index.remove_ca(ca_sn)
    refused = decide_device(der, index)
    assert (outcome(refused), refused.ca_sn) == ((False, 3, "ca-not-registered"), "")
    index.put_ca(ca_entry(ca))
    # Deleting the CA deleted its devices: the certificate is new again.
    again = decide_device(der, index)
    assert (outcome(again), again.ca_sn) == ((True, 6, "new-device"), ca_sn)


def test_a_ca_replaced_by_another_with_the_same_name(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    der = device_der(ca, "of the first key")
    register(index, der)
    successor = make_ca(pki.common_name(ca.certificate))
    index.remove_ca(pki.serial_hex(ca.certificate))
    index.put_ca(ca_entry(successor))
    assert outcome(decide_device(der, index)) == (False, 3, "ca-not-registered")
    theirs = decide_device(device_der(successor, "of the second key"), index)
    assert (outcome(theirs), theirs.ca_sn) == ((True, 6, "new-device"), pki.serial_hex(successor.certificate))


def test_a_certificate_that_expires_between_two_decisions(
    fleet: tuple[TrustIndex, pki.CertifiedKey],
) -> None:
    index, ca = fleet
    registered, new = device_der(ca, "registered"), device_der(ca, "new")
    register(index, registered)
    decide_device(new, index)
    not_after = x509.load_der_x509_certificate(registered).not_valid_after_utc
    not_before = x509.load_der_x509_certificate(registered).not_valid_before_utc
    later, earlier = not_after + datetime.timedelta(seconds=1), not_before - datetime.timedelta(seconds=1)
    expired = decide_device(registered, index, now=later)
    assert (outcome(expired), expired.detail) == (
        (False, 5, "certificate-expired"),
        f"expired on {not_after.isoformat()}",
    )
    assert outcome(decide_device(registered, index, now=earlier)) == (False, 5, "certificate-not-yet-valid")
    assert outcome(decide_device(new, index, now=later + datetime.timedelta(days=1))) == (
        False,
        5,
        "certificate-expired",
    )
    assert outcome(decide_device(registered, index, now=not_after)) == (True, 6, "registered-device")


def test_each_index_answers_for_itself(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    der = device_der(ca, "two indexes")
    register(index, der)
    assert outcome(decide_device(der, TrustIndex())) == (False, 3, "ca-not-registered")
    assert outcome(decide_device(der, index)) == (True, 6, "registered-device")
    rebuilt = TrustIndex()
    rebuilt.put_ca(ca_entry(ca, active=False))
    index.adopt(rebuilt)
    assert outcome(decide_device(der, index)) == (False, 4, "ca-inactive")


def test_an_index_without_a_ca_generation_is_asked_every_time() -> None:
    ca = make_ca()
    entry = ca_entry(ca)
    der = device_der(ca, "plain index")

    class PlainIndex:
        def __init__(self) -> None:
            self.issuer: CaEntry | None = entry
            self.lookups = 0

        def issuer_of(self, certificate: x509.Certificate) -> CaEntry | None:
            self.lookups += 1
            return self.issuer

        def device(self, ca_sn: str, device_sn: str) -> DeviceEntry | None:
            return None

    index = PlainIndex()
    assert outcome(decide_device(der, index)) == (True, 6, "new-device")
    index.issuer = None
    assert outcome(decide_device(der, index)) == (False, 3, "ca-not-registered")
    assert index.lookups == 2


def test_the_ca_generation_changes_with_the_cas_only(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    ca_sn = pki.serial_hex(ca.certificate)
    seen = [index.ca_generation, TrustIndex().ca_generation]

    def changed() -> bool:
        generation = index.ca_generation
        new = generation not in seen
        seen.append(generation)
        return new

    index.put_device(ca_sn, "01", b"\0" * 32, True)
    index.set_device_active(ca_sn, "01", False)
    assert not changed()
    index.set_ca_active(ca_sn, True)  # no change
    assert not changed()
    index.set_ca_active(ca_sn, False)
    assert changed()
    index.put_ca(ca_entry(make_ca("another CA")))
    assert changed()
    index.remove_ca(ca_sn)
    assert changed()
    index.adopt(TrustIndex())
    assert changed()


def test_the_trace_is_written_when_asked(fleet: tuple[TrustIndex, pki.CertifiedKey]) -> None:
    index, ca = fleet
    der = device_der(ca, "traced")
    ca_sn = pki.serial_hex(ca.certificate)
    new = decide_device(der, index)
    assert [step.number for step in new.trace] == [1, 2, 3, 4, 5, 6]
    assert new.trace[0].text.startswith("device certificate CN='traced' Sn=")
    assert new.trace[2].text == f"issued by registered CA {ca_sn}"
    assert new.trace[-1].text == "allow: new device: registered on this connection"
    registered = register(index, der)
    assert [step.number for step in registered.trace] == [1, 2, 5, 6]
    index.set_ca_active(ca_sn, False)
    refused = decide_device(der, index)
    assert [step.text for step in refused.trace][1:] == [
        "registered and active: go to step 5",
        f"deny (ca-inactive): CA {ca_sn} is inactive",
    ]
    assert (
        decide_device(None, index).trace[0].text
        == "deny (no-client-certificate): the client presented no certificate"
    )


def test_the_cache_forgets_the_oldest_beyond_its_capacity() -> None:
    ca = make_ca()
    ders = [device_der(ca, f"device-{number}") for number in range(5)]
    cache = PresentedCertificateCache(capacity=3)
    first = cache.get(ders[0])
    for der in ders:
        cache.get(der)
    assert len(cache) == 3
    assert [der in cache for der in ders] == [False, False, True, True, True]
    assert cache.get(ders[0]) is not first
    assert len(cache) == 3 and ders[2] not in cache


def test_unreadable_bytes_are_not_remembered() -> None:
    before = len(decision.presented_certificates)
    refused = decide_device(b"\x30\x03not a certificate", TrustIndex())
    assert outcome(refused) == (False, 1, "unreadable-certificate")
    assert b"\x30\x03not a certificate" not in decision.presented_certificates
    assert len(decision.presented_certificates) <= max(before, decision.PRESENTED_CERTIFICATES_REMEMBERED)
    assert decision.presented_certificates.capacity == decision.PRESENTED_CERTIFICATES_REMEMBERED
