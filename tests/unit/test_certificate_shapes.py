"""Step 1 of the decision procedure: certificates that no registry entry can make a device's
(too large, a CA's, unknown critical extensions, unreadable extensions); step 5's checks of key
strength and of the CA's own validity; and how a refused handshake is described in the same terms."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from certmq import pki
from certmq.auth.decision import (
    MAX_DEVICE_CERTIFICATE_SIZE,
    DeviceDecision,
    decide_device,
    presented_certificates,
)
from certmq.auth.explain import explain_certificate
from certmq.auth.handshake_refusal import decision_for_handshake_failure
from certmq.registry.index import TrustIndex

from .test_decision_cache import ca_entry

NOW = datetime.datetime.now(datetime.UTC)
UNKNOWN = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")


def usage(*, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(True, False, False, False, False, key_cert_sign, False, False, False)


def make_ca(*, not_after: datetime.datetime | None = None) -> pki.CertifiedKey:
    key = pki.generate_key("ec")
    return pki.CertifiedKey(pki.create_ca("shapes CA", key, not_after=not_after), key)


def index_of(ca: pki.CertifiedKey) -> TrustIndex:
    index = TrustIndex()
    index.put_ca(ca_entry(ca))
    return index


def device(
    ca: pki.CertifiedKey,
    *extensions: tuple[x509.ExtensionType, bool],
    ca_flag: bool = False,
    key_usage: x509.KeyUsage | None = None,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shape")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(key_usage or usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(Encoding.DER)  # type: ignore[arg-type]


def outcome(decision: DeviceDecision) -> tuple[bool, int, str]:
    return decision.allowed, decision.step, decision.reason


def test_an_ordinary_device_certificate_is_allowed_until_its_not_after() -> None:
    ca = make_ca()
    der = device(ca, not_after=NOW + datetime.timedelta(days=3))
    decision = decide_device(der, index_of(ca))
    assert outcome(decision) == (True, 6, "new-device")
    assert decision.valid_until == x509.load_der_x509_certificate(der).not_valid_after_utc


@pytest.mark.parametrize(
    ("ca_flag", "key_usage"),
    [(True, None), (False, usage(key_cert_sign=True)), (True, usage(key_cert_sign=True))],
    ids=["ca-true", "key-cert-sign", "both"],
)
def test_a_certificate_that_can_issue_certificates_is_not_a_device_certificate(
    ca_flag: bool, key_usage: x509.KeyUsage | None
) -> None:
    ca = make_ca()
    index = index_of(ca)
    der = device(ca, ca_flag=ca_flag, key_usage=key_usage)
    refused = decide_device(der, index)
    assert outcome(refused) == (False, 1, "certificate-is-a-ca")
    assert refused.device_sn and refused.cn == "shape" and refused.ca_sn == ""
    # Registered anyway (before certmq refused such certificates): refused all the same.
    index.put_device(pki.serial_hex(ca.certificate), refused.device_sn, hashlib.sha256(der).digest(), True)
    assert outcome(decide_device(der, index)) == (False, 1, "certificate-is-a-ca")
    assert [step.number for step in refused.trace] == [1, 1]


def test_a_certificate_too_large_is_refused_before_it_is_parsed() -> None:
    ca = make_ca()
    der = device(
        ca,
        (
            x509.UnrecognizedExtension(UNKNOWN, b"\x04\x82" + (20_000).to_bytes(2, "big") + bytes(20_000)),
            False,
        ),
    )
    assert len(der) > MAX_DEVICE_CERTIFICATE_SIZE
    refused = decide_device(der, index_of(ca))
    assert outcome(refused) == (False, 1, "certificate-too-large")
    assert (refused.device_sn, refused.certificate) == ("", None)
    assert der not in presented_certificates


@dataclass(frozen=True)
class Critical:
    extension: x509.ExtensionType
    allowed: bool


@pytest.mark.parametrize(
    "critical",
    [
        Critical(x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), False),
        Critical(x509.NameConstraints([x509.DNSName("example.com")], None), False),
        Critical(x509.SubjectAlternativeName([x509.DNSName("meter.example")]), True),
        Critical(x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier("1.2.3.4"), None)]), True),
    ],
    ids=["unknown", "name-constraints", "subject-alt-name", "certificate-policies"],
)
def test_critical_extensions_a_device_certificate_may_carry(critical: Critical) -> None:
    ca = make_ca()
    decision = decide_device(device(ca, (critical.extension, True)), index_of(ca))
    expected = (True, 6, "new-device") if critical.allowed else (False, 1, "unsupported-critical-extension")
    assert outcome(decision) == expected


def test_a_malformed_extension_makes_the_certificate_unreadable_not_an_error() -> None:
    ca = make_ca()
    der = device(
        ca, (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02\x03"), False)
    )
    assert outcome(decide_device(der, index_of(ca))) == (False, 1, "unreadable-certificate")


def test_a_weak_device_key_is_refused() -> None:
    ca = make_ca()
    der = device(ca, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    refused = decide_device(der, index_of(ca))
    assert outcome(refused) == (False, 5, "weak-key")
    assert "1024-bit RSA" in refused.detail


def test_a_netscape_type_without_ssl_client_is_a_wrong_usage() -> None:
    ca = make_ca()
    server_only = x509.UnrecognizedExtension(ObjectIdentifier("2.16.840.1.113730.1.1"), b"\x03\x02\x06\x40")
    assert outcome(decide_device(device(ca, (server_only, False)), index_of(ca))) == (
        False,
        5,
        "wrong-key-usage",
    )


def test_a_ca_that_expires_first_ends_its_devices_validity() -> None:
    ca_not_after = (NOW + datetime.timedelta(days=2)).replace(microsecond=0)
    ca = make_ca(not_after=ca_not_after)
    index = index_of(ca)
    der = device(ca, not_after=NOW + datetime.timedelta(days=10))
    allowed = decide_device(der, index)
    assert (outcome(allowed), allowed.valid_until) == ((True, 6, "new-device"), ca_not_after)
    later = NOW + datetime.timedelta(days=3)
    assert outcome(decide_device(der, index, now=later)) == (False, 5, "ca-expired")
    index.put_device(allowed.ca_sn, allowed.device_sn, hashlib.sha256(der).digest(), True)
    registered = decide_device(der, index)
    assert (outcome(registered), registered.valid_until) == ((True, 6, "registered-device"), ca_not_after)
    assert outcome(decide_device(der, index, now=later)) == (False, 5, "ca-expired")


def test_explain_judges_the_bytes_a_device_would_send() -> None:
    ca = make_ca()
    index = index_of(ca)
    not_a_certificate = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n"
    assert outcome(explain_certificate(not_a_certificate, index)) == (False, 1, "unreadable-certificate")
    with_ca = pki.certificates_pem(x509.load_der_x509_certificate(device(ca, ca_flag=True)), ca.certificate)
    assert outcome(explain_certificate(with_ca.decode(), index)) == (False, 1, "certificate-is-a-ca")


class Refused(Exception):
    """What the TLS layer reports, reduced to the attributes the description reads."""

    def __init__(self, code: int, depth: int = 0, certificate: bytes | None = None) -> None:
        super().__init__("certificate verify failed")
        self.verify_code, self.verify_depth, self.certificate = code, depth, certificate
        self.verify_message = f"code {code}"


def test_a_refused_handshake_is_described_as_explain_would() -> None:
    ca = make_ca()
    index = index_of(ca)
    ca_sn = pki.serial_hex(ca.certificate)
    expired = device(
        ca, not_before=NOW - datetime.timedelta(days=2), not_after=NOW - datetime.timedelta(days=1)
    )
    described = decision_for_handshake_failure(Refused(10, 0, expired), index)
    assert described is not None and outcome(described) == (False, 5, "certificate-expired")
    assert described.ca_sn == ca_sn and described.cn == "shape"
    # OpenSSL gives "unable to get local issuer certificate" for a malformed extension; step 1
    # rules the certificate out first, and its reason is the one recorded, as `certmq explain` gives it.
    malformed = device(
        ca, (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01"), False)
    )
    described = decision_for_handshake_failure(Refused(20, 0, malformed), index)
    assert described is not None
    assert (outcome(described), described.ca_sn) == ((False, 1, "unreadable-certificate"), "")
    # The same code about a CA certificate.
    described = decision_for_handshake_failure(Refused(10, 1), index)
    assert described is not None and outcome(described) == (False, 5, "ca-expired")
    assert described.device_sn == ""
