"""The mutual-authentication decision procedure (docs/certificates.md), step by step.

``decide_device`` runs steps 1–5 on the device certificate a connection presented, against
the in-memory trust index, and returns a :class:`DeviceDecision`: allow or deny, the step that
decided, a reason code and a sentence. It is synchronous and touches no database: step 6
(auto-registration) is the caller's, because it writes to the registry.

It runs at every CONNECT, also on resumed TLS sessions, whose handshake re-verified nothing:
the TLS layer's verification is never taken as proof that a device may connect now. Where
OpenSSL's verification refuses a certificate, the procedure refuses it too, for the same reason,
so that `certmq explain`, a resumed session and a full handshake agree (but for a CA's name
constraints, which only OpenSSL applies: docs/certificates.md).

Handshakes that the TLS layer refused are described in the same terms by
:func:`certmq.auth.handshake_refusal.decision_for_handshake_failure`, so the audit log tells one
story.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, ObjectIdentifier

from certmq.pki import common_name, serial_hex

# Reasons, as recorded in the audit log and shown by `certmq explain`.
NO_CLIENT_CERTIFICATE = "no-client-certificate"
UNREADABLE_CERTIFICATE = "unreadable-certificate"
CERTIFICATE_TOO_LARGE = "certificate-too-large"
CERTIFICATE_IS_A_CA = "certificate-is-a-ca"
UNSUPPORTED_CRITICAL_EXTENSION = "unsupported-critical-extension"
WEAK_KEY = "weak-key"
WEAK_SIGNATURE = "weak-signature"
SERIAL_COLLISION = "serial-collision"
DEVICE_INACTIVE = "device-inactive"
CA_NOT_REGISTERED = "ca-not-registered"
CA_INACTIVE = "ca-inactive"
BAD_SIGNATURE = "bad-signature"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
CA_EXPIRED = "ca-expired"
CA_NOT_YET_VALID = "ca-not-yet-valid"
ISSUER_NOT_A_CA = "issuer-not-a-ca"
WRONG_KEY_USAGE = "wrong-key-usage"
DEVICE_REVOKED = "device-revoked"
CERTIFICATE_INVALID = "certificate-invalid"
REGISTERED_DEVICE = "registered-device"
NEW_DEVICE = "new-device"


# The largest device certificate, in DER bytes. Device certificates are a few hundred bytes to a
# few KB; a larger one is refused at step 1 before it is parsed or remembered. The TLS layer could
# not take much more anyway: OpenSSL refuses a client's certificates above 100 KiB in all, and
# fails to write the session ticket of a certificate above about 64 KB.
MAX_DEVICE_CERTIFICATE_SIZE = 16 * 1024

# The critical extensions that a device certificate may carry: those whose meaning the procedure
# checks or that restrict nothing it relies on. OpenSSL understands a few more (name constraints,
# policy mappings...), none of which belongs in a device certificate.
DEVICE_CRITICAL_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.CERTIFICATE_POLICIES,
    }
)
NETSCAPE_CERTIFICATE_TYPE = ObjectIdentifier("2.16.840.1.113730.1.1")
# Those that OpenSSL's verification understands when critical (any other fails it, X509_V_ERR 34),
# which a registered CA's certificate may therefore carry.
CA_CRITICAL_EXTENSIONS = DEVICE_CRITICAL_EXTENSIONS | {
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
    ExtensionOID.OCSP_NO_CHECK,
    NETSCAPE_CERTIFICATE_TYPE,
}
# The TLS listener's security level 2 (docs/certificates.md): 112-bit security, which OpenSSL also
# asks of the keys and signatures of the certificates it verifies.
MIN_RSA_KEY_BITS = 2048
MIN_EC_KEY_BITS = 224
WEAK_SIGNATURE_HASHES = (hashes.MD5, hashes.SHA1)


# Asked, only when needed, for the fingerprint of the certificate that verified the leaf's signature.
VerifiedIssuer = Callable[[], bytes | None]


class CaView(Protocol):
    @property
    def sn(self) -> str: ...
    @property
    def certificate(self) -> x509.Certificate: ...
    @property
    def active(self) -> bool: ...
    @property
    def fingerprint(self) -> bytes: ...


class DeviceView(Protocol):
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def active(self) -> bool: ...


class TrustIndexView(Protocol):
    """What the procedure reads: the registry's in-memory index.

    An index may also have a ``ca_generation`` attribute: a number that changes whenever its CAs
    change and that no other index shows (see :attr:`certmq.registry.index.TrustIndex.ca_generation`).
    The procedure then remembers which CA issued a certificate until it changes; without it, it
    asks :meth:`issuer_of` at every call.

    An index may also have a ``ca_by_fingerprint(fingerprint)`` method: the registered CA whose
    certificate has that SHA-256 fingerprint, or None. The procedure then takes the CA whose key
    verified the certificate in the TLS handshake, when it is registered, as the one that issued
    it, without reading the certificate's names and extensions."""

    def issuer_of(self, certificate: x509.Certificate) -> CaView | None: ...
    def device(self, ca_sn: str, device_sn: str) -> DeviceView | None: ...


