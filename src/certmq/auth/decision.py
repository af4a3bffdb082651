"""The mutual-authentication decision procedure (docs/certificates.md), step by step.

``decide_device`` runs steps 1–5 on the device certificate a connection presented, against
the in-memory trust index, and returns a :class:`DeviceDecision`: allow or deny, the step that
decided, a reason code and a sentence. It is synchronous and touches no database: step 6
(auto-registration) is the caller's, because it writes to the registry.

It runs at every CONNECT, also on resumed TLS sessions, whose handshake re-verified nothing:
the TLS layer's verification is never taken as proof that a device may connect now.

Handshakes that the TLS layer refused are described in the same terms by
:func:`decision_for_handshake_failure`, so the audit log tells one story.
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
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from certmq.pki import common_name, serial_hex

# Reasons, as recorded in the audit log and shown by `certmq explain`.
NO_CLIENT_CERTIFICATE = "no-client-certificate"
UNREADABLE_CERTIFICATE = "unreadable-certificate"
SERIAL_COLLISION = "serial-collision"
DEVICE_INACTIVE = "device-inactive"
CA_NOT_REGISTERED = "ca-not-registered"
CA_INACTIVE = "ca-inactive"
BAD_SIGNATURE = "bad-signature"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
ISSUER_NOT_A_CA = "issuer-not-a-ca"
WRONG_KEY_USAGE = "wrong-key-usage"
DEVICE_REVOKED = "device-revoked"
CERTIFICATE_INVALID = "certificate-invalid"
REGISTERED_DEVICE = "registered-device"
NEW_DEVICE = "new-device"


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


class DeviceCertificate:
    """What the DER bytes of a device certificate say by themselves: the parsed certificate, its
    Sn, CN, fingerprint, validity period and the checks of step 5 that need no CA. None of it
    depends on the registry or the time, so it is worked out once per distinct DER
    (:class:`DeviceCertificateCache`) and shared by every decision on those bytes."""

    __slots__ = (
        "_issuer_name",
        "_usage_failure",
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
        # Boxed once checked (the check may raise on a malformed extension, as it did unboxed).
        self._usage_failure: tuple[Failure | None] | None = None

    @property
    def issuer_name(self) -> str:
        """The issuer's distinguished name, as RFC 4514 writes it."""
        if self._issuer_name is None:
            self._issuer_name = self.certificate.issuer.rfc4514_string()
        return self._issuer_name

    def usage_failure(self) -> Failure | None:
        """The step 5 checks of the certificate's own key usages."""
        checked = self._usage_failure
        if checked is None:
            checked = self._usage_failure = (_usage_failure(self.certificate),)
        return checked[0]


