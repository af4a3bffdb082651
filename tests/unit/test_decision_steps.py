"""The decision procedure (docs/certificates.md, "The decision procedure") as one table: every
outcome ``decide_device`` can give, each with a certificate that leads to it, the step that decides
and the reason recorded; and `certmq explain` (whose REST route calls ``explain_certificate``)
answering the same on every row.

Each row starts from a fresh trust index with one registered, active EC CA. The certificates are
made with ``cryptography`` and ``certmq.pki``, a few of them odd on purpose (a CA's key flags, a
SHA-1 signature, a malformed extension): the registry would refuse to register some of these CAs,
but the procedure must refuse their devices all the same (a CA registered before a check existed,
a row restored from a backup)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from certmq import pki
from certmq.auth import decision
from certmq.auth.decision import (
    MAX_DEVICE_CERTIFICATE_SIZE,
    DeviceDecision,
    certificate_size_failure,
    decide_device,
    presented_certificates,
)
from certmq.auth.explain import explain_certificate
from certmq.auth.handshake_refusal import decision_for_handshake_failure
from certmq.registry.index import TrustIndex
from certmq.tls.connection import HandshakeError

from .test_decision_cache import ca_entry

UNKNOWN_EXTENSION = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
NETSCAPE_CERTIFICATE_TYPE = ObjectIdentifier("2.16.840.1.113730.1.1")
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
MINUTE, DAY = datetime.timedelta(minutes=1), datetime.timedelta(days=1)
ALLOWED = ("new-device", "registered-device")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | dsa.DSAPrivateKey


class Issuer(NamedTuple):
    """A CA certificate and its key, which may be one that ``certmq.pki`` refuses to make."""

    certificate: x509.Certificate
    key: PrivateKey


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def key_usage(
    *, digital_signature: bool = False, key_agreement: bool = False, key_cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=not (digital_signature or key_agreement or key_cert_sign),
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


SIGNING = key_usage(digital_signature=True)
CERTIFICATE_SIGNING = key_usage(key_cert_sign=True)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    issuer: Issuer | None,
    *extensions: tuple[x509.ExtensionType, bool],
    subject: str = "device",
    key: PrivateKey | None = None,
    ca: bool | None = False,
    usage: x509.KeyUsage | None = SIGNING,
    extended_usage: tuple[ObjectIdentifier, ...] | None = (CLIENT_AUTH,),
    not_before: datetime.timedelta = -5 * MINUTE,
    not_after: datetime.timedelta = 30 * DAY,
) -> x509.Certificate:
    """A certificate for ``key`` issued by ``issuer`` (None: self-signed), valid from
    ``not_before`` to ``not_after`` from now; the defaults make an ordinary device certificate.
    ``ca`` None: no basicConstraints; ``usage``, ``extended_usage`` None: no such extension."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(subject) if issuer is None else issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start + not_before)
        .not_valid_after(start + not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if extended_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_usage)), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key if issuer is None else issuer.key, hashes.SHA256())


