"""Secrets at rest: how an instance makes its secrets and seals them with its instance key.

A sealed secret is ``base64(nonce || AES-256-GCM(instance key, nonce, secret, aad))`` with a
12-byte random nonce. An AccessKey's secret is sealed with ``aad = b"certmq access key " + id``,
so that a sealed secret cannot be moved to another key id; its ``credentials.json`` entry is
``{"id", "secret" (sealed), "created_at"}`` (the file's layout: :mod:`certmq.instance`).
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
ACCESS_KEY_ID_PREFIX = "LTAI"
_ALPHANUMERIC = string.ascii_letters + string.digits


class SecretDoesNotOpen(Exception):
    """A sealed secret does not open with this key and associated data."""


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An AccessKey pair for Signature-mode CONNECT credentials and API request signatures."""

    id: str
    secret: str
    created_at: str  # ISO 8601, UTC

    def __repr__(self) -> str:
        return f"AccessKey(id={self.id!r}, secret=<hidden>, created_at={self.created_at!r})"


def new_admin_token() -> str:
    """32 random bytes, URL-safe base64, never starting with "-": a token that did would be
    read as an option by ``certmq … --token TOKEN`` (one in 64 did)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def new_access_key() -> AccessKey:
    """A fresh pair: id ``LTAI`` + 20 letters and digits, a 30-character secret."""
    key_id = ACCESS_KEY_ID_PREFIX + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(20))
    secret = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(30))
    created_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return AccessKey(key_id, secret, created_at)


def seal_secret(instance_key: bytes, secret: str, associated_data: bytes) -> str:
    """Encrypt ``secret`` with the instance key (AES-256-GCM); base64 of nonce + ciphertext."""
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = AESGCM(instance_key).encrypt(nonce, secret.encode(), associated_data)
    return base64.b64encode(nonce + ciphertext).decode()


def open_secret(instance_key: bytes, sealed: str, associated_data: bytes) -> str:
    """The secret that :func:`seal_secret` sealed; SecretDoesNotOpen if the key or data do not match."""
    try:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(instance_key).decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], associated_data).decode()
    except (InvalidTag, ValueError) as error:
        raise SecretDoesNotOpen(
            "a sealed secret does not open with this instance key; "
            "instance.key and credentials.json must come from the same instance"
        ) from error


def _access_key_aad(access_key_id: str) -> bytes:
    return b"certmq access key " + access_key_id.encode()


def seal_access_key(instance_key: bytes, access_key: AccessKey) -> dict[str, str]:
    """The ``credentials.json`` entry of ``access_key``."""
    return {
        "id": access_key.id,
        "secret": seal_secret(instance_key, access_key.secret, _access_key_aad(access_key.id)),
        "created_at": access_key.created_at,
    }


def open_access_keys(instance_key: bytes, entries: Iterable[dict[str, Any]]) -> list[AccessKey]:
    """The AccessKeys of ``credentials.json`` entries, in their order. Raises KeyError or
    TypeError for a malformed entry, SecretDoesNotOpen for a secret sealed with another key."""
    return [
        AccessKey(
            entry["id"],
            open_secret(instance_key, entry["secret"], _access_key_aad(entry["id"])),
            entry.get("created_at", ""),
        )
        for entry in entries
    ]
