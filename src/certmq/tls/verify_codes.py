"""OpenSSL's certificate verification results (its ``X509_V_ERR_*`` codes) that a refused client
certificate usually carries, and OpenSSL's text for each.

The TLS layer reports them (:class:`certmq.tls.connection.HandshakeError`); the decision
procedure says which of its steps each one amounts to
(:mod:`certmq.auth.handshake_refusal`).
"""

from __future__ import annotations

from enum import IntEnum


class VerifyCode(IntEnum):
    UNABLE_TO_GET_ISSUER_CERT = 2
    CERT_SIGNATURE_FAILURE = 7
    CERT_NOT_YET_VALID = 9
    CERT_HAS_EXPIRED = 10
    DEPTH_ZERO_SELF_SIGNED_CERT = 18
    SELF_SIGNED_CERT_IN_CHAIN = 19
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
    UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
    INVALID_CA = 24
    INVALID_PURPOSE = 26
    CERT_REJECTED = 28
    KEYUSAGE_NO_CERTSIGN = 32
    UNHANDLED_CRITICAL_EXTENSION = 34
    # The verify callback refused a certificate that OpenSSL accepted.
    APPLICATION_VERIFICATION = 50
    EE_KEY_TOO_SMALL = 66
    CA_KEY_TOO_SMALL = 67
    CA_MD_TOO_WEAK = 68


_V = VerifyCode
VERIFY_MESSAGES: dict[int, str] = {
    _V.UNABLE_TO_GET_ISSUER_CERT: "unable to get issuer certificate",
    _V.CERT_SIGNATURE_FAILURE: "certificate signature failure",
    _V.CERT_NOT_YET_VALID: "certificate is not yet valid",
    _V.CERT_HAS_EXPIRED: "certificate has expired",
    _V.DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
    _V.SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in certificate chain",
    _V.UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate",
    _V.UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unable to verify the first certificate",
    _V.INVALID_CA: "invalid CA certificate",
    _V.INVALID_PURPOSE: "unsupported certificate purpose",
    _V.CERT_REJECTED: "certificate rejected",
    _V.KEYUSAGE_NO_CERTSIGN: "key usage does not include certificate signing",
    _V.UNHANDLED_CRITICAL_EXTENSION: "unhandled critical extension",
    _V.EE_KEY_TOO_SMALL: "EE certificate key too weak",
    _V.CA_KEY_TOO_SMALL: "CA certificate key too weak",
    _V.CA_MD_TOO_WEAK: "CA signature digest algorithm too weak",
}
"""OpenSSL's text for each code (X509_verify_cert_error_string)."""