def make_ca(
    *extensions: tuple[x509.ExtensionType, bool],
    key: PrivateKey | None = None,
    ca: bool | None = True,
    usage: x509.KeyUsage | None = CERTIFICATE_SIGNING,
    not_before: datetime.timedelta = -5 * MINUTE,
    not_after: datetime.timedelta = 3650 * DAY,
    subject: str = "odd CA",
) -> Issuer:
    """A self-signed CA certificate, perhaps an odd one (a weak key, no CA flag...)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    certificate = issue(
        None,
        *extensions,
        subject=subject,
        key=key,
        ca=ca,
        usage=usage,
        extended_usage=None,
        not_before=not_before,
        not_after=not_after,
    )
    return Issuer(certificate, key)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def unknown_extension(size: int, oid: ObjectIdentifier = UNKNOWN_EXTENSION) -> x509.UnrecognizedExtension:
    """An extension nobody understands: an OCTET STRING of ``size`` zero bytes."""
    length = size.to_bytes(2, "big")
    return x509.UnrecognizedExtension(oid, b"\x04\x82" + length + bytes(size))


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def sha1_signed(issuer: Issuer) -> bytes:
    """An ordinary device certificate signed with SHA-1 by an RSA ``issuer``, which ``cryptography``
    no longer makes: a SHA-256 one, its signature algorithm changed (the OIDs are the same length)
    and signed again."""
    sha256_rsa = bytes.fromhex("06092a864886f70d01010b")
    sha1_rsa = bytes.fromhex("06092a864886f70d010105")
    tbs = issue(issuer).tbs_certificate_bytes
    assert tbs.count(sha256_rsa) == 1
    tbs = tbs.replace(sha256_rsa, sha1_rsa)
    assert isinstance(issuer.key, rsa.RSAPrivateKey)
    signature = issuer.key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = b"\x30\x0d" + sha1_rsa + b"\x05\x00"
    bits = b"\x00" + signature
    body = tbs + algorithm + b"\x03" + _der_length(len(bits)) + bits
    return b"\x30" + _der_length(len(body)) + body


def of_size(issuer: Issuer, size: int) -> bytes:
    """A device certificate of exactly ``size`` bytes (DER), padded by an extension nobody reads."""
    padding_size = size - len(der(issue(issuer, (unknown_extension(1000), False)))) + 1000
    for _ in range(20):  # an ECDSA signature's length varies by a byte or two
        candidate = der(issue(issuer, (unknown_extension(padding_size), False)))
        if len(candidate) == size:
            return candidate
        padding_size += size - len(candidate)
    raise AssertionError(f"no certificate of {size} bytes")


class Presented(NamedTuple):
    """What a row presents: the DER (None: no certificate) and the registered CA that issued it
    (None: none)."""

    der: bytes | None
    ca: Issuer | None


class Fleet:
    """A trust index with one registered, active EC CA, as the registry builds it."""

    def __init__(self) -> None:
        key = pki.generate_key("ec")
        self.ca = Issuer(pki.create_ca("fleet CA", key), key)
        self.index = TrustIndex()
        self.index.put_ca(ca_entry(self.ca))

    def registered_ca(self, ca: Issuer, *, active: bool = True) -> Issuer:
        self.index.put_ca(ca_entry(ca, active))
        return ca

    def device(self, *extensions: tuple[x509.ExtensionType, bool], **shape: Any) -> Presented:
        """A certificate of ``shape`` issued by the fleet's CA."""
        return Presented(der(issue(self.ca, *extensions, **shape)), self.ca)

    def of(self, ca: Issuer, **shape: Any) -> Presented:
        """A device certificate of ``shape`` issued by the registered ``ca``."""
        return Presented(der(issue(ca, **shape)), ca)

    def registered(
        self, presented: Presented, *, active: bool = True, fingerprint: bytes | None = None
    ) -> Presented:
        """``presented``, registered with its CA (step 6 of an earlier connection)."""
        assert presented.der is not None and presented.ca is not None
        device_sn = pki.serial_hex(x509.load_der_x509_certificate(presented.der))
        registered_fingerprint = fingerprint or hashlib.sha256(presented.der).digest()
        self.index.put_device(
            pki.serial_hex(presented.ca.certificate), device_sn, registered_fingerprint, active
        )
        return presented

    def inactive(self) -> Fleet:
        self.index.set_ca_active(pki.serial_hex(self.ca.certificate), False)
        return self


def forged(fleet: Fleet) -> Presented:
    """The fleet CA's name, another key's signature."""
    impostor = Issuer(fleet.ca.certificate, pki.generate_key("ec"))
    return Presented(der(issue(impostor)), fleet.ca)


def stranger(fleet: Fleet) -> Presented:
    """Issued by a CA that is not registered."""
    return Presented(der(issue(make_ca(subject="stranger CA"))), None)


def registered_as_a_device(fleet: Fleet) -> Presented:
    """A CA certificate registered as a device's before certmq refused such certificates."""
    return fleet.registered(fleet.device(ca=True, usage=CERTIFICATE_SIGNING))


def registered_of_an_inactive_ca(fleet: Fleet) -> Presented:
    """A device registered while its CA was active."""
    presented = fleet.registered(fleet.device())
    fleet.inactive()
    return presented


def sha1(fleet: Fleet) -> Presented:
    ca = fleet.registered_ca(make_ca(key=rsa_key(2048)))
    return Presented(sha1_signed(ca), ca)


