"""Change events of the registry, fanned out in process (docs/registry.md, "The in-memory index").

The registry service emits one event per committed change, on the event loop, after the change is
durable and the in-memory index is updated. Subscribers react: the broker disconnects the sessions
of an inactivated or deleted device or CA, the TLS layer rebuilds its context when the set of CAs
changes, the console refreshes.

``CaDeleted`` stands for the deletion of the CA's device certificates too; no ``DeviceDeleted``
follows for each of them.

Several nodes
-------------
Events carry keys only, never state, so that any node can act on them by reading the store. With
PostgreSQL, a node that commits a change would also ``NOTIFY certmq_registry, <event_to_json(e)>``
in the same transaction; every node ``LISTEN``\\ s and hands each payload to
:meth:`certmq.registry.service.RegistryService.apply_change` (via
``loop.call_soon_threadsafe`` or an asyncio listener), which re-reads the changed rows, updates its
index and emits the same event to its local subscribers. Subscribers therefore never know whether
a change was made on their node or another one. :func:`event_to_json` and :func:`event_from_json`
are the payload format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

log = logging.getLogger("certmq.registry")


@dataclass(frozen=True, slots=True)
class CaAdded:
    sn: str


@dataclass(frozen=True, slots=True)
class CaStatusChanged:
    sn: str
    active: bool


@dataclass(frozen=True, slots=True)
class CaDeleted:
    """The CA and every device certificate it issued were deleted."""

    sn: str


@dataclass(frozen=True, slots=True)
class DeviceAdded:
    ca_sn: str
    device_sn: str


@dataclass(frozen=True, slots=True)
class DeviceStatusChanged:
    ca_sn: str
    device_sn: str
    active: bool


@dataclass(frozen=True, slots=True)
class DeviceDeleted:
    ca_sn: str
    device_sn: str


@dataclass(frozen=True, slots=True)
class SettingChanged:
    key: str


RegistryEvent = (
    CaAdded | CaStatusChanged | CaDeleted | DeviceAdded | DeviceStatusChanged | DeviceDeleted | SettingChanged
)
EventCallback = Callable[[RegistryEvent], None]

EVENT_TYPES: dict[str, type[RegistryEvent]] = {
    cls.__name__: cls
    for cls in (
        CaAdded,
        CaStatusChanged,
        CaDeleted,
        DeviceAdded,
        DeviceStatusChanged,
        DeviceDeleted,
        SettingChanged,
    )
}


class RegistryEvents:
    """In-process fan-out of registry events to subscribers, in subscription order.

    Callbacks run synchronously on the event loop thread and must be quick (schedule a task for
    slow work). A callback that raises is logged and does not stop the others."""

    def __init__(self) -> None:
        self._subscribers: list[EventCallback] = []

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on. Returns the function that
        unsubscribes it (calling it twice is harmless)."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def emit(self, event: RegistryEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("a subscriber failed on registry event %s", event)

    def __len__(self) -> int:
        return len(self._subscribers)


def event_to_json(event: RegistryEvent) -> str:
    """The event as a small JSON text, e.g. for a PostgreSQL NOTIFY payload."""
    return json.dumps({"type": type(event).__name__, **asdict(event)}, separators=(",", ":"))


def event_from_json(text: str) -> RegistryEvent:
    """The event that :func:`event_to_json` wrote; ValueError for anything else."""
    try:
        data = json.loads(text)
        cls = EVENT_TYPES[data.pop("type")]
        return cls(**{field.name: data[field.name] for field in fields(cls)})
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a registry event: {text!r}") from error
