"""The mutual-authentication decision procedure (SPEC 3), step by step.

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

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


class CaView(Protocol):
    @property
    def sn(self) -> str: ...
    @property
    def certificate(self) -> x509.Certificate: ...
    @property
    def active(self) -> bool: ...


class DeviceView(Protocol):
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def active(self) -> bool: ...


class TrustIndexView(Protocol):
    """What the procedure reads: the registry's in-memory index."""

    def issuer_of(self, certificate: x509.Certificate) -> CaView | None: ...
    def device(self, ca_sn: str, device_sn: str) -> DeviceView | None: ...


@dataclass(frozen=True, slots=True)
class Step:
    number: int
    text: str


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
    # Each step as it was taken, for `certmq explain`.
    trace: tuple[Step, ...] = ()


def _validity_failure(certificate: x509.Certificate, now: datetime) -> tuple[str, str] | None:
    if now < certificate.not_valid_before_utc:
        return CERTIFICATE_NOT_YET_VALID, f"valid only from {certificate.not_valid_before_utc.isoformat()}"
    if now > certificate.not_valid_after_utc:
        return CERTIFICATE_EXPIRED, f"expired on {certificate.not_valid_after_utc.isoformat()}"
    return None


def _validate(certificate: x509.Certificate, ca: CaView, now: datetime) -> tuple[str, str] | None:
    """Step 5: the checks that the device certificate must pass against its CA."""
    issuer = ca.certificate
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as error:
        return BAD_SIGNATURE, f"the signature does not verify with CA {ca.sn}: {error or 'invalid signature'}"
    validity = _validity_failure(certificate, now)
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


def decide_device(
    certificate_der: bytes | None, index: TrustIndexView, now: datetime | None = None
) -> DeviceDecision:
    """Run SPEC 3 steps 1–5 on the leaf certificate a client presented."""
    trace: list[Step] = []
    facts = DeviceDecision(False, 1, "", "")

    def deny(step: int, reason: str, detail: str) -> DeviceDecision:
        trace.append(Step(step, f"deny ({reason}): {detail}"))
        return replace(facts, step=step, reason=reason, detail=detail, trace=tuple(trace))

    # Step 1: the leaf certificate, its serial, issuer and fingerprint.
    if not certificate_der:
        return deny(1, NO_CLIENT_CERTIFICATE, "the client presented no certificate")
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except ValueError as error:
        return deny(1, UNREADABLE_CERTIFICATE, f"cannot parse the client certificate: {error}")
    now = now or datetime.now(UTC)
    device_sn = serial_hex(certificate)
    cn = common_name(certificate)
    issuer_name = certificate.issuer.rfc4514_string()
    facts = replace(
        facts,
        certificate=certificate,
        device_sn=device_sn,
        cn=cn,
        fingerprint=hashlib.sha256(certificate_der).digest(),
    )
    trace.append(Step(1, f"device certificate CN={cn!r} Sn={device_sn} issuer={issuer_name}"))

    # Step 2: registered (same CA, same serial)?
    ca = index.issuer_of(certificate)
    device = None
    if ca is not None:
        facts = replace(facts, ca_sn=ca.sn)
        device = index.device(ca.sn, device_sn)
    if ca is not None and device is not None:
        if device.fingerprint != facts.fingerprint:
            return deny(
                2, SERIAL_COLLISION, f"another certificate is registered with CA {ca.sn} and Sn {device_sn}"
            )
        if not device.active:
            return deny(2, DEVICE_INACTIVE, "the device certificate is registered and inactive")
        trace.append(Step(2, "registered and active: go to step 5"))
        # Step 5 also covers the CA's own status for a registered device.
        if not ca.active:
            return deny(5, CA_INACTIVE, f"CA {ca.sn} is inactive")
    else:
        trace.append(Step(2, "not registered: go to step 3"))
        # Step 3: the registered CA that issued it.
        if ca is None:
            return deny(3, CA_NOT_REGISTERED, f"no registered CA issued it ({issuer_name})")
        trace.append(Step(3, f"issued by registered CA {ca.sn}"))
        # Step 4: is that CA active?
        if not ca.active:
            return deny(4, CA_INACTIVE, f"CA {ca.sn} is inactive")
        trace.append(Step(4, f"CA {ca.sn} is active"))

    # Step 5: validate the certificate against the CA at the current time. A registered device
    # presented the very bytes (same fingerprint) whose signature and usages were checked when
    # it was registered, so only what time changes is checked again.
    failure = _validity_failure(certificate, now) if device is not None else _validate(certificate, ca, now)
    if failure is not None:
        return deny(5, *failure)
    trace.append(Step(5, "signature, validity period, CA flag and key usage are valid"))

    # Step 6: allow (registering the device if it is new: the caller's part).
    if device is not None:
        reason, detail = REGISTERED_DEVICE, "registered and active"
    else:
        reason, detail = NEW_DEVICE, "new device: registered on this connection"
    trace.append(Step(6, f"allow: {detail}"))
    return replace(
        facts,
        allowed=True,
        step=6,
        reason=reason,
        detail=detail,
        needs_registration=device is None,
        trace=tuple(trace),
    )


# OpenSSL X509_V_ERR codes that a refused client certificate carries, as SPEC 3 steps.
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
    """The SPEC 3 decision that a TLS handshake refused on certificate grounds amounts to;
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
