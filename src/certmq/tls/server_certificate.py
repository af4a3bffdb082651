"""Storing a replacement server certificate so that it survives a restart."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SERVER_DIR = "server"


def check_server_pair(chain_pem: str, key_pem: str) -> list[x509.Certificate]:
    """Parse a chain and key; ValueError with a clear message when they cannot serve."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as error:
        raise ValueError(f"the certificate is not PEM X.509: {error}") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"the key is not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError("the key must be RSA or ECDSA")
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise ValueError("the key does not belong to the first certificate of the chain")
    now = datetime.now(UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ValueError(
            f"the certificate is not valid now (valid {leaf.not_valid_before_utc:%Y-%m-%d} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d})"
        )
    return chain


def _write_private(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def store_server_certificate(data_dir: Path, chain_pem: str, key_pem: str) -> tuple[Path, Path]:
    """Check the pair and write it as DIR/server/server-<time>.pem and .key (key 0600)."""
    check_server_pair(chain_pem, key_pem)
    directory = data_dir / SERVER_DIR
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    cert_file = directory / f"server-{stamp}.pem"
    key_file = directory / f"server-{stamp}.key"
    _write_private(key_file, key_pem.encode(), 0o600)
    _write_private(cert_file, chain_pem.encode(), 0o644)
    return cert_file, key_file