def odd_ca(*extensions: tuple[x509.ExtensionType, bool], **shape: Any) -> Callable[[Fleet], Presented]:
    """A device certificate of a registered CA of ``shape``."""
    return lambda fleet: fleet.of(fleet.registered_ca(make_ca(*extensions, **shape)))


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True)
class Row:
    name: str
    present: Callable[[Fleet], Presented]
    step: int
    reason: str
    # The sentence recorded with the reason, with {ca} (the Sn of the CA named), {sn}, {issuer},
    # {not_before}, {not_after}, {ca_not_before}, {ca_not_after}, {size} filled in; only its
    # beginning when ``whole`` is false (the rest is a parser's message).
    detail: str
    whole: bool = True

    @property
    def allowed(self) -> bool:
        return self.reason in ALLOWED


NETSCAPE_SSL_CLIENT = b"\x03\x02\x07\x80"
NETSCAPE_SSL_SERVER = b"\x03\x02\x06\x40"

ROWS = [
    # Step 1: the certificate itself, whoever issued it.
    Row("no certificate", lambda fleet: Presented(None, None), 1, "no-client-certificate",
        "the client presented no certificate"),
    Row("empty certificate", lambda fleet: Presented(b"", None), 1, "no-client-certificate",
        "the client presented no certificate"),
    Row("not DER", lambda fleet: Presented(b"\x30\x03not a certificate", None), 1, "unreadable-certificate",
        "cannot parse the client certificate: ", whole=False),
    Row("malformed extension", lambda fleet: fleet.device(
        (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02\x03"), False)),
        1, "unreadable-certificate", "cannot read the extensions of the device certificate: ", whole=False),
    Row("one byte too large", lambda fleet: Presented(of_size(fleet.ca, MAX_DEVICE_CERTIFICATE_SIZE + 1), None),
        1, "certificate-too-large", "the certificate has {size} bytes; a device certificate may have 16384"),
    Row("largest allowed", lambda fleet: Presented(of_size(fleet.ca, MAX_DEVICE_CERTIFICATE_SIZE), fleet.ca),
        6, "new-device", "new device: registered on this connection"),
    Row("CA:TRUE", lambda fleet: fleet.device(ca=True), 1, "certificate-is-a-ca",
        "basicConstraints CA:TRUE: a CA certificate is not a device certificate"),
    Row("keyCertSign", lambda fleet: fleet.device(usage=key_usage(digital_signature=True, key_cert_sign=True)), 1,
        "certificate-is-a-ca", "key usage keyCertSign: a device certificate must not sign certificates"),
    Row("keyCertSign without basicConstraints", lambda fleet: fleet.device(ca=None, usage=CERTIFICATE_SIGNING),
        1, "certificate-is-a-ca", "key usage keyCertSign: a device certificate must not sign certificates"),
    Row("a CA certificate registered as a device", registered_as_a_device, 1, "certificate-is-a-ca",
        "basicConstraints CA:TRUE: a CA certificate is not a device certificate"),
    Row("unknown critical extension", lambda fleet: fleet.device((unknown_extension(4), True)), 1,
        "unsupported-critical-extension",
        "the device certificate has critical extension (1.3.6.1.4.1.55555.1.1), which it may not carry"),
    Row("critical name constraints", lambda fleet: fleet.device(
        (x509.NameConstraints([x509.DNSName("example.com")], None), True)), 1, "unsupported-critical-extension",
        "the device certificate has critical extension NameConstraints (2.5.29.30), which it may not carry"),
    Row("critical subjectAltName", lambda fleet: fleet.device(
        (x509.SubjectAlternativeName([x509.DNSName("meter.example")]), True)),
        6, "new-device", "new device: registered on this connection"),
    Row("critical certificatePolicies", lambda fleet: fleet.device(
        (x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier("1.2.3.4"), None)]), True)),
        6, "new-device", "new device: registered on this connection"),
    Row("unknown extension, not critical", lambda fleet: fleet.device((unknown_extension(4), False)),
        6, "new-device", "new device: registered on this connection"),
    # Step 2: registered (same CA, same serial)?
    Row("another certificate with a registered serial", lambda fleet: fleet.registered(
        fleet.device(), fingerprint=hashlib.sha256(b"another certificate").digest()), 2, "serial-collision",
        "another certificate is registered with CA {ca} and Sn {sn}"),
    Row("registered, inactive", lambda fleet: fleet.registered(fleet.device(), active=False), 2,
        "device-inactive", "the device certificate is registered and inactive"),
    # Step 3: the registered CA that issued it.
    Row("issued by a CA that is not registered", stranger, 3, "ca-not-registered",
        "no registered CA issued it ({issuer})"),
    # Step 4: is that CA active?
    Row("new, of an inactive CA", lambda fleet: fleet.inactive().device(), 4, "ca-inactive", "CA {ca} is inactive"),
    # Step 5: the certificate against its CA, now. A registered device's CA status and validity
    # periods are checked again at every CONNECT.
    Row("registered, of an inactive CA", registered_of_an_inactive_ca, 5, "ca-inactive", "CA {ca} is inactive"),
    Row("signed by another key", forged, 5, "bad-signature",
        "the signature does not verify with CA {ca}: invalid signature"),
    Row("RSA-1024 key", lambda fleet: fleet.device(key=rsa_key(1024)), 5, "weak-key",
        "the device certificate has a 1024-bit RSA key, below the 2048 bits required"),
    Row("DSA-1024 key", lambda fleet: fleet.device(key=dsa.generate_private_key(1024)), 5, "weak-key",
        "the device certificate has a 1024-bit DSA key, below the 2048 bits required"),
    Row("P-192 key", lambda fleet: fleet.device(key=ec.generate_private_key(ec.SECP192R1())), 5, "weak-key",
        "the device certificate has a 192-bit secp192r1 key, below the 224 bits required"),
    Row("P-224 key", lambda fleet: fleet.device(key=ec.generate_private_key(ec.SECP224R1())),
        6, "new-device", "new device: registered on this connection"),
    Row("RSA-2048 key", lambda fleet: fleet.device(key=rsa_key(2048)),
        6, "new-device", "new device: registered on this connection"),
    Row("signed with SHA-1", sha1, 5, "weak-signature",
        "the device certificate is signed with SHA1, which is too weak"),
    Row("new, expired", lambda fleet: fleet.device(not_before=-10 * DAY, not_after=-DAY), 5,
        "certificate-expired", "expired on {not_after}"),
    Row("registered, expired", lambda fleet: fleet.registered(fleet.device(not_before=-10 * DAY, not_after=-DAY)),
        5, "certificate-expired", "expired on {not_after}"),
    Row("new, not yet valid", lambda fleet: fleet.device(not_before=DAY, not_after=10 * DAY), 5,
        "certificate-not-yet-valid", "valid only from {not_before}"),
    Row("registered, not yet valid", lambda fleet: fleet.registered(fleet.device(not_before=DAY, not_after=10 * DAY)),
        5, "certificate-not-yet-valid", "valid only from {not_before}"),
    Row("new, of an expired CA", odd_ca(not_before=-10 * DAY, not_after=-DAY), 5, "ca-expired",
        "CA {ca} expired on {ca_not_after}"),
    Row("registered, of an expired CA", lambda fleet: fleet.registered(
        odd_ca(not_before=-10 * DAY, not_after=-DAY)(fleet)), 5, "ca-expired", "CA {ca} expired on {ca_not_after}"),
    Row("new, of a CA not yet valid", odd_ca(not_before=DAY, not_after=10 * DAY), 5, "ca-not-yet-valid",
        "CA {ca} is valid only from {ca_not_before}"),
    Row("registered, of a CA not yet valid", lambda fleet: fleet.registered(
        odd_ca(not_before=DAY, not_after=10 * DAY)(fleet)), 5, "ca-not-yet-valid",
        "CA {ca} is valid only from {ca_not_before}"),
    Row("CA without basicConstraints", odd_ca(ca=None), 5, "issuer-not-a-ca",
        "CA {ca} lacks basicConstraints CA:TRUE"),
    Row("CA with CA:FALSE", odd_ca(ca=False), 5, "issuer-not-a-ca", "CA {ca} lacks basicConstraints CA:TRUE"),
    Row("CA whose key usage lacks keyCertSign", odd_ca(usage=SIGNING), 5, "issuer-not-a-ca",
        "CA {ca} key usage does not allow signing certificates"),
    Row("CA with a malformed extension", odd_ca(
        (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02\x03"), False)),
        5, "issuer-not-a-ca", "cannot read the extensions of CA {ca}: ", whole=False),
    Row("CA without key usage", odd_ca(usage=None), 6, "new-device", "new device: registered on this connection"),
    Row("CA with an RSA-1024 key", odd_ca(key=rsa_key(1024)), 5, "weak-key",
        "CA {ca} has a 1024-bit RSA key, below the 2048 bits required"),
    Row("CA with an unknown critical extension", odd_ca((unknown_extension(4), True)), 5,
        "unsupported-critical-extension",
        "CA {ca} has critical extension (1.3.6.1.4.1.55555.1.1), which it may not carry"),
    Row("CA with critical name constraints", odd_ca(
        (x509.NameConstraints([x509.DNSName("example.com")], None), True)),
        6, "new-device", "new device: registered on this connection"),
    Row("key usage without digitalSignature or keyAgreement", lambda fleet: fleet.device(usage=key_usage()), 5,
        "wrong-key-usage", "key usage allows neither digitalSignature nor keyAgreement"),
    Row("key usage keyAgreement only", lambda fleet: fleet.device(usage=key_usage(key_agreement=True)),
        6, "new-device", "new device: registered on this connection"),
    Row("no key usage", lambda fleet: fleet.device(usage=None), 6, "new-device",
        "new device: registered on this connection"),
    Row("extended key usage serverAuth only", lambda fleet: fleet.device(extended_usage=(SERVER_AUTH,)), 5,
        "wrong-key-usage", "extended key usage does not include clientAuth"),
    Row("extended key usage serverAuth and clientAuth", lambda fleet: fleet.device(
        extended_usage=(SERVER_AUTH, CLIENT_AUTH)), 6, "new-device", "new device: registered on this connection"),
    Row("no extended key usage", lambda fleet: fleet.device(extended_usage=None), 6, "new-device",
        "new device: registered on this connection"),
    Row("Netscape type SSL server only", lambda fleet: fleet.device(
        (x509.UnrecognizedExtension(NETSCAPE_CERTIFICATE_TYPE, NETSCAPE_SSL_SERVER), False)), 5,
        "wrong-key-usage", "Netscape certificate type does not include SSL client"),
    Row("Netscape type shorter than a bit string", lambda fleet: fleet.device(
        (x509.UnrecognizedExtension(NETSCAPE_CERTIFICATE_TYPE, b"\x03\x01\x00"), False)), 5,
        "wrong-key-usage", "Netscape certificate type does not include SSL client"),
    Row("Netscape type object-signing CA only", lambda fleet: fleet.device(
        (x509.UnrecognizedExtension(NETSCAPE_CERTIFICATE_TYPE, b"\x03\x02\x00\x01"), False)), 5,
        "wrong-key-usage", "Netscape certificate type does not include SSL client"),
    Row("Netscape type SSL client", lambda fleet: fleet.device(
        (x509.UnrecognizedExtension(NETSCAPE_CERTIFICATE_TYPE, NETSCAPE_SSL_CLIENT), False)),
        6, "new-device", "new device: registered on this connection"),
    # Step 6: allowed, until the certificate or its CA expires, whichever is first.
    Row("new", lambda fleet: fleet.device(), 6, "new-device", "new device: registered on this connection"),
    Row("registered, active", lambda fleet: fleet.registered(fleet.device()), 6, "registered-device",
        "registered and active"),
    Row("new, of a CA that expires first", odd_ca(not_after=2 * DAY), 6, "new-device",
        "new device: registered on this connection"),
    Row("registered, of a CA that expires first", lambda fleet: fleet.registered(odd_ca(not_after=2 * DAY)(fleet)),
        6, "registered-device", "registered and active"),
]  # fmt: skip


def pem(data: bytes) -> str:
    """``data`` as a PEM certificate block, whether it is a certificate or not."""
    return f"-----BEGIN CERTIFICATE-----\n{base64.encodebytes(data).decode()}-----END CERTIFICATE-----\n"


def expected_detail(row: Row, presented: Presented) -> str:
    assert presented.der is not None or "{" not in row.detail
    fields: dict[str, object] = {"size": len(presented.der or b"")}
    if presented.ca is not None:
        ca = presented.ca.certificate
        fields |= {
            "ca": pki.serial_hex(ca),
            "ca_not_before": ca.not_valid_before_utc.isoformat(),
            "ca_not_after": ca.not_valid_after_utc.isoformat(),
        }
    try:
        certificate = x509.load_der_x509_certificate(presented.der or b"")
    except ValueError:
        return row.detail.format(**fields)
    fields |= {
        "sn": pki.serial_hex(certificate),
        "issuer": certificate.issuer.rfc4514_string(),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
    }
    return row.detail.format(**fields)


def steps_taken(row: Row, presented: Presented, registered: bool) -> list[tuple[int, str]]:
    """The steps `certmq explain` lists before the verdict: a registered device goes from step 2
    to step 5; nothing but the verdict when there is no certificate to read."""
    if len(presented.der or b"") > MAX_DEVICE_CERTIFICATE_SIZE:
        return []
    try:
        certificate = x509.load_der_x509_certificate(presented.der or b"")
    except ValueError:
        return []
    read = (
        1,
        f"device certificate CN={pki.common_name(certificate)!r} Sn={pki.serial_hex(certificate)} "
        f"issuer={certificate.issuer.rfc4514_string()}",
    )
    if row.step == 1:
        return [read]
    ca_sn = "" if presented.ca is None else pki.serial_hex(presented.ca.certificate)
    if registered:
        path = [read, (2, "registered and active: go to step 5")]
    else:
        path = [
            read,
            (2, "not registered: go to step 3"),
            (3, f"issued by registered CA {ca_sn}"),
            (4, f"CA {ca_sn} is active"),
        ]
    path.append((5, "signature, validity period, CA and key usage are valid"))
    return [(number, text) for number, text in path if number < row.step]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_each_outcome_of_the_procedure(row: Row) -> None:
    fleet = Fleet()
    presented = row.present(fleet)
    decided = decide_device(presented.der, fleet.index)

    assert (decided.allowed, decided.step, decided.reason) == (row.allowed, row.step, row.reason), (
        decided.detail
    )
    detail = expected_detail(row, presented)
    assert decided.detail == detail if row.whole else decided.detail.startswith(detail), decided.detail
    # It names the issuing CA from step 2 on, when one is registered, and the certificate when it
    # could read it.
    ca_sn = "" if presented.ca is None or row.step == 1 else pki.serial_hex(presented.ca.certificate)
    assert decided.ca_sn == ca_sn
    readable = decided.certificate is not None
    if readable:
        assert presented.der is not None and decided.certificate is not None
        assert decided.certificate.public_bytes(Encoding.DER) == presented.der
        assert decided.device_sn == pki.serial_hex(decided.certificate)
        assert decided.cn == pki.common_name(decided.certificate)
        assert decided.fingerprint == hashlib.sha256(presented.der).digest()
    else:
        assert (decided.device_sn, decided.cn, decided.fingerprint) == ("", "", b"")
        assert row.step == 1
        assert presented.der not in presented_certificates, "bytes that are no certificate are not remembered"
    registered = bool(ca_sn) and fleet.index.device(ca_sn, decided.device_sn) is not None
    assert decided.needs_registration == (row.reason == "new-device")
    if row.allowed:
        assert decided.certificate is not None and presented.ca is not None
        assert decided.valid_until == min(
            decided.certificate.not_valid_after_utc, presented.ca.certificate.not_valid_after_utc
        )
    else:
        assert decided.valid_until is None
    *steps, last = [(step.number, step.text) for step in decided.trace]
    assert steps == steps_taken(row, presented, registered)
    verdict = f"allow: {decided.detail}" if row.allowed else f"deny ({row.reason}): {decided.detail}"
    assert last == (row.step, verdict)


# `certmq explain` is always given a certificate.
EXPLAINED = [row for row in ROWS if row.reason != "no-client-certificate"]


@pytest.mark.parametrize("row", EXPLAINED, ids=[row.name for row in EXPLAINED])
def test_explain_agrees_on_each_outcome(row: Row) -> None:
    """`certmq explain` is given the device's chain file (device certificate first, then its CA's),
    as a device would send it; it answers what CONNECT would, with the same steps."""
    fleet = Fleet()
    presented = row.present(fleet)
    assert presented.der
    issuer = presented.ca or fleet.ca
    chain = pem(presented.der) + pki.certificates_pem(issuer.certificate).decode()
    explained = explain_certificate(chain, fleet.index)
    decided = decide_device(presented.der, fleet.index)
    assert outcome(explained) == outcome(decided)
    assert explained.trace == decided.trace


def test_explain_judges_at_the_time_it_is_asked_about() -> None:
    fleet = Fleet()
    presented = fleet.device(not_after=DAY)
    assert presented.der is not None
    later = now() + 2 * DAY
    explained = explain_certificate(pem(presented.der), fleet.index, later)
    decided = decide_device(presented.der, fleet.index, later)
    assert outcome(explained)[1:3] == outcome(decided)[1:3] == (5, "certificate-expired")


def test_explain_without_a_certificate_says_so() -> None:
    with pytest.raises(pki.PemFileError) as raised:
        explain_certificate("no certificate here", Fleet().index)
    assert str(raised.value) == (
        "the certificate text holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
    )


def outcome(decided: DeviceDecision) -> tuple[object, ...]:
    return (
        decided.allowed,
        decided.step,
        decided.reason,
        decided.detail,
        decided.ca_sn,
        decided.device_sn,
        decided.cn,
        decided.fingerprint,
        decided.valid_until,
    )


# Reasons that the procedure's module names but ``decide_device`` never gives.
NOT_GIVEN_BY_DECIDE_DEVICE = {
    # OpenSSL's verdict on a handshake it refused for a fault the procedure has no name for
    # (a CA's name constraints): only decision_for_handshake_failure gives it.
    "certificate-invalid",
    # Named, and offered by the console's decision search, but given by no code.
    "device-revoked",
}


def test_the_table_has_every_reason() -> None:
    reasons = {
        value
        for constant, value in vars(decision).items()
        if constant.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z]+(-[a-z]+)+", value)
    }
    assert {row.reason for row in ROWS} == reasons - NOT_GIVEN_BY_DECIDE_DEVICE
    assert {row.step for row in ROWS} == {1, 2, 3, 4, 5, 6}