@dataclass(frozen=True, slots=True)
class Step:
    number: int
    text: str


# A check that failed: its reason code and the sentence that explains it.
Failure = tuple[str, str]


class PresentedCertificate:
    """The certificate a client presented as its device certificate, and what its DER bytes say
    by themselves: the parsed certificate, its Sn, CN, fingerprint, validity period and the checks
    of step 5 that need no CA. None of it
    depends on the registry or the time, so it is worked out once per distinct DER
    (:class:`PresentedCertificateCache`) and shared by every decision on those bytes."""

    __slots__ = (
        "_defect",
        "_handshake_failure",
        "_issuer_name",
        "certificate",
        "cn",
        "device_sn",
        "fingerprint",
        "issuer",
        "not_valid_after",
        "not_valid_before",
    )

    def __init__(self, der: bytes) -> None:
        """Raises ValueError when ``der`` is not a readable certificate."""
        certificate = x509.load_der_x509_certificate(der)
        self.certificate = certificate
        self.device_sn = serial_hex(certificate)
        self.cn = common_name(certificate)
        self._issuer_name: str | None = None  # for refusals and traces only: written when asked
        self.fingerprint = hashlib.sha256(der).digest()
        self.not_valid_before = certificate.not_valid_before_utc
        self.not_valid_after = certificate.not_valid_after_utc
        # ``(ca_generation, issuing CA)`` as last looked up in an index with that generation: one
        # tuple, replaced whole, so that a reader never pairs a CA with the wrong generation.
        self.issuer: tuple[int, CaView | None] | None = None
        # Boxed once checked, so that "checked, no failure" differs from "not checked yet".
        self._handshake_failure: tuple[Failure | None] | None = None
        self._defect: tuple[Failure | None] | None = None

    @property
    def issuer_name(self) -> str:
        """The issuer's distinguished name, as RFC 4514 writes it."""
        if self._issuer_name is None:
            self._issuer_name = self.certificate.issuer.rfc4514_string()
        return self._issuer_name

    def handshake_failure(self) -> Failure | None:
        """The step 5 checks of the certificate alone that a full TLS handshake makes: the
        strength of its key and signature, its key usages."""
        checked = self._handshake_failure
        if checked is None:
            certificate = self.certificate
            checked = self._handshake_failure = (
                _strength_failure(certificate) or _usage_failure(certificate),
            )
        return checked[0]

    def defect(self) -> Failure | None:
        """Step 1: what rules the certificate out as a device's, whoever issued it."""
        checked = self._defect
        if checked is None:
            checked = self._defect = (_defect(self.certificate),)
        return checked[0]


