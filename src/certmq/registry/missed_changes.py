"""The changes a node missed, as events: what it had against what the store now holds.

A node that lost its connection to the change feed (:mod:`certmq.registry.change_feed`) lost the
notices sent meanwhile: PostgreSQL keeps none for a listener that is gone. When it listens again
it reads the index and the settings from the store and emits, for every difference, the event a
live notice would have given, so that its subscribers act as if they had missed nothing: the
sessions of a device that is now inactive, or of a CA now deleted, are cut (docs/registry.md,
"Several nodes").

:func:`missed_changes` compares; it reads nothing and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from certmq.registry.events import (
    CaAdded,
    CaDeleted,
    CaStatusChanged,
    DeviceAdded,
    DeviceDeleted,
    DeviceStatusChanged,
    RegistryEvent,
    SettingChanged,
)
from certmq.registry.index import CaEntry, TrustIndex

_MISSING = object()


def missed_changes(
    before: TrustIndex,
    after: TrustIndex,
    settings_before: Mapping[str, Any],
    settings_after: Mapping[str, Any],
) -> list[RegistryEvent]:
    """The events that lead from ``before`` to ``after``, the index and settings a node had and
    the ones it read again, in this order: the CAs deleted; then CA by CA in ``after``'s order,
    its own change and its devices' in the order of their serials; then the settings by key.

    A CA or device whose certificate is another one under the same serial number was deleted and
    registered again: both events. A CA or device that arrives inactive is added, then
    inactivated, as its notices would have said. A CA's deletion stands for its devices'."""
    changes: list[RegistryEvent] = []
    for ca in before.cas():
        now = after.ca(ca.sn)
        if now is None or now.fingerprint != ca.fingerprint:
            changes.append(CaDeleted(ca.sn))
    for ca in after.cas():
        was = before.ca(ca.sn)
        if was is None or was.fingerprint != ca.fingerprint:
            changes += _ca_added(ca, after)
            continue
        if was.active != ca.active:
            changes.append(CaStatusChanged(ca.sn, ca.active))
        changes += _device_changes(ca.sn, before, after)
    changes += [
        SettingChanged(key)
        for key in sorted(settings_before.keys() | settings_after.keys())
        if settings_before.get(key, _MISSING) != settings_after.get(key, _MISSING)
    ]
    return changes


def _ca_added(ca: CaEntry, after: TrustIndex) -> list[RegistryEvent]:
    changes: list[RegistryEvent] = [CaAdded(ca.sn)]
    if not ca.active:
        changes.append(CaStatusChanged(ca.sn, False))
    inactive = after.inactive_of(ca.sn)
    for serial in sorted(after.devices_of(ca.sn)):
        changes += _device_added(ca.sn, serial, serial in inactive)
    return changes


def _device_added(ca_sn: str, serial: bytes, inactive: bool) -> list[RegistryEvent]:
    added: list[RegistryEvent] = [DeviceAdded(ca_sn, serial.hex())]
    if inactive:
        added.append(DeviceStatusChanged(ca_sn, serial.hex(), False))
    return added


def _device_changes(ca_sn: str, before: TrustIndex, after: TrustIndex) -> list[RegistryEvent]:
    """The changes of the devices of a CA that both indexes hold. Set operations on the two maps
    find the few serials that differ among a million without a loop in Python."""
    was, now = before.devices_of(ca_sn), after.devices_of(ca_sn)
    was_inactive, now_inactive = before.inactive_of(ca_sn), after.inactive_of(ca_sn)
    if was == now and was_inactive == now_inactive:
        return []
    touched = {serial for serial, _ in was.items() ^ now.items()} | (was_inactive ^ now_inactive)
    changes: list[RegistryEvent] = []
    for serial in sorted(touched):
        old, new = was.get(serial), now.get(serial)
        if old is not None and old != new:
            changes.append(DeviceDeleted(ca_sn, serial.hex()))
        if new is None:
            continue
        if old != new:
            changes += _device_added(ca_sn, serial, serial in now_inactive)
        elif (serial in was_inactive) != (serial in now_inactive):
            changes.append(DeviceStatusChanged(ca_sn, serial.hex(), serial not in now_inactive))
    return changes
