"""Run-time settings kept in the registry (the auth mode, the server certificate, the console's
revoked sessions …): JSON values by key, durable in the store and served from memory."""

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
        return copy.deepcopy(self._values.get(key))

    async def set(self, key: str, value: Any) -> None:
        """Store a run-time setting (any JSON value) durably and emit SettingChanged."""
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
            raise ParameterFieldCheckFailed(f"a setting key is a string of 1 to {MAX_KEY} characters")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ParameterFieldCheckFailed(f"setting {key!r} must be a JSON value: {error}") from error
        now = self._clock()
        stored = copy.deepcopy(value)

        def after_commit(_: None) -> None:
            self._values[key] = stored
            self._events.emit(SettingChanged(key))

        await self._worker.commit(functools.partial(self._store.set_setting, key, stored, now), after_commit)

    async def reload(self, key: str) -> None:
        """Read ``key`` again from the store, after another node changed it."""
        value = await self._worker.run(functools.partial(self._store.get_setting, key))
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