# How the TLS layer's refusals are described (decision_for_handshake_failure): in the same terms as
# the procedure's, with the certificate's names when it got that far, and the CA's from step 4 on.
@dataclass(frozen=True)
class Refusal:
    name: str
    error: Callable[[Fleet], BaseException]
    # None: not about the client's certificate, so not a decision.
    step: int | None
    reason: str = ""
    detail: str = ""
    names_ca: bool = False


def handshake_error(
    reason: str | None = "CERTIFICATE_VERIFY_FAILED",
    code: int = 0,
    depth: int = 0,
    certificate: bytes | None = None,
    **options: Any,
) -> HandshakeError:
    return HandshakeError("handshake failed", reason, code, depth, certificate=certificate, **options)


def refused(code: int, depth: int = 0, **shape: Any) -> Callable[[Fleet], BaseException]:
    """OpenSSL's verification refused a certificate of the fleet's CA of ``shape`` with ``code``."""
    return lambda fleet: handshake_error(code=code, depth=depth, certificate=fleet.device(**shape).der)


REFUSALS = [
    Refusal("the client hung up", lambda fleet: handshake_error(None), None),
    Refusal("the client timed out", lambda fleet: TimeoutError("timed out"), None),
    Refusal("not TLS", lambda fleet: handshake_error("WRONG_VERSION_NUMBER"), None),
    Refusal("no certificate (TLS 1.2)", lambda fleet: handshake_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), 1,
            "no-client-certificate", "TLS handshake refused: no client certificate"),
    Refusal("no certificate (TLS 1.3)", lambda fleet: handshake_error("CERTIFICATE_REQUIRED"), 1,
            "no-client-certificate", "TLS handshake refused: no client certificate"),
    Refusal("certificates over OpenSSL's limit", lambda fleet: handshake_error(
        "EXCESSIVE_MESSAGE_SIZE", after_server_hello=True), 1, "certificate-too-large",
            "TLS handshake refused: the client's certificates exceed 102400 bytes"),
    Refusal("a client hello over OpenSSL's limit", lambda fleet: handshake_error("EXCESSIVE_MESSAGE_SIZE"), None),
    Refusal("certificate over the procedure's limit", lambda fleet: handshake_error(
        code=50, certificate=of_size(fleet.ca, MAX_DEVICE_CERTIFICATE_SIZE + 1), refusal="too large"), 1,
            "certificate-too-large", "the certificate has 16385 bytes; a device certificate may have 16384"),
    Refusal("device certificate expired", refused(10, not_before=-2 * DAY, not_after=-DAY), 5,
            "certificate-expired", "TLS handshake refused: certificate has expired", names_ca=True),
    Refusal("CA certificate expired", lambda fleet: handshake_error(code=10, depth=1), 5, "ca-expired",
            "TLS handshake refused: certificate has expired (depth 1 of the chain)"),
    Refusal("CA certificate not yet valid", lambda fleet: handshake_error(code=9, depth=1), 5,
            "ca-not-yet-valid", "TLS handshake refused: certificate is not yet valid (depth 1 of the chain)"),
    Refusal("device certificate's unknown critical extension", refused(34), 1, "unsupported-critical-extension",
            "TLS handshake refused: unhandled critical extension"),
    Refusal("CA certificate's unknown critical extension", lambda fleet: handshake_error(code=34, depth=1), 5,
            "unsupported-critical-extension", "TLS handshake refused: unhandled critical extension (depth 1 of the chain)"),
    Refusal("issuer unknown", lambda fleet: handshake_error(code=20, certificate=stranger(fleet).der), 3,
            "ca-not-registered", "TLS handshake refused: unable to get local issuer certificate"),
    # The TLS layer's CAs lag the registry's by a moment after a registration: no CA is named before step 4.
    Refusal("issuer unknown to the TLS layer, registered", refused(20), 3, "ca-not-registered",
            "TLS handshake refused: unable to get local issuer certificate"),
    Refusal("issuer not a CA", refused(24), 5, "issuer-not-a-ca", "TLS handshake refused: invalid CA certificate",
            names_ca=True),
    Refusal("a code the procedure has no name for", refused(47), 5, "certificate-invalid",
            "TLS handshake refused: certificate verify error 47", names_ca=True),
    # What step 1 rules out is described as step 1 describes it, whatever OpenSSL said.
    Refusal("malformed extension", lambda fleet: handshake_error(code=20, certificate=fleet.device(
        (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01"), False)).der), 1,
            "unreadable-certificate", "cannot read the extensions of the device certificate: "),
]  # fmt: skip


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal.name for refusal in REFUSALS])
def test_each_refused_handshake_is_described_as_the_procedure_would(refusal: Refusal) -> None:
    fleet = Fleet()
    error = refusal.error(fleet)
    described = decision_for_handshake_failure(error, fleet.index)
    if refusal.step is None:
        assert described is None
        return
    assert described is not None
    assert (described.allowed, described.step, described.reason) == (False, refusal.step, refusal.reason)
    assert described.detail.startswith(refusal.detail), described.detail
    assert described.detail == refusal.detail or refusal.reason == "unreadable-certificate"
    assert described.ca_sn == (pki.serial_hex(fleet.ca.certificate) if refusal.names_ca else "")
    certificate = getattr(error, "certificate", None)
    if certificate is not None and len(certificate) <= MAX_DEVICE_CERTIFICATE_SIZE:
        assert described.device_sn == pki.serial_hex(x509.load_der_x509_certificate(certificate))
        assert described.fingerprint == hashlib.sha256(certificate).digest()
    else:
        assert (described.device_sn, described.cn, described.certificate) == ("", "", None)
    # A certificate the handshake refused is nobody's: it is not remembered.
    assert certificate not in presented_certificates
    # Without the index, no CA is named.
    alone = decision_for_handshake_failure(error)
    assert alone is not None and (alone.step, alone.reason, alone.ca_sn) == (refusal.step, refusal.reason, "")


