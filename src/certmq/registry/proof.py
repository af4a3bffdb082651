"""The certificate checks of a CA registration, proof of possession of the CA key.

:func:`check_ca_registration` runs the checks that need only the two certificates, in the order
of docs/api.md, "Errors"; the store then checks the registration code, uniqueness and the CA
limit in the same transaction that consumes the code and stores the CA.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from certmq.pki import PkiError, check_public_key, common_name, fingerprint_sha256, serial_hex
from certmq.registry.errors import CertificateContentError, RegisterCodeError
from certmq.registry.index import subject_key_identifier_of
from certmq.registry.store import NewCa

UTC_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def certificate_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_one_certificate(content: str | bytes, what: str) -> x509.Certificate:
    """The single PEM certificate in ``content``; CertificateContentError otherwise."""
    data = content.encode() if isinstance(content, str) else content
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise CertificateContentError(
            f"{what} is not a PEM X.509 certificate ({error}); "
            f"give the whole file, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----"
        ) from error
    if len(certificates) != 1:
        raise CertificateContentError(
            f"{what} holds {len(certificates)} certificates; give exactly one certificate"
        )
    return certificates[0]


def _check_is_ca(ca: x509.Certificate, now: datetime.datetime) -> None:
    subject = ca.subject.rfc4514_string()
    try:
        constraints: x509.BasicConstraints | None = ca.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError as error:
        raise CertificateContentError(
            f"the CA certificate {subject} has malformed extensions: {error}"
        ) from error
    if constraints is None or not constraints.ca:
        raise CertificateContentError(
            f"{subject} is not a CA certificate: it lacks basicConstraints CA:TRUE; "
            f"register the CA that issues the device certificates, not a device or server certificate"
        )
    try:
        usage: x509.KeyUsage | None = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise CertificateContentError(
            f"the CA certificate {subject} lacks the keyCertSign key usage, so it cannot issue certificates"
        )
    if now < ca.not_valid_before_utc:
        raise CertificateContentError(
            f"the CA certificate {subject} is not valid before {ca.not_valid_before_utc:{UTC_FORMAT}}; "
            f"register it then, or check this machine's clock"
        )
    if now > ca.not_valid_after_utc:
        raise CertificateContentError(
            f"the CA certificate {subject} expired at {ca.not_valid_after_utc:{UTC_FORMAT}}; "
            f"renew the CA certificate and register the new one"
        )
    try:
        check_public_key(ca.public_key())
    except (PkiError, UnsupportedAlgorithm, ValueError) as error:
        raise CertificateContentError(
            f"the CA certificate {subject} has an unsupported key: {error}"
        ) from error


def _check_proof(ca: x509.Certificate, verification: x509.Certificate) -> None:
    if verification.issuer != ca.subject:
        raise CertificateContentError(
            f"the verification certificate's issuer {verification.issuer.rfc4514_string()} is not the CA's "
            f"subject {ca.subject.rfc4514_string()}; issue the verification certificate with this CA"
        )
    try:
        verification.verify_directly_issued_by(ca)
    except InvalidSignature as error:
        raise CertificateContentError(
            "the verification certificate's signature does not verify with the CA's public key: it was "
            "not signed by this CA's private key; sign it with the key of the CA you register"
        ) from error
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise CertificateContentError(
            f"the verification certificate's signature cannot be verified with the CA's key ({error})"
        ) from error


def check_ca_registration(
    name: str, ca_content: str | bytes, verification_content: str | bytes, now: datetime.datetime
) -> NewCa:
    """Run the certificate checks of a CA registration in order and return the CA to store, with
    the code the verification certificate claims in its CN (still to be checked against the store)."""
    ca = parse_one_certificate(ca_content, "the CA certificate (CaContent)")
    verification = parse_one_certificate(
        verification_content, "the verification certificate (VerificationContent)"
    )
    _check_is_ca(ca, now)
    _check_proof(ca, verification)
    code = common_name(verification)
    if not code:
        raise RegisterCodeError(
            "the verification certificate has no Subject CN; its CN must be a registration code "
            "from GetRegisterCode (certmq ca code)"
        )
    return NewCa(
        sn=serial_hex(ca),
        name=name or common_name(ca) or ca.subject.rfc4514_string(),
        pem=certificate_pem(ca),
        fingerprint=fingerprint_sha256(ca),
        subject=ca.subject.rfc4514_string(),
        subject_der=ca.subject.public_bytes(),
        subject_key_identifier=subject_key_identifier_of(ca),
        valid_begin=ca.not_valid_before_utc,
        valid_end=ca.not_valid_after_utc,
        registration_code=code,
        verification_pem=certificate_pem(verification),
    )
