"""Device certificates of unusual shapes, made with ``cryptography``: the ones openssl's command
line makes only with effort (a CA flag on a leaf, a 150 KB extension, an unknown critical
extension, a malformed key usage, a notAfter a few seconds from now)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from openssl_pki import Issued

# A private-enterprise OID that nothing understands.
PRIVATE_EXTENSION = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")
NETSCAPE_CERTIFICATE_TYPE = ObjectIdentifier("2.16.840.1.113730.1.1")

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def key_usage(*, digital_signature: bool = True, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ec_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Shape:
    """How a certificate is made; the defaults make an ordinary device certificate."""

    ca: bool | None = False  # basicConstraints cA; None: no basicConstraints extension
    usage: x509.KeyUsage | None = field(default_factory=key_usage)
    extended_usage: Sequence[ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,)
    valid_from: datetime.timedelta = datetime.timedelta(minutes=-5)  # from now
    valid_for: datetime.timedelta = datetime.timedelta(days=30)  # from valid_from
    # An exact notAfter instead (X.509 counts whole seconds).
    not_after: datetime.datetime | None = None
    # Extra extensions, each with its criticality.
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = ()
    key: Callable[[], Key] = ec_key


def unknown_extension(
    size: int, *, critical: bool = False, oid: ObjectIdentifier = PRIVATE_EXTENSION
) -> tuple[x509.ExtensionType, bool]:
    """An extension nobody understands whose value is an OCTET STRING of ``size`` bytes."""
    return x509.UnrecognizedExtension(oid, octet_string(size)), critical


def octet_string(size: int) -> bytes:
    if size < 0x80:
        header = bytes([0x04, size])
    else:
        length = size.to_bytes((size.bit_length() + 7) // 8, "big")
        header = bytes([0x04, 0x80 | len(length)]) + length
    return header + b"\x00" * size


def write(directory: Path, name: str, certificate: x509.Certificate, key: Key) -> tuple[Path, Path]:
    """``name``.pem and ``name``.key in ``directory``."""
    cert, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key_file


def issue(directory: Path, ca: Issued, name: str, shape: Shape = Shape()) -> Issued:
    """A certificate of ``shape`` issued by ``ca`` (whose key is an EC or RSA PEM file), written as
    certificate, key and chain (certificate + CA) files like :func:`openssl_pki.make_device`'s."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_certificate = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    key = shape.key()
    start = datetime.datetime.now(datetime.UTC) + shape.valid_from
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certmq tests"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(shape.not_after or start + shape.valid_for)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if shape.ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=shape.ca, path_length=None), critical=True)
    if shape.usage is not None:
        builder = builder.add_extension(shape.usage, critical=True)
    if shape.extended_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(shape.extended_usage)), critical=False)
    for extension, critical in shape.extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert, key_file = write(directory, name, builder.sign(ca_key, hashes.SHA256()), key)
    chain = directory / f"{name}-chain.pem"
    chain.write_text(cert.read_text() + ca.cert.read_text())
    return Issued(cert, key_file, chain)


def issue_ca(
    directory: Path,
    name: str,
    *,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    not_after: datetime.datetime | None = None,
) -> Issued:
    """A self-signed EC root CA, with extra ``extensions`` if given, valid from 5 minutes ago for
    30 days or until ``not_after``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certmq tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert, key_file = write(directory, name, builder.sign(key, hashes.SHA256()), key)
    return Issued(cert, key_file, cert)