def test_validity_periods_include_their_first_and_last_second() -> None:
    """A device certificate, and its CA's, are valid from notBefore to notAfter inclusive."""
    fleet = Fleet()
    ca = fleet.registered_ca(make_ca(not_before=-2 * DAY, not_after=3 * DAY))
    # One device certificate within its CA's validity, one beyond it on both sides.
    within = der(issue(ca, not_before=-DAY, not_after=DAY))
    beyond = der(issue(ca, not_before=-3 * DAY, not_after=4 * DAY))
    second = datetime.timedelta(seconds=1)
    for device, bounds in [(within, x509.load_der_x509_certificate(within)), (beyond, ca.certificate)]:
        first, last = bounds.not_valid_before_utc, bounds.not_valid_after_utc
        moments = (first - second, first, last, last + second)
        assert [decide_device(device, fleet.index, now=now).allowed for now in moments] == [
            False,
            True,
            True,
            False,
        ]


def test_the_tls_layer_refuses_the_same_sizes_as_step_1() -> None:
    """The TLS layer asks :func:`certificate_size_failure` of the certificates its verification
    accepted, and refuses the handshake of a larger one."""
    issuer = Fleet().ca
    assert certificate_size_failure(of_size(issuer, MAX_DEVICE_CERTIFICATE_SIZE)) is None
    too_large = of_size(issuer, MAX_DEVICE_CERTIFICATE_SIZE + 1)
    assert certificate_size_failure(too_large) == (
        "certificate-too-large",
        "the certificate has 16385 bytes; a device certificate may have 16384",
    )
