"""AccessKey pairs of a running instance: create, list, delete.

The pairs live in the instance's ``credentials.json`` (see :mod:`certmq.instance`), their secrets
sealed with the instance key. :attr:`AccessKeyStore.secrets` is a live read-only mapping
AccessKeyId → AccessKeySecret: the Signature check and the RPC request signatures read it, so a
key created through the API works at once and a deleted one stops working at once, without a
restart.

Every change is written to ``credentials.json`` (atomically, mode 0600) before it takes effect
in memory and before the caller is answered.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from certmq.instance import Instance, InstanceError, read_credentials, write_credentials
from certmq.sealed_secrets import (
    AccessKey,
    SecretDoesNotOpen,
    new_access_key,
    open_access_keys,
    seal_access_key,
)


class AccessKeyNotFound(Exception):
    """No AccessKey pair has this id."""

    code = "InvalidAccessKeyId.NotFound"
    http_status = 404


@dataclass(frozen=True, slots=True)
class AccessKeyInfo:
    """What may be shown of a pair after its creation: never the secret."""

    id: str
    created_at: str  # ISO 8601, UTC


class AccessKeyStore:
    """The AccessKey pairs in ``data_dir/credentials.json``, sealed with ``instance_key``."""

    def __init__(self, data_dir: Path, instance_key: bytes) -> None:
        self.data_dir = data_dir
        self._instance_key = instance_key
        self._lock = threading.Lock()
        self._keys: dict[str, AccessKey] = {}
        self._secrets: dict[str, str] = {}
        # Changed in place, so that every holder of this view sees new and deleted keys at once.
        self.secrets: Mapping[str, str] = MappingProxyType(self._secrets)
        self._load(read_credentials(data_dir))

    @classmethod
    def for_instance(cls, instance: Instance) -> AccessKeyStore:
        return cls(instance.data_dir, instance.instance_key)

    def _load(self, credentials: dict[str, Any]) -> None:
        try:
            keys = open_access_keys(self._instance_key, credentials["access_keys"])
        except (KeyError, TypeError) as error:
            raise InstanceError(f"credentials.json: missing or malformed field {error}") from None
        except SecretDoesNotOpen as error:
            raise InstanceError(str(error)) from error
        self._keys.clear()
        self._keys.update((key.id, key) for key in keys)
        self._secrets.clear()
        self._secrets.update((key.id, key.secret) for key in keys)

    def list(self) -> list[AccessKeyInfo]:
        """Every pair, oldest first (in the order of the file), without secrets."""
        return [AccessKeyInfo(key.id, key.created_at) for key in self._keys.values()]

    def create(self) -> AccessKey:
        """A new pair, stored before it is returned. Its secret is shown to the caller this once."""
        with self._lock:
            access_key = new_access_key()
            credentials = read_credentials(self.data_dir)
            credentials["access_keys"] = [
                *credentials.get("access_keys", []),
                seal_access_key(self._instance_key, access_key),
            ]
            write_credentials(self.data_dir, credentials)
            self._keys[access_key.id] = access_key
            self._secrets[access_key.id] = access_key.secret
            return access_key

    def delete(self, access_key_id: str) -> None:
        """Remove a pair: clients and API callers signing with it are refused from now on."""
        with self._lock:
            credentials = read_credentials(self.data_dir)
            entries = credentials.get("access_keys", [])
            kept = [entry for entry in entries if entry.get("id") != access_key_id]
            if len(kept) == len(entries) and access_key_id not in self._keys:
                raise AccessKeyNotFound(f"no AccessKey pair has the id {access_key_id!r}")
            credentials["access_keys"] = kept
            write_credentials(self.data_dir, credentials)
            self._keys.pop(access_key_id, None)
            self._secrets.pop(access_key_id, None)
