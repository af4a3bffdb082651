"""A throwaway CA and a localhost server certificate for the brokers the benchmark starts.

The reference broker gets a certificate of the same kind (key type and size) as the one
certmq serves, so that both TLS listeners do the same cryptographic work per handshake
and per record.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyKind:
    """``ec`` with a curve name, or ``rsa`` with a size in bits."""

    algorithm: str
    parameter: str

    def __str__(self) -> str:
        return f"{self.algorithm.upper()} {self.parameter}"

    def generate(self) -> PrivateKey:
        if self.algorithm == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=int(self.parameter))
        curve = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1(), "secp521r1": ec.SECP521R1()}
        return ec.generate_private_key(curve[self.parameter])


DEFAULT_KEY_KIND = KeyKind("ec", "secp256r1")


@dataclass(frozen=True)
class ServerCertificate:
    ca_file: Path
    cert_file: Path
    key_file: Path
    key_kind: KeyKind


def key_kind_of(certificate_pem: str) -> KeyKind:
    """The key type of a PEM certificate."""
    public_key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyKind("rsa", str(public_key.key_size))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyKind("ec", public_key.curve.name)
    raise ValueError(f"unsupported server key type {type(public_key).__name__}")


def served_key_kind(port: int) -> KeyKind:
    """The key type of the certificate a TLS listener on 127.0.0.1:port presents."""
    return key_kind_of(ssl.get_server_certificate(("127.0.0.1", port), timeout=10))


def _signing_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    return (
        hashes.SHA384()
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256
        else hashes.SHA256()
    )


def _write_key(key: PrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def make_server_certificate(directory: Path, key_kind: KeyKind = DEFAULT_KEY_KIND) -> ServerCertificate:
    """Write ca.pem, server.pem and server.key for localhost / 127.0.0.1 into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = key_kind.generate()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certmq benchmark CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, _signing_hash(ca_key))
    )

    server_key = key_kind.generate()
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, _signing_hash(ca_key))
    )

    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, key_file)
    key_file.chmod(0o600)
    return ServerCertificate(ca_file, cert_file, key_file, key_kind)