class DeviceCertificateCache:
    """The :class:`DeviceCertificate` of each of the last ``capacity`` distinct DER byte strings
    seen, the oldest forgotten first. An entry holds the DER, the parsed certificate (with its
    extensions once step 5 has read them) and a few short strings: about 6 KB for an EC device
    certificate."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Ordered: the oldest is taken from the front, which a plain dict would find only after
        # stepping over the slots of every entry deleted before it.
        self._entries: OrderedDict[bytes, DeviceCertificate] = OrderedDict()
        # Lookups are single dict reads; adding and evicting take the lock, so that two threads
        # cannot both evict the same oldest entry.
        self._adding = threading.Lock()

    def get(self, der: bytes) -> DeviceCertificate:
        """What ``der`` says, parsed now if it is not remembered. Raises ValueError when ``der``
        is not a readable certificate (which is not remembered)."""
        known = self._entries.get(der)
        if known is not None:
            return known
        parsed = DeviceCertificate(der)
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
DEVICE_CERTIFICATES_REMEMBERED = 4096
device_certificates = DeviceCertificateCache(DEVICE_CERTIFICATES_REMEMBERED)


class _Course(NamedTuple):
    """How the procedure went, enough to write out its steps when someone asks."""

    device: DeviceCertificate | None  # None when step 1 found no readable certificate
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
            taken.append(Step(5, "signature, validity period, CA flag and key usage are valid"))
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
    # What `trace` is written from: only `certmq explain` reads it, so the CONNECT path does not
    # pay for its sentences.
    _course: _Course | None = field(default=None, repr=False, compare=False)

    @property
    def trace(self) -> tuple[Step, ...]:
        """Each step as it was taken, for `certmq explain`."""
        return self._course.steps() if self._course is not None else ()


def _validity_failure(device: DeviceCertificate, now: datetime) -> Failure | None:
    if now < device.not_valid_before:
        return CERTIFICATE_NOT_YET_VALID, f"valid only from {device.not_valid_before.isoformat()}"
    if now > device.not_valid_after:
        return CERTIFICATE_EXPIRED, f"expired on {device.not_valid_after.isoformat()}"
    return None


def _usage_failure(certificate: x509.Certificate) -> Failure | None:
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
    return None


def _validate(device: DeviceCertificate, ca: CaView, now: datetime, verified: bool) -> Failure | None:
    """Step 5: the checks that the device certificate must pass against its CA.

    ``verified``: this connection's full TLS handshake verified the certificate with this very
    CA's key. OpenSSL then checked its signature, and its key usages for a TLS client (the
    "sslclient" purpose that a server checks: the same rules as :func:`_usage_failure`), so these
    are not checked again. A resumed session verified nothing: then everything is checked here."""
    issuer = ca.certificate
    if not verified:
        try:
            device.certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as error:
            return (
                BAD_SIGNATURE,
                f"the signature does not verify with CA {ca.sn}: {error or 'invalid signature'}",
            )
    validity = _validity_failure(device, now)
    if validity is not None:
        return validity
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        return ISSUER_NOT_A_CA, f"CA {ca.sn} lacks basicConstraints CA:TRUE"
    try:
        issuer_usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        issuer_usage = None
    if issuer_usage is not None and not issuer_usage.key_cert_sign:
        return ISSUER_NOT_A_CA, f"CA {ca.sn} key usage does not allow signing certificates"
    return None if verified else device.usage_failure()


def _issuer(
    device: DeviceCertificate, index: TrustIndexView, verified_issuer: VerifiedIssuer | None
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


def _decision(
    device: DeviceCertificate,
    ca_sn: str,
    registered: bool,
    step: int,
    reason: str,
    detail: str,
    *,
    allowed: bool = False,
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
        allowed and not registered,
        _Course(device, registered, ca_sn, allowed, step, reason, detail),
    )


def _without_certificate(reason: str, detail: str) -> DeviceDecision:
    """A refusal at step 1: there is no certificate to describe."""
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

    What the certificate's bytes say is parsed once per distinct DER (:data:`device_certificates`);
    the registry (which CA issued it, the CA's and the device's status, the registered
    fingerprint) and the clock are read anew at every call."""
    # Step 1: the leaf certificate, its serial, issuer and fingerprint.
    if not certificate_der:
        return _without_certificate(NO_CLIENT_CERTIFICATE, "the client presented no certificate")
    try:
        device = device_certificates.get(certificate_der)
    except ValueError as error:
        return _without_certificate(UNREADABLE_CERTIFICATE, f"cannot parse the client certificate: {error}")
    now = now or datetime.now(UTC)

    # Step 2: registered (same CA, same serial)?
    ca = _issuer(device, index, verified_issuer)
    registered = None if ca is None else index.device(ca.sn, device.device_sn)
    if ca is not None and registered is not None:
        if registered.fingerprint != device.fingerprint:
            return _decision(
                device,
                ca.sn,
                True,
                2,
                SERIAL_COLLISION,
                f"another certificate is registered with CA {ca.sn} and Sn {device.device_sn}",
            )
        if not registered.active:
            return _decision(
                device, ca.sn, True, 2, DEVICE_INACTIVE, "the device certificate is registered and inactive"
            )
        # Step 5 also covers the CA's own status for a registered device.
        if not ca.active:
            return _decision(device, ca.sn, True, 5, CA_INACTIVE, f"CA {ca.sn} is inactive")
        # A registered device presented the very bytes (same fingerprint) whose signature and
        # usages were checked when it was registered, so only what time changes is checked again.
        failure = _validity_failure(device, now)
        if failure is not None:
            return _decision(device, ca.sn, True, 5, *failure)
        # Step 6: allow.
        return _decision(device, ca.sn, True, 6, REGISTERED_DEVICE, "registered and active", allowed=True)

    # Step 3: not registered; the registered CA that issued it.
    if ca is None:
        return _decision(
            device, "", False, 3, CA_NOT_REGISTERED, f"no registered CA issued it ({device.issuer_name})"
        )
    # Step 4: is that CA active?
    if not ca.active:
        return _decision(device, ca.sn, False, 4, CA_INACTIVE, f"CA {ca.sn} is inactive")
    # Step 5: validate the certificate against the CA at the current time.
    # A full handshake has just verified it with this very CA certificate's key; a resumed one
    # verified nothing, and then the TLS layer names no issuer.
    verified = verified_issuer is not None and verified_issuer() == ca.fingerprint
    failure = _validate(device, ca, now, verified)
    if failure is not None:
        return _decision(device, ca.sn, False, 5, *failure)
    # Step 6: allow, registering the device (the caller's part).
    return _decision(
        device, ca.sn, False, 6, NEW_DEVICE, "new device: registered on this connection", allowed=True
    )


# OpenSSL X509_V_ERR codes that a refused client certificate carries, as steps of the decision procedure.
_VERIFY_CODES: dict[int, tuple[int, str]] = {
    2: (3, CA_NOT_REGISTERED),  # unable to get issuer certificate
    7: (5, BAD_SIGNATURE),  # certificate signature failure
    9: (5, CERTIFICATE_NOT_YET_VALID),
    10: (5, CERTIFICATE_EXPIRED),
    18: (3, CA_NOT_REGISTERED),  # self-signed leaf
    19: (3, CA_NOT_REGISTERED),  # self-signed certificate in chain
    20: (3, CA_NOT_REGISTERED),  # unable to get local issuer certificate
    21: (3, CA_NOT_REGISTERED),  # unable to verify the first certificate
    24: (5, ISSUER_NOT_A_CA),  # invalid CA certificate
    26: (5, WRONG_KEY_USAGE),  # unsupported certificate purpose
    28: (5, WRONG_KEY_USAGE),  # certificate rejected
    32: (5, ISSUER_NOT_A_CA),  # key usage does not include certificate signing
}


def decision_for_handshake_failure(error: BaseException) -> DeviceDecision | None:
    """The decision that a TLS handshake refused on certificate grounds amounts to;
    None for failures that are not about the client certificate (the client hung up...).

    ``error`` is the TLS layer's: it carries OpenSSL's verification result as ``verify_code``
    and ``verify_message`` and the failed step of the handshake as ``reason``."""
    verify_code = getattr(error, "verify_code", None)
    if verify_code:
        step, reason = _VERIFY_CODES.get(verify_code, (5, CERTIFICATE_INVALID))
        message = getattr(error, "verify_message", None) or str(error)
        return DeviceDecision(False, step, reason, f"TLS handshake refused: {message}")
    if getattr(error, "reason", None) in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"):
        return DeviceDecision(False, 1, NO_CLIENT_CERTIFICATE, "TLS handshake refused: no client certificate")
    return None