class PresentedCertificateCache:
    """The :class:`PresentedCertificate` of each of the last ``capacity`` distinct DER byte strings
    seen, the oldest forgotten first. An entry holds the DER, the parsed certificate (with its
    extensions once step 5 has read them) and a few short strings: about 6 KB for an EC device
    certificate."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Ordered: the oldest is taken from the front, which a plain dict would find only after
        # stepping over the slots of every entry deleted before it.
        self._entries: OrderedDict[bytes, PresentedCertificate] = OrderedDict()
        # Lookups are single dict reads; adding and evicting take the lock, so that two threads
        # cannot both evict the same oldest entry.
        self._adding = threading.Lock()

    def get(self, der: bytes) -> PresentedCertificate:
        """What ``der`` says, parsed now if it is not remembered. Raises ValueError when ``der``
        is not a readable certificate (which is not remembered)."""
        known = self._entries.get(der)
        if known is not None:
            return known
        parsed = PresentedCertificate(der)
        with self._adding:
            entries = self._entries
            while len(entries) >= self.capacity and entries:
                entries.popitem(last=False)
            return entries.setdefault(der, parsed)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, der: object) -> bool:
        return der in self._entries


# Enough for the devices that reconnect again and again (flapping links, retries after a
# refusal) at about 25 MB when full; a device forgotten costs one more parse.
PRESENTED_CERTIFICATES_REMEMBERED = 4096
presented_certificates = PresentedCertificateCache(PRESENTED_CERTIFICATES_REMEMBERED)


def certificate_size_failure(der: bytes) -> Failure | None:
    """The first check of step 1, which needs no parsing: is ``der`` small enough to be a device
    certificate? The TLS layer asks it of the certificate its verification accepted, and refuses
    the handshake of a larger one, whose session it could not carry anyway."""
    if len(der) > MAX_DEVICE_CERTIFICATE_SIZE:
        return (
            CERTIFICATE_TOO_LARGE,
            f"the certificate has {len(der)} bytes; a device certificate may have {MAX_DEVICE_CERTIFICATE_SIZE}",
        )
    return None


def read_certificate(der: bytes, remember: bool = True) -> tuple[PresentedCertificate | None, Failure | None]:
    """Step 1 on the DER of a presented certificate: the certificate (None when it cannot be read)
    and why it cannot be a device certificate, whoever issued it (None when it can). Parsed and
    remembered once per distinct DER unless ``remember`` is false (for certificates that the TLS
    layer refused: nobody's to remember)."""
    if len(der) > MAX_DEVICE_CERTIFICATE_SIZE:
        return None, certificate_size_failure(der)
    try:
        device = presented_certificates.get(der) if remember else PresentedCertificate(der)
    except ValueError as error:
        return None, (UNREADABLE_CERTIFICATE, f"cannot parse the client certificate: {error}")
    return device, device.defect()


class _Course(NamedTuple):
    """How the procedure went, enough to write out its steps when someone asks."""

    device: PresentedCertificate | None  # None when step 1 found no readable certificate
    registered: bool  # the CA and serial were found registered at step 2
    ca_sn: str
    allowed: bool
    step: int
    reason: str
    detail: str

    def steps(self) -> tuple[Step, ...]:
        step = self.step
        if self.allowed:
            verdict = Step(step, f"allow: {self.detail}")
        else:
            verdict = Step(step, f"deny ({self.reason}): {self.detail}")
        device = self.device
        if device is None:
            return (verdict,)
        taken = [
            Step(1, f"device certificate CN={device.cn!r} Sn={device.device_sn} issuer={device.issuer_name}")
        ]
        if step == 1:  # the certificate itself is refused
            return (*taken, verdict)
        if self.registered:
            if step > 2:
                taken.append(Step(2, "registered and active: go to step 5"))
        else:
            taken.append(Step(2, "not registered: go to step 3"))
            if step > 3:
                taken.append(Step(3, f"issued by registered CA {self.ca_sn}"))
            if step > 4:
                taken.append(Step(4, f"CA {self.ca_sn} is active"))
        if step > 5:
            taken.append(Step(5, "signature, validity period, CA and key usage are valid"))
        taken.append(verdict)
        return tuple(taken)


@dataclass(frozen=True, slots=True)
class DeviceDecision:
    allowed: bool
    step: int
    reason: str
    detail: str
    certificate: x509.Certificate | None = None
    ca_sn: str = ""
    device_sn: str = ""
    cn: str = ""
    fingerprint: bytes = b""
    # True when the device is not registered yet: allowing it means registering it (step 6).
    needs_registration: bool = False
    # When an allowed certificate stops being valid: its notAfter, or its CA's when that is sooner.
    valid_until: datetime | None = None
    # What `trace` is written from: only `certmq explain` reads it, so the CONNECT path does not
    # pay for its sentences.
    _course: _Course | None = field(default=None, repr=False, compare=False)

    @property
    def trace(self) -> tuple[Step, ...]:
        """Each step as it was taken, for `certmq explain`."""
        return self._course.steps() if self._course is not None else ()


def _validity_failure(device: PresentedCertificate, now: datetime) -> Failure | None:
    if now < device.not_valid_before:
        return CERTIFICATE_NOT_YET_VALID, f"valid only from {device.not_valid_before.isoformat()}"
    if now > device.not_valid_after:
        return CERTIFICATE_EXPIRED, f"expired on {device.not_valid_after.isoformat()}"
    return None


def _extension_name(extension: x509.Extension[x509.ExtensionType]) -> str:
    value = extension.value
    known = "" if isinstance(value, x509.UnrecognizedExtension) else f"{type(value).__name__} "
    return f"{known}({extension.oid.dotted_string})"


def _weak_key(certificate: x509.Certificate) -> str | None:
    """What makes the certificate's key weaker than security level 2 allows, or None."""
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None  # a key the procedure cannot read is not one it can call weak
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey) and key.key_size < MIN_RSA_KEY_BITS:
        kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA"
        return f"a {key.key_size}-bit {kind} key, below the {MIN_RSA_KEY_BITS} bits required"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC_KEY_BITS:
        return f"a {key.curve.key_size}-bit {key.curve.name} key, below the {MIN_EC_KEY_BITS} bits required"
    return None


