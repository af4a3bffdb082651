"""PEM files and PKCS#12 bundles.

Files are written atomically (a temporary file in the same directory, then a rename), so a reader
never sees half a certificate. Private keys are created with mode 0600 from the first byte.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certmq.pki.errors import KeyMismatchError, PemFileError, RefusingToOverwriteError, UnsupportedKeyError
from certmq.pki.issue import CertifiedKey, check_certificate_authority, public_keys_match
from certmq.pki.keys import PrivateKey, check_public_key

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
PUBLIC_FILE_MODE = 0o644
SECRET_FILE_MODE = 0o600


def write_file_atomically(path: Path, data: bytes, mode: int, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` with ``mode`` so that ``path`` holds either the old or the new
    content, never a mix; with ``overwrite=False`` an existing file is an error."""
    if not overwrite and path.exists():
        raise RefusingToOverwriteError(f"{path} exists; remove it or choose another output directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def certificates_pem(*certificates: x509.Certificate) -> bytes:
    """The PEM encoding of ``certificates``, in order (leaf first for a chain)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the file mode protects it, as with mosquitto's and nginx's keys."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_certificates(path: Path, *certificates: x509.Certificate, overwrite: bool = True) -> None:
    """Write one certificate, or a chain leaf first, as PEM (mode 0644)."""
    write_file_atomically(path, certificates_pem(*certificates), PUBLIC_FILE_MODE, overwrite=overwrite)


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = True) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only (mode 0600)."""
    write_file_atomically(path, private_key_pem(key), SECRET_FILE_MODE, overwrite=overwrite)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise PemFileError(f"cannot read {what} file {path}: {error.strerror}") from None


def parse_certificates(data: bytes, source: str = "PEM data") -> list[x509.Certificate]:
    """Every certificate in PEM ``data``, in order; PemFileError when there is none."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PemFileError(
            f"{source} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ) from None
    return certificates


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----")


def certificate_ders(data: bytes, source: str = "PEM data") -> list[bytes]:
    """The DER bytes of every PEM certificate in ``data``, in order, as they are: not parsed, so
    that a certificate that does not parse is still there to be judged (as a TLS peer would send
    it). PemFileError when there is none."""
    try:
        blocks = [base64.b64decode(body) for body in _PEM_CERTIFICATE.findall(data)]
    except binascii.Error as error:
        raise PemFileError(f"{source} holds a PEM certificate that is not base64: {error}") from None
    blocks = [block for block in blocks if block]
    if not blocks:
        raise PemFileError(f"{source} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")
    return blocks


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in the PEM file ``path``, in order (a chain: leaf first)."""
    return parse_certificates(_read(path, "certificate"), str(path))


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate in the PEM file ``path``."""
    return load_certificates(path)[0]


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKey:
    """The RSA or EC private key in the PEM file ``path``."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as error:
        raise PemFileError(f"{path} holds no usable PEM private key: {error}") from None
    check_public_key(key.public_key())
    if not isinstance(key, PrivateKey):
        raise UnsupportedKeyError(f"{path}: {type(key).__name__} is not supported; use an RSA or EC key")
    return key


def load_certified_key(cert_path: Path, key_path: Path) -> tuple[list[x509.Certificate], PrivateKey]:
    """A certificate chain (leaf first) and the leaf's private key, checked to belong together."""
    chain = load_certificates(cert_path)
    key = load_private_key(key_path)
    if not public_keys_match(chain[0], key):
        raise KeyMismatchError(f"{key_path} is not the private key of the certificate in {cert_path}")
    return chain, key


def write_ca_dir(directory: Path, ca: CertifiedKey, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``ca.pem`` and ``ca.key`` into ``directory``; returns their paths."""
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not overwrite:
        for path in (cert_path, key_path):
            if path.exists():
                raise RefusingToOverwriteError(f"{path} exists; remove it or choose another directory")
    write_private_key(key_path, ca.key)
    write_certificates(cert_path, ca.certificate)
    return cert_path, key_path


def load_ca_dir(directory: Path) -> CertifiedKey:
    """The CA in ``directory`` (``ca.pem`` and ``ca.key``), checked to be a CA with its own key."""
    chain, key = load_certified_key(directory / CA_CERT_FILE, directory / CA_KEY_FILE)
    check_certificate_authority(chain[0], key)
    return CertifiedKey(chain[0], key)


def pkcs12_bundle(
    certificate: x509.Certificate,
    key: PrivateKey,
    chain: list[x509.Certificate] | None = None,
    *,
    password: bytes | None = None,
    name: str | None = None,
) -> bytes:
    """A PKCS#12 bundle of ``certificate``, its ``key`` and the ``chain`` above it, encrypted with
    ``password`` when one is given (Java and .NET clients usually want one)."""
    if not public_keys_match(certificate, key):
        raise KeyMismatchError("the private key is not the key of the certificate to bundle")
    if name is None:
        attributes = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        name = str(attributes[0].value) if attributes else "certificate"
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, certificate, chain or None, encryption)
