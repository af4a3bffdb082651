"""A TLS handshake refused on certificate grounds, described as the decision procedure
(:mod:`certmq.auth.decision`) would have decided it, so that the audit log tells one story
whether the handshake or the CONNECT refused a device."""

from __future__ import annotations

from certmq.auth.decision import (
    BAD_SIGNATURE,
    CA_EXPIRED,
    CA_NOT_REGISTERED,
    CA_NOT_YET_VALID,
    CERTIFICATE_EXPIRED,
    CERTIFICATE_INVALID,
    CERTIFICATE_NOT_YET_VALID,
    CERTIFICATE_TOO_LARGE,
    ISSUER_NOT_A_CA,
    NO_CLIENT_CERTIFICATE,
    UNSUPPORTED_CRITICAL_EXTENSION,
    WEAK_KEY,
    WEAK_SIGNATURE,
    WRONG_KEY_USAGE,
    DeviceDecision,
    TrustIndexView,
    decision_about,
    find_issuer,
    read_certificate,
)
from certmq.tls.verify_codes import VerifyCode

_V = VerifyCode
# The step and reason each OpenSSL verification result amounts to when OpenSSL found the fault
# in the device certificate (depth 0 of the chain)...
_VERIFY_CODES: dict[int, tuple[int, str]] = {
    _V.UNABLE_TO_GET_ISSUER_CERT: (3, CA_NOT_REGISTERED),
    _V.CERT_SIGNATURE_FAILURE: (5, BAD_SIGNATURE),
    _V.CERT_NOT_YET_VALID: (5, CERTIFICATE_NOT_YET_VALID),
    _V.CERT_HAS_EXPIRED: (5, CERTIFICATE_EXPIRED),
    _V.DEPTH_ZERO_SELF_SIGNED_CERT: (3, CA_NOT_REGISTERED),
    _V.SELF_SIGNED_CERT_IN_CHAIN: (3, CA_NOT_REGISTERED),
    _V.UNABLE_TO_GET_ISSUER_CERT_LOCALLY: (3, CA_NOT_REGISTERED),
    _V.UNABLE_TO_VERIFY_LEAF_SIGNATURE: (3, CA_NOT_REGISTERED),
    _V.INVALID_CA: (5, ISSUER_NOT_A_CA),
    _V.INVALID_PURPOSE: (5, WRONG_KEY_USAGE),
    _V.CERT_REJECTED: (5, WRONG_KEY_USAGE),
    _V.KEYUSAGE_NO_CERTSIGN: (5, ISSUER_NOT_A_CA),
    _V.UNHANDLED_CRITICAL_EXTENSION: (1, UNSUPPORTED_CRITICAL_EXTENSION),
    _V.EE_KEY_TOO_SMALL: (5, WEAK_KEY),
    _V.CA_KEY_TOO_SMALL: (5, WEAK_KEY),
    _V.CA_MD_TOO_WEAK: (5, WEAK_SIGNATURE),
}
# ... and where the same code means something else when the fault is in a CA certificate.
_CA_VERIFY_CODES: dict[int, tuple[int, str]] = {
    _V.CERT_NOT_YET_VALID: (5, CA_NOT_YET_VALID),
    _V.CERT_HAS_EXPIRED: (5, CA_EXPIRED),
    _V.UNHANDLED_CRITICAL_EXTENSION: (5, UNSUPPORTED_CRITICAL_EXTENSION),
    _V.CA_MD_TOO_WEAK: (5, WEAK_SIGNATURE),
}
# Where OpenSSL stops: it refuses a client's certificates (the whole chain) above this size.
TLS_CERTIFICATES_LIMIT = 100 * 1024


def decision_for_handshake_failure(
    error: BaseException, index: TrustIndexView | None = None
) -> DeviceDecision | None:
    """The decision that a TLS handshake refused on certificate grounds amounts to;
    None for failures that are not about the client certificate (the client hung up...).

    ``error`` is the TLS layer's: it carries OpenSSL's verification result as ``verify_code``,
    ``verify_depth`` and ``verify_message``, the failed step of the handshake as ``reason``, the
    DER of the refused client certificate as ``certificate`` when the handshake got that far,
    and ``after_server_hello`` when the server had answered the client's hello.

    A refused certificate is described as step 1 would describe it when step 1 rules it out, as
    `certmq explain` does, and by OpenSSL's verdict otherwise; its Sn, CN and fingerprint are given
    when it can be read, and its CA's Sn when ``index`` knows the CA and the step is past 3."""
    certificate = getattr(error, "certificate", None)
    device, defect = read_certificate(certificate, remember=False) if certificate else (None, None)
    verify_code = getattr(error, "verify_code", 0)
    if defect is not None:
        step, (reason, detail) = 1, defect
    elif verify_code:
        depth = getattr(error, "verify_depth", 0)
        known = _CA_VERIFY_CODES.get(verify_code) if depth else None
        step, reason = known or _VERIFY_CODES.get(verify_code, (5, CERTIFICATE_INVALID))
        detail = f"TLS handshake refused: {getattr(error, 'verify_message', None) or error}"
    elif getattr(error, "reason", None) in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"):
        return DeviceDecision(False, 1, NO_CLIENT_CERTIFICATE, "TLS handshake refused: no client certificate")
    elif getattr(error, "reason", None) == "EXCESSIVE_MESSAGE_SIZE" and getattr(
        error, "after_server_hello", False
    ):
        step, reason = 1, CERTIFICATE_TOO_LARGE
        detail = f"TLS handshake refused: the client's certificates exceed {TLS_CERTIFICATES_LIMIT} bytes"
    else:
        return None
    if device is None:
        return DeviceDecision(False, step, reason, detail)
    ca = find_issuer(device, index, None) if index is not None and step > 3 else None
    return decision_about(device, "" if ca is None else ca.sn, False, step, reason, detail)