def _chain_failure(
    certificate: x509.Certificate, whose: str, understood: frozenset[ObjectIdentifier], unreadable: str
) -> Failure | None:
    """What OpenSSL's verification refuses in any certificate of a chain: extensions it cannot
    read (refused as ``unreadable``), a critical extension it does not understand (for a device
    certificate: one outside ``understood``)."""
    try:
        extensions = certificate.extensions
    except (ValueError, x509.DuplicateExtension) as error:
        return unreadable, f"cannot read the extensions of {whose}: {error}"
    for extension in extensions:
        if extension.critical and extension.oid not in understood:
            return (
                UNSUPPORTED_CRITICAL_EXTENSION,
                f"{whose} has critical extension {_extension_name(extension)}, which it may not carry",
            )
    return None


def _defect(certificate: x509.Certificate) -> Failure | None:
    """Step 1's checks of what the certificate says about itself (see :meth:`PresentedCertificate.defect`)."""
    failure = _chain_failure(
        certificate, "the device certificate", DEVICE_CRITICAL_EXTENSIONS, UNREADABLE_CERTIFICATE
    )
    if failure is not None:
        return failure
    for extension in certificate.extensions:  # parsed once, by the check above
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            return (
                CERTIFICATE_IS_A_CA,
                "basicConstraints CA:TRUE: a CA certificate is not a device certificate",
            )
        if isinstance(value, x509.KeyUsage) and value.key_cert_sign:
            return (
                CERTIFICATE_IS_A_CA,
                "key usage keyCertSign: a device certificate must not sign certificates",
            )
    return None


def _strength_failure(certificate: x509.Certificate) -> Failure | None:
    """The strength of the device's key and of its CA's signature on it (security level 2).
    Checked at step 5 when no full handshake has (loading an elliptic curve key costs more than
    the rest of a decision), not at step 1."""
    weakness = _weak_key(certificate)
    if weakness is not None:
        return WEAK_KEY, f"the device certificate has {weakness}"
    try:
        digest = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None  # and then its signature does not verify
    if isinstance(digest, WEAK_SIGNATURE_HASHES):
        return (
            WEAK_SIGNATURE,
            f"the device certificate is signed with {digest.name.upper()}, which is too weak",
        )
    return None


def _netscape_allows_ssl_client(value: bytes) -> bool:
    """The SSL client bit of a Netscape certificate type, a DER BIT STRING (03 len unused bits)."""
    return len(value) >= 4 and value[0] == 0x03 and bool(value[3] & 0x80)


