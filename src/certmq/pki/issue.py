"""Issuing certificates: root and intermediate CAs, server, device and verification certificates.

Every function is pure: it takes the issuer's certificate and key and the subject's public key, and
returns the signed certificate. Keys come from :func:`certmq.pki.keys.generate_key`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmq.pki.errors import InvalidNameError, KeyMismatchError, NotACertificateAuthorityError
from certmq.pki.keys import PrivateKey, PublicKey, check_public_key, generate_key, signature_hash
from certmq.pki.serial import random_serial

CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825  # the longest validity that Apple platforms accept for a TLS server certificate
DEVICE_VALID_DAYS = 365
VERIFICATION_VALID_DAYS = 30
# Certificates start a little in the past so that a peer whose clock lags accepts them at once.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A certificate with its private key, such as a CA that issues certificates."""

    certificate: x509.Certificate
    key: PrivateKey


def public_keys_match(certificate: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``key`` is the private key of ``certificate``."""
    return certificate.public_key() == key.public_key()


def check_certificate_authority(ca_cert: x509.Certificate, ca_key: PrivateKey) -> None:
    """Raise unless ``ca_cert`` may issue certificates and ``ca_key`` is its key."""
    subject = ca_cert.subject.rfc4514_string()
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise NotACertificateAuthorityError(
            f"{subject} is not a CA certificate (basicConstraints CA:TRUE is missing); issue from a CA"
        )
    try:
        usage = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise NotACertificateAuthorityError(f"{subject} lacks the keyCertSign key usage; it cannot issue")
    if not public_keys_match(ca_cert, ca_key):
        raise KeyMismatchError(f"the private key given for {subject} is not the key of that certificate")


def _common_name(cn: str) -> x509.Name:
    if not cn or len(cn) > 64:
        raise InvalidNameError(f"Subject CN {cn!r} must be 1 to 64 characters long")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(
    valid_days: int,
    issuer: x509.Certificate | None,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    start = not_before or now - BACKDATE
    if not_after is not None:
        return start, not_after
    end = now + datetime.timedelta(days=valid_days)
    # A certificate that outlives its issuer would stop verifying before its own end date anyway.
    if issuer is not None and issuer.not_valid_after_utc < end:
        end = issuer.not_valid_after_utc
    return start, end


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(check_public_key(issuer.public_key()))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _leaf_key_usage(public_key: PublicKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        # TLS 1.2 RSA key exchange encrypts the premaster secret to the certificate's key.
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_builder(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    cn: str,
    public_key: PublicKey,
    valid_days: int,
    serial: int | None,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
) -> x509.CertificateBuilder:
    check_certificate_authority(ca_cert, ca_key)
    public_key = check_public_key(public_key)
    start, end = _validity(valid_days, ca_cert, not_before, not_after)
    return (
        x509.CertificateBuilder()
        .subject_name(_common_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial or random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(public_key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )


def create_ca(
    cn: str,
    key: PrivateKey,
    issuer: CertifiedKey | None = None,
    *,
    valid_days: int = CA_VALID_DAYS,
    path_length: int | None = None,
    serial: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """A CA certificate for ``key``: self-signed (a root) when ``issuer`` is None, else an
    intermediate signed by ``issuer``. basicConstraints CA:TRUE, keyUsage keyCertSign and cRLSign,
    subject and authority key identifiers."""
    public_key = check_public_key(key.public_key())
    name = _common_name(cn)
    if issuer is not None:
        check_certificate_authority(issuer.certificate, issuer.key)
    start, end = _validity(valid_days, issuer.certificate if issuer else None, not_before, not_after)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(public_key)
        .serial_number(serial or random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            _authority_key_identifier(issuer.certificate)
            if issuer
            else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
    )
    signer = issuer.key if issuer else key
    return builder.sign(signer, signature_hash(signer))


def _subject_alternative_names(sans: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san.strip("[]"))))
            continue
        except ValueError:
            pass
        if not san or len(san) > 253 or any(c.isspace() for c in san):
            raise InvalidNameError(
                f"subject alternative name {san!r} is neither an IP address nor a DNS name"
            )
        names.append(x509.DNSName(san))
    return x509.SubjectAlternativeName(names)


def issue_server_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    cn: str,
    sans: list[str],
    public_key: PublicKey,
    *,
    valid_days: int = SERVER_VALID_DAYS,
    serial: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """A TLS server certificate (extendedKeyUsage serverAuth). ``sans`` holds DNS names and IP
    addresses (``"localhost"``, ``"127.0.0.1"``, ``"::1"``); clients match the host they dial
    against these, not against the CN, so the CN is added to them when it is missing."""
    if cn not in sans:
        sans = [cn, *sans]
    builder = _leaf_builder(ca_cert, ca_key, cn, public_key, valid_days, serial, not_before, not_after)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    ).add_extension(_subject_alternative_names(sans), critical=False)
    return builder.sign(ca_key, signature_hash(ca_key))


def issue_device_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    cn: str,
    public_key: PublicKey,
    *,
    valid_days: int = DEVICE_VALID_DAYS,
    serial: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """A device (TLS client) certificate: Subject CN = the device name, extendedKeyUsage clientAuth,
    keyUsage digitalSignature. ``serial`` is random unless given."""
    builder = _leaf_builder(ca_cert, ca_key, cn, public_key, valid_days, serial, not_before, not_after)
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, signature_hash(ca_key))


def issue_verification_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    code: str,
    public_key: PublicKey | None = None,
    *,
    valid_days: int = VERIFICATION_VALID_DAYS,
) -> x509.Certificate:
    """The proof that the holder of ``ca_key`` registers the CA: Subject CN = the
    registration ``code``, signed by the CA. Its own key is irrelevant to the proof, so a
    throw-away key is used unless ``public_key`` is given."""
    if public_key is None:
        public_key = generate_key("ec").public_key()
    builder = _leaf_builder(ca_cert, ca_key, code, public_key, valid_days, None, None, None)
    return builder.sign(ca_key, signature_hash(ca_key))
