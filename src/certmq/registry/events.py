"""Change events of the registry, fanned out in process (docs/registry.md, "The in-memory index").

The registry service emits one event per committed change, on the event loop, after the change is
durable and the in-memory index is updated. Subscribers react: the broker disconnects the sessions
of an inactivated or deleted device or CA, the TLS layer rebuilds its context when the set of CAs
changes, the console refreshes.

``CaDeleted`` stands for the deletion of the CA's device certificates too; no ``DeviceDeleted``
follows for each of them.

Several nodes
-------------
Events carry keys only, never state, so that any node can act on them by reading the store
(docs/registry.md, "Several nodes"). With PostgreSQL, the transaction that commits a change also
sends ``pg_notify('certmq_registry', notice_to_json(event, origin, sent_at))``
(:meth:`certmq.registry.database.Database.announce`), so a notice exists if and only if its
change committed. Every node that listens (:mod:`certmq.registry.change_feed`) hands each notice
of another origin to :meth:`certmq.registry.service.RegistryService.apply_change`, which re-reads
the changed rows, updates its index and emits the same event to its local subscribers; after it
lost its connection it catches up (:mod:`certmq.registry.missed_changes`). Subscribers therefore
never know whether a change was made on their node or another one. :func:`notice_to_json` and
:func:`notice_from_json` are the payload: the event's own JSON (:func:`event_to_json`) with the
origin and the time it was sent.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

log = logging.getLogger("certmq.registry")

# The PostgreSQL channel of the notices of committed changes.
CHANGE_CHANNEL = "certmq_registry"


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
    """The event as a small JSON text."""
    return json.dumps(_fields_of(event), separators=(",", ":"))


def event_from_json(text: str) -> RegistryEvent:
    """The event that :func:`event_to_json` wrote; ValueError for anything else."""
    return _event_from(_parse(text), text)


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """A committed change as one node tells the others: the event, the node that committed it
    (``origin``: a node ignores its own notices) and when (``sent_at``, seconds since the epoch
    on the writer's clock, just before the commit), for the time it took to reach a node."""

    event: RegistryEvent
    origin: str
    sent_at: float


def notice_to_json(event: RegistryEvent, origin: str, sent_at: float) -> str:
    """The payload of a PostgreSQL NOTIFY: the event's JSON with ``origin`` and ``sent_at``."""
    return json.dumps({**_fields_of(event), "origin": origin, "sent_at": sent_at}, separators=(",", ":"))


def notice_from_json(text: str) -> ChangeNotice:
    """The notice that :func:`notice_to_json` wrote; ValueError for anything else."""
    data = _parse(text)
    origin, sent_at = data.get("origin"), data.get("sent_at")
    if not isinstance(origin, str):
        raise ValueError(f"not a registry change notice (no origin): {text!r}")
    if isinstance(sent_at, bool) or not isinstance(sent_at, int | float) or not math.isfinite(sent_at):
        raise ValueError(f"not a registry change notice (no time): {text!r}")
    return ChangeNotice(_event_from(data, text), origin, float(sent_at))


def _fields_of(event: RegistryEvent) -> dict[str, Any]:
    return {"type": type(event).__name__, **asdict(event)}


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a registry event: {text!r}") from error
    if not isinstance(data, dict):
        raise ValueError(f"not a registry event: {text!r}")
    return data


def _event_from(data: dict[str, Any], text: str) -> RegistryEvent:
    """The event of a parsed payload. Each field must have its type (``active`` a boolean, the
    others text): a notice is read from a channel that anyone with access to the database may
    send on, and a serial number that is not text must not reach the store."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"not a registry event: {text!r}")
    values: dict[str, Any] = {}
    for field in fields(cls):
        value = data.get(field.name)
        if not isinstance(value, bool if field.type == "bool" else str):
            raise ValueError(f"not a registry event ({field.name}): {text!r}")
        values[field.name] = value
    return cls(**values)