def _usage_failure(certificate: x509.Certificate) -> Failure | None:
    """The rules of OpenSSL's "sslclient" purpose, the one a TLS server checks a client's certificate for."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.key_agreement):
        return WRONG_KEY_USAGE, "key usage allows neither digitalSignature nor keyAgreement"
    try:
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        extended = None
    if extended is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in extended:
        return WRONG_KEY_USAGE, "extended key usage does not include clientAuth"
    try:
        netscape = certificate.extensions.get_extension_for_oid(NETSCAPE_CERTIFICATE_TYPE).value
    except x509.ExtensionNotFound:
        netscape = None
    if isinstance(netscape, x509.UnrecognizedExtension) and not _netscape_allows_ssl_client(netscape.value):
        return WRONG_KEY_USAGE, "Netscape certificate type does not include SSL client"
    return None


class _CaFacts(NamedTuple):
    """What a registered CA certificate says by itself, worked out once per CA."""

    not_valid_before: datetime
    not_valid_after: datetime
    failure: Failure | None  # why it cannot have issued a valid device certificate, at any time


def _ca_failure(sn: str, certificate: x509.Certificate) -> Failure | None:
    """The checks OpenSSL makes of the issuing CA's certificate when it verifies a client's."""
    failure = _chain_failure(certificate, f"CA {sn}", CA_CRITICAL_EXTENSIONS, ISSUER_NOT_A_CA)
    if failure is not None:
        return failure
    weakness = _weak_key(certificate)
    if weakness is not None:
        return WEAK_KEY, f"CA {sn} has {weakness}"
    extensions = certificate.extensions
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        return ISSUER_NOT_A_CA, f"CA {sn} lacks basicConstraints CA:TRUE"
    try:
        issuer_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        issuer_usage = None
    if issuer_usage is not None and not issuer_usage.key_cert_sign:
        return ISSUER_NOT_A_CA, f"CA {sn} key usage does not allow signing certificates"
    return None


# By CA certificate fingerprint; a CA certificate's bytes never change, only whether it is registered.
_ca_facts: dict[bytes, _CaFacts] = {}
CA_FACTS_REMEMBERED = 4096


def _facts_of(ca: CaView) -> _CaFacts:
    facts = _ca_facts.get(ca.fingerprint)
    if facts is None:
        if len(_ca_facts) >= CA_FACTS_REMEMBERED:
            _ca_facts.clear()
        certificate = ca.certificate
        facts = _ca_facts[ca.fingerprint] = _CaFacts(
            certificate.not_valid_before_utc, certificate.not_valid_after_utc, _ca_failure(ca.sn, certificate)
        )
    return facts


def _ca_validity_failure(ca: CaView, facts: _CaFacts, now: datetime) -> Failure | None:
    if now < facts.not_valid_before:
        return CA_NOT_YET_VALID, f"CA {ca.sn} is valid only from {facts.not_valid_before.isoformat()}"
    if now > facts.not_valid_after:
        return CA_EXPIRED, f"CA {ca.sn} expired on {facts.not_valid_after.isoformat()}"
    return None


def _validate(
    device: PresentedCertificate, ca: CaView, facts: _CaFacts, now: datetime, verified: bool
) -> Failure | None:
    """Step 5: the checks that the device certificate must pass against its CA.

    ``verified``: this connection's full TLS handshake verified the certificate with this very
    CA's key. OpenSSL then checked its signature and the strength of its key and signature, and
    its key usages for a TLS client (the "sslclient" purpose that a server checks: the same rules
    as :func:`_usage_failure`), so these are not checked again. A resumed session verified
    nothing: then everything is checked here, in OpenSSL's order."""
    if not verified:
        failure = device.handshake_failure()
        if failure is not None:
            return failure
        try:
            device.certificate.verify_directly_issued_by(ca.certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as error:
            return (
                BAD_SIGNATURE,
                f"the signature does not verify with CA {ca.sn}: {str(error) or 'invalid signature'}",
            )
    return facts.failure or _validity_failure(device, now) or _ca_validity_failure(ca, facts, now)


def find_issuer(
    device: PresentedCertificate, index: TrustIndexView, verified_issuer: VerifiedIssuer | None
) -> CaView | None:
    """The registered CA that issued the device certificate, remembered while the index's CAs
    do not change: the one whose key verified it in the handshake when that one is registered,
    else the one the index finds by the certificate's names."""
    generation = getattr(index, "ca_generation", None)
    known = device.issuer
    if generation is not None and known is not None and known[0] == generation:
        return known[1]
    ca: CaView | None = None
    by_fingerprint = getattr(index, "ca_by_fingerprint", None)
    if verified_issuer is not None and by_fingerprint is not None:
        verified_by = verified_issuer()
        if verified_by is not None:
            ca = by_fingerprint(verified_by)
    if ca is None:
        ca = index.issuer_of(device.certificate)
    if generation is not None:
        device.issuer = (generation, ca)
    return ca


def decision_about(
    device: PresentedCertificate,
    ca_sn: str,
    registered: bool,
    step: int,
    reason: str,
    detail: str,
    *,
    allowed: bool = False,
    valid_until: datetime | None = None,
) -> DeviceDecision:
    return DeviceDecision(
        allowed,
        step,
        reason,
        detail,
        device.certificate,
        ca_sn,
        device.device_sn,
        device.cn,
        device.fingerprint,
        needs_registration=allowed and not registered,
        valid_until=valid_until,
        _course=_Course(device, registered, ca_sn, allowed, step, reason, detail),
    )


def _allow(device: PresentedCertificate, ca_sn: str, facts: _CaFacts, *, registered: bool) -> DeviceDecision:
    """Step 6: allowed until the certificate expires, or its CA's if that comes first."""
    if registered:
        reason, detail = REGISTERED_DEVICE, "registered and active"
    else:
        reason, detail = NEW_DEVICE, "new device: registered on this connection"
    valid_until = min(device.not_valid_after, facts.not_valid_after)
    return decision_about(device, ca_sn, registered, 6, reason, detail, allowed=True, valid_until=valid_until)


def _without_certificate(reason: str, detail: str) -> DeviceDecision:
    """A refusal at step 1 with no readable certificate to describe."""
    return DeviceDecision(
        False, 1, reason, detail, _course=_Course(None, False, "", False, 1, reason, detail)
    )


def decide_device(
    certificate_der: bytes | None,
    index: TrustIndexView,
    now: datetime | None = None,
    verified_issuer: VerifiedIssuer | None = None,
) -> DeviceDecision:
    """Run steps 1–5 of the decision procedure on the leaf certificate a client presented.

    ``verified_issuer``, from the TLS layer, names (by SHA-256 fingerprint) the certificate whose
    key verified the leaf's signature in this connection's handshake, or None. When that is a
    registered CA, it is the issuing CA (the certificate's names are not compared), and the
    signature and key usages that the handshake checked are not checked again.

    What the certificate's bytes say is parsed once per distinct DER (:data:`presented_certificates`);
    the registry (which CA issued it, the CA's and the device's status, the registered
    fingerprint) and the clock are read anew at every call. An allowed decision says until when
    the certificate stays valid (``valid_until``): the broker ends the session then."""
    # Step 1: the leaf certificate, its serial, issuer and fingerprint, and what it says of itself.
    if not certificate_der:
        return _without_certificate(NO_CLIENT_CERTIFICATE, "the client presented no certificate")
    device, defect = read_certificate(certificate_der)
    if device is None:
        assert defect is not None
        return _without_certificate(*defect)
    if defect is not None:
        return decision_about(device, "", False, 1, *defect)
    now = now or datetime.now(UTC)

    # Step 2: registered (same CA, same serial)?
    ca = find_issuer(device, index, verified_issuer)
    registered = None if ca is None else index.device(ca.sn, device.device_sn)
    if ca is not None and registered is not None:
        if registered.fingerprint != device.fingerprint:
            return decision_about(
                device,
                ca.sn,
                True,
                2,
                SERIAL_COLLISION,
                f"another certificate is registered with CA {ca.sn} and Sn {device.device_sn}",
            )
        if not registered.active:
            return decision_about(
                device, ca.sn, True, 2, DEVICE_INACTIVE, "the device certificate is registered and inactive"
            )
        # Step 5 also covers the CA's own status for a registered device.
        if not ca.active:
            return decision_about(device, ca.sn, True, 5, CA_INACTIVE, f"CA {ca.sn} is inactive")
        # A registered device presented the very bytes (same fingerprint) whose signature and
        # usages were checked when it was registered, so only what time changes is checked again.
        facts = _facts_of(ca)
        failure = _validity_failure(device, now) or _ca_validity_failure(ca, facts, now)
        if failure is not None:
            return decision_about(device, ca.sn, True, 5, *failure)
        # Step 6: allow.
        return _allow(device, ca.sn, facts, registered=True)

    # Step 3: not registered; the registered CA that issued it.
    if ca is None:
        return decision_about(
            device, "", False, 3, CA_NOT_REGISTERED, f"no registered CA issued it ({device.issuer_name})"
        )
    # Step 4: is that CA active?
    if not ca.active:
        return decision_about(device, ca.sn, False, 4, CA_INACTIVE, f"CA {ca.sn} is inactive")
    # Step 5: validate the certificate against the CA at the current time.
    # A full handshake has just verified it with this very CA certificate's key; a resumed one
    # verified nothing, and then the TLS layer names no issuer.
    verified = verified_issuer is not None and verified_issuer() == ca.fingerprint
    facts = _facts_of(ca)
    failure = _validate(device, ca, facts, now, verified)
    if failure is not None:
        return decision_about(device, ca.sn, False, 5, *failure)
    # Step 6: allow, registering the device (the caller's part).
    return _allow(device, ca.sn, facts, registered=False)
