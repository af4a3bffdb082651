"""AccessKey pairs of a running instance: create, list, delete.

On a single node the pairs live in the instance's ``credentials.json`` (see
:mod:`certmq.instance`), their secrets sealed with the instance key. Every change is written to
``credentials.json`` (atomically, mode 0600) before it takes effect in memory and before the
caller is answered.

In a cluster every node must know every pair at once, so the pairs live in the registry that
the nodes share (:meth:`AccessKeyStore.share`, docs/cluster.md), and its change feed brings each
change to every node. Each pair is a setting of its own, ``access_key/ID``, whose value is the
pair's ``credentials.json`` entry, its secret sealed with the instance key that every node of a
cluster has. A setting per pair rather than one holding the list: two nodes creating a pair at
once write two rows, and neither can lose the other's. A deleted pair keeps its setting, without
its secret (``{"id", "deleted_at"}``), so that a node whose ``credentials.json`` still holds the
pair does not bring it back: ``credentials.json`` is only read, when a node starts, and its pairs
that the registry never had are added to it (the pair ``certmq init`` made works on every node
that started from a copy of the data directory).

:attr:`AccessKeyStore.secrets` is a live read-only mapping AccessKeyId → AccessKeySecret: the
Signature check and the RPC request signatures read it, so a key created through the API works
at once and a deleted one stops working at once, without a restart, on every node.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from certmq.instance import Instance, InstanceError, read_credentials, write_credentials
from certmq.registry.events import RegistryEvent, SettingChanged
from certmq.sealed_secrets import (
    AccessKey,
    SecretDoesNotOpen,
    new_access_key,
    open_access_keys,
    seal_access_key,
)

if TYPE_CHECKING:
    from certmq.registry.service import RegistryService

log = logging.getLogger("certmq")

# In a cluster, the registry setting of the pair ID is this prefix and ID.
SHARED_PREFIX = "access_key/"


def shared_setting(access_key_id: str) -> str:
    """The registry setting that holds the pair ``access_key_id`` in a cluster."""
    return SHARED_PREFIX + access_key_id


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
    """The AccessKey pairs in ``data_dir/credentials.json``, sealed with ``instance_key``; in the
    registry once :meth:`share` was called."""

    def __init__(self, data_dir: Path, instance_key: bytes) -> None:
        self.data_dir = data_dir
        self._instance_key = instance_key
        self._lock = threading.Lock()
        self._keys: dict[str, AccessKey] = {}
        self._secrets: dict[str, str] = {}
        # Changed in place, so that every holder of this view sees new and deleted keys at once.
        self.secrets: Mapping[str, str] = MappingProxyType(self._secrets)
        # The registry that holds the pairs (a cluster); None: credentials.json does.
        self._registry: RegistryService | None = None
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
        self._use(keys)

    def _use(self, keys: Iterable[AccessKey]) -> None:
        self._keys.clear()
        self._secrets.clear()
        for key in keys:
            self._add(key)

    def _add(self, key: AccessKey) -> None:
        self._keys[key.id] = key
        self._secrets[key.id] = key.secret

    def _remove(self, access_key_id: str) -> None:
        self._keys.pop(access_key_id, None)
        self._secrets.pop(access_key_id, None)

    def list(self) -> list[AccessKeyInfo]:
        """Every pair, oldest first, without secrets."""
        return [AccessKeyInfo(key.id, key.created_at) for key in self._keys.values()]

    async def create(self) -> AccessKey:
        """A new pair, stored before it is returned. Its secret is shown to the caller this once."""
        registry = self._registry
        if registry is None:
            return self._create_in_file()
        access_key = new_access_key()
        # Another pair with this id is most unlikely; it would be kept, and this one made anew.
        while not await registry.add_setting(
            shared_setting(access_key.id), seal_access_key(self._instance_key, access_key)
        ):
            access_key = new_access_key()
        # Its event added it already; not left to a subscriber: the caller uses it when answered.
        self._add(access_key)
        return access_key

    def _create_in_file(self) -> AccessKey:
        with self._lock:
            access_key = new_access_key()
            credentials = read_credentials(self.data_dir)
            credentials["access_keys"] = [
                *credentials.get("access_keys", []),
                seal_access_key(self._instance_key, access_key),
            ]
            write_credentials(self.data_dir, credentials)
            self._add(access_key)
            return access_key

    async def delete(self, access_key_id: str) -> None:
        """Remove a pair: clients and API callers signing with it are refused from now on."""
        registry = self._registry
        if registry is None:
            self._delete_in_file(access_key_id)
            return
        if access_key_id not in self._keys:
            raise AccessKeyNotFound(f"no AccessKey pair has the id {access_key_id!r}")
        deleted_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        await registry.set_setting(
            shared_setting(access_key_id), {"id": access_key_id, "deleted_at": deleted_at}
        )
        self._remove(access_key_id)

    def _delete_in_file(self, access_key_id: str) -> None:
        with self._lock:
            credentials = read_credentials(self.data_dir)
            entries = credentials.get("access_keys", [])
            kept = [entry for entry in entries if entry.get("id") != access_key_id]
            if len(kept) == len(entries) and access_key_id not in self._keys:
                raise AccessKeyNotFound(f"no AccessKey pair has the id {access_key_id!r}")
            credentials["access_keys"] = kept
            write_credentials(self.data_dir, credentials)
            self._remove(access_key_id)

    # --- in a cluster -----------------------------------------------------------------------------

    async def share(self, registry: RegistryService) -> Callable[[], None]:
        """Keep the pairs in ``registry`` from now on, as every node of a cluster does: use the
        pairs it holds, follow each change any node makes to them, and add to it the pairs of
        ``credentials.json`` it never had. Returns the function that stops following.

        Raises InstanceError when a pair in the registry does not open with this node's instance
        key: the nodes of a cluster must share one (docs/cluster.md)."""
        stored = registry.settings.starting_with(SHARED_PREFIX)
        keys = []
        for setting, value in stored.items():
            try:
                key = self._open_shared(setting, value)
            except SecretDoesNotOpen:
                raise InstanceError(
                    f"the AccessKey pairs in the registry were sealed with another instance key "
                    f"({setting!r} does not open): the nodes of a cluster share one instance.key "
                    f"(copy the data directory that certmq init made to each node)"
                ) from None
            except ValueError as error:
                raise InstanceError(str(error)) from None
            if key is not None:
                keys.append(key)
        self._use(sorted(keys, key=lambda key: key.created_at))
        self._registry = registry
        unsubscribe = registry.events.subscribe(self._follow)
        try:
            for entry in read_credentials(self.data_dir).get("access_keys", []):
                setting = shared_setting(entry["id"])
                if setting not in stored:
                    await registry.add_setting(setting, entry)
        except BaseException:
            unsubscribe()
            raise
        return unsubscribe

    def _follow(self, event: RegistryEvent) -> None:
        """A pair created or deleted on this node or another one (or while this node was not
        listening, docs/registry.md): use it, or stop using it."""
        if not isinstance(event, SettingChanged) or not event.key.startswith(SHARED_PREFIX):
            return
        assert self._registry is not None
        access_key_id = event.key.removeprefix(SHARED_PREFIX)
        try:
            key = self._open_shared(event.key, self._registry.settings.current(event.key))
        except (ValueError, SecretDoesNotOpen) as error:
            log.error("AccessKey %s in the registry cannot be used here: %s", access_key_id, error)
            key = None
        if key is None:
            self._remove(access_key_id)
        else:
            self._add(key)

    def _open_shared(self, setting: str, value: Any) -> AccessKey | None:
        """The pair the registry setting ``setting`` holds; None when it was deleted. Raises
        SecretDoesNotOpen, and ValueError for a value that is not a pair of that id."""
        if value is None or (isinstance(value, dict) and "deleted_at" in value):
            return None
        try:
            (key,) = open_access_keys(self._instance_key, [value])
        except (KeyError, TypeError) as error:
            raise ValueError(f"registry setting {setting!r} is not an AccessKey pair ({error})") from None
        if key.id != setting.removeprefix(SHARED_PREFIX):
            raise ValueError(f"registry setting {setting!r} holds the pair {key.id!r}")
        return key
