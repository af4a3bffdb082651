"""X.509 for certmq: keys, issuing (CA, server, device, verification certificates), the ``Sn``
serial format (docs/api.md, "Conventions"), and PEM / PKCS#12 files.

>>> from certmq import pki
>>> ca_key = pki.generate_key("ec")
>>> ca = pki.create_ca("Example Root CA", ca_key)
>>> device_key = pki.generate_key("rsa")
>>> device = pki.issue_device_certificate(ca, ca_key, "device-0001", device_key.public_key())
>>> device.issuer == ca.subject
True
"""

from certmq.pki.errors import (
    InvalidNameError,
    KeyMismatchError,
    NotACertificateAuthorityError,
    PemFileError,
    PkiError,
    RefusingToOverwriteError,
    UnsupportedKeyError,
)
from certmq.pki.files import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    PUBLIC_FILE_MODE,
    SECRET_FILE_MODE,
    certificate_ders,
    certificates_pem,
    load_ca_dir,
    load_certificate,
    load_certificates,
    load_certified_key,
    load_private_key,
    parse_certificates,
    pkcs12_bundle,
    private_key_pem,
    write_ca_dir,
    write_certificates,
    write_file_atomically,
    write_private_key,
)
from certmq.pki.issue import (
    CA_VALID_DAYS,
    DEVICE_VALID_DAYS,
    SERVER_VALID_DAYS,
    VERIFICATION_VALID_DAYS,
    CertifiedKey,
    check_certificate_authority,
    create_ca,
    issue_device_certificate,
    issue_server_certificate,
    issue_verification_certificate,
    public_keys_match,
)
from certmq.pki.keys import KEY_KINDS, KeyKind, PrivateKey, PublicKey, check_public_key, generate_key
from certmq.pki.serial import common_name, fingerprint_sha256, random_serial, serial_hex

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_VALID_DAYS",
    "DEVICE_VALID_DAYS",
    "KEY_KINDS",
    "PUBLIC_FILE_MODE",
    "SECRET_FILE_MODE",
    "SERVER_VALID_DAYS",
    "VERIFICATION_VALID_DAYS",
    "CertifiedKey",
    "InvalidNameError",
    "KeyKind",
    "KeyMismatchError",
    "NotACertificateAuthorityError",
    "PemFileError",
    "PkiError",
    "PrivateKey",
    "PublicKey",
    "RefusingToOverwriteError",
    "UnsupportedKeyError",
    "certificate_ders",
    "certificates_pem",
    "check_certificate_authority",
    "check_public_key",
    "common_name",
    "create_ca",
    "fingerprint_sha256",
    "generate_key",
    "issue_device_certificate",
    "issue_server_certificate",
    "issue_verification_certificate",
    "load_ca_dir",
    "load_certificate",
    "load_certificates",
    "load_certified_key",
    "load_private_key",
    "parse_certificates",
    "pkcs12_bundle",
    "private_key_pem",
    "public_keys_match",
    "random_serial",
    "serial_hex",
    "write_ca_dir",
    "write_certificates",
    "write_file_atomically",
    "write_private_key",
]
