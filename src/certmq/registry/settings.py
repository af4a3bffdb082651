"""Run-time settings kept in the registry (the auth mode, the server certificate, the console's
revoked sessions, the AccessKey pairs of a cluster …): JSON values by key, durable in the store
and served from memory."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from certmq.registry.errors import ParameterFieldCheckFailed
from certmq.registry.events import SettingChanged
from certmq.registry.worker import RegistryPart, Shared

MAX_KEY = 128


class Settings(RegistryPart):
    """The settings, read once from the store at start and kept up to date by every change, here
    or on another node."""

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self._values: dict[str, Any] = {}

    async def load(self) -> None:
        self._values = await self._worker.run(self._store.all_settings)

    def adopt(self, values: dict[str, Any]) -> dict[str, Any]:
        """Take ``values``, every setting as just read from the store, in place of those in
        memory, and return those (after this node missed changes)."""
        previous, self._values = self._values, values
        return previous

    async def get(self, key: str) -> Any | None:
        """A run-time setting (JSON value), or None when it was never set. Served from memory."""
        return self.current(key)

    def current(self, key: str) -> Any | None:
        """:meth:`get` without waiting: for a subscriber of SettingChanged, which may not await."""
        return copy.deepcopy(self._values.get(key))

    def starting_with(self, prefix: str) -> dict[str, Any]:
        """Every setting whose key starts with ``prefix``, by key. Served from memory."""
        return {key: copy.deepcopy(value) for key, value in self._values.items() if key.startswith(prefix)}

    async def set(self, key: str, value: Any) -> None:
        """Store a run-time setting (any JSON value) durably and emit SettingChanged."""
        stored = _checked(key, value)
        now = self._clock()

        def after_commit(_: None) -> None:
            self._values[key] = stored
            self._events.emit(SettingChanged(key))

        await self._worker.commit(functools.partial(self._store.set_setting, key, stored, now), after_commit)

    async def add(self, key: str, value: Any) -> bool:
        """Store a setting unless it has a value already, durably, and emit SettingChanged when
        it was stored: True then. The first value wins, whichever node writes it; a key that
        another node added meanwhile keeps that node's value, which reaches this one as its
        change does."""
        stored = _checked(key, value)
        now = self._clock()

        def after_commit(added: bool) -> None:
            if added:
                self._values[key] = stored
                self._events.emit(SettingChanged(key))

        return await self._worker.commit(
            functools.partial(self._store.add_setting, key, stored, now), after_commit
        )

    async def reload(self, key: str) -> None:
        """Read ``key`` again from the store, after another node changed it."""
        value = await self._worker.run(functools.partial(self._store.get_setting, key))
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value


def _checked(key: str, value: Any) -> Any:
    """A copy of ``value`` to store under ``key``; ParameterFieldCheckFailed for a key or value
    a setting cannot have."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
        raise ParameterFieldCheckFailed(f"a setting key is a string of 1 to {MAX_KEY} characters")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise ParameterFieldCheckFailed(f"setting {key!r} must be a JSON value: {error}") from error
    return copy.deepcopy(value)
