"""Certificate serial numbers, fingerprints and names as certmq reads and writes them (``Sn``)."""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID


def serial_hex(value: x509.Certificate | int) -> str:
    """The ``Sn`` of a certificate (or of a serial number): lower-case hex of the DER INTEGER
    content octets. A leading ``00`` is kept when the high bit of the first octet is set, because
    DER needs it to keep the number positive (``0x80`` -> ``"0080"``)."""
    number = value.serial_number if isinstance(value, x509.Certificate) else value
    magnitude = number if number >= 0 else ~number
    length = magnitude.bit_length() // 8 + 1
    return number.to_bytes(length, "big", signed=True).hex()


def random_serial() -> int:
    """A positive random serial whose DER content is at most 20 octets (RFC 5280 4.1.2.2):
    159 random bits, so that no sign octet is ever needed beyond the 20."""
    while True:
        number = int.from_bytes(os.urandom(20), "big") >> 1
        if number:
            return number


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER encoding."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def common_name(certificate: x509.Certificate) -> str:
    """The certificate's first Subject CN (a device's DeviceName), or "" when it has none."""
    try:
        attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    if not attributes:
        return ""
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
