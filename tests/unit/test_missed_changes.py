"""What a node that missed changes emits when it reads the registry again: the event of every
difference, as its live notice would have been (certmq.registry.missed_changes)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from certmq.registry import (
    CaAdded,
    CaDeleted,
    CaEntry,
    CaStatusChanged,
    DeviceAdded,
    DeviceDeleted,
    DeviceStatusChanged,
    RegistryEvent,
    SettingChanged,
    TrustIndex,
)
from certmq.registry.missed_changes import missed_changes

from .registry_fixtures import make_ca


@functools.cache
def certificate_of(ca_sn: str) -> Any:
    return make_ca(f"CA {ca_sn}").certificate


@dataclass
class Registry:
    """What an index holds, written plainly: CA Sn -> (fingerprint, active); (CA Sn, Sn) ->
    (fingerprint, active); and the settings."""

    cas: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    devices: dict[tuple[str, str], tuple[bytes, bool]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def index(self) -> TrustIndex:
        index = TrustIndex()
        for sn, (fingerprint, active) in self.cas.items():
            certificate = certificate_of(sn)
            index.put_ca(
                CaEntry(sn, certificate, active, certificate.subject.public_bytes(), None, fingerprint)
            )
        for (ca_sn, device_sn), (fingerprint, active) in self.devices.items():
            index.put_device(ca_sn, device_sn, fingerprint, active)
        return index


BASE = Registry(
    cas={"0a": (b"A" * 32, True), "0b": (b"B" * 32, True), "0e": (b"E" * 32, False)},
    devices={
        ("0a", "01"): (b"1" * 32, True),
        ("0a", "02"): (b"2" * 32, False),
        ("0b", "03"): (b"3" * 32, True),
    },
    settings={"auth_mode": "tls", "revoked": [1, 2]},
)


def without_ca(registry: Registry, sn: str) -> None:
    del registry.cas[sn]
    for key in [key for key in registry.devices if key[0] == sn]:
        del registry.devices[key]


def ca_added_inactive_with_devices(registry: Registry) -> None:
    registry.cas["0c"] = (b"C" * 32, False)
    registry.devices.update({("0c", "05"): (b"5" * 32, True), ("0c", "04"): (b"4" * 32, False)})


def ca_replaced(registry: Registry) -> None:
    without_ca(registry, "0b")
    registry.cas["0b"] = (b"b" * 32, True)


def settings_changed(registry: Registry) -> None:
    registry.settings.update({"auth_mode": "mutual", "new": None})
    del registry.settings["revoked"]


def several(registry: Registry) -> None:
    registry.settings["a"] = 1
    registry.devices.update({("0b", "03"): (b"3" * 32, False), ("0b", "00"): (b"0" * 32, True)})
    registry.cas["0b"] = (b"B" * 32, False)
    without_ca(registry, "0a")


# Each change a node may miss: how it turns BASE into what the node reads, and the events it
# must emit for it.
CASES: dict[str, tuple[Callable[[Registry], object], list[RegistryEvent]]] = {
    "nothing": (lambda r: None, []),
    "CA inactivated": (lambda r: r.cas.update({"0a": (b"A" * 32, False)}), [CaStatusChanged("0a", False)]),
    "CA activated": (lambda r: r.cas.update({"0e": (b"E" * 32, True)}), [CaStatusChanged("0e", True)]),
    "CA added": (lambda r: r.cas.update({"0c": (b"C" * 32, True)}), [CaAdded("0c")]),
    "CA deleted with its devices": (lambda r: without_ca(r, "0b"), [CaDeleted("0b")]),
    "CA added inactive with devices": (
        ca_added_inactive_with_devices,
        [
            CaAdded("0c"),
            CaStatusChanged("0c", False),
            DeviceAdded("0c", "04"),
            DeviceStatusChanged("0c", "04", False),
            DeviceAdded("0c", "05"),
        ],
    ),
    "CA replaced by another certificate with its serial": (ca_replaced, [CaDeleted("0b"), CaAdded("0b")]),
    "device inactivated": (
        lambda r: r.devices.update({("0a", "01"): (b"1" * 32, False)}),
        [DeviceStatusChanged("0a", "01", False)],
    ),
    "device activated": (
        lambda r: r.devices.update({("0a", "02"): (b"2" * 32, True)}),
        [DeviceStatusChanged("0a", "02", True)],
    ),
    "device deleted": (lambda r: r.devices.pop(("0a", "01")), [DeviceDeleted("0a", "01")]),
    "inactive device deleted": (lambda r: r.devices.pop(("0a", "02")), [DeviceDeleted("0a", "02")]),
    "device added": (
        lambda r: r.devices.update({("0b", "00ff"): (b"f" * 32, True)}),
        [DeviceAdded("0b", "00ff")],
    ),
    "device added inactive": (
        lambda r: r.devices.update({("0b", "00ff"): (b"f" * 32, False)}),
        [DeviceAdded("0b", "00ff"), DeviceStatusChanged("0b", "00ff", False)],
    ),
    "device replaced by another certificate with its serial": (
        lambda r: r.devices.update({("0a", "01"): (b"9" * 32, True)}),
        [DeviceDeleted("0a", "01"), DeviceAdded("0a", "01")],
    ),
    "inactive device replaced by an active one": (
        lambda r: r.devices.update({("0a", "02"): (b"9" * 32, True)}),
        [DeviceDeleted("0a", "02"), DeviceAdded("0a", "02")],
    ),
    "device replaced by an inactive one": (
        lambda r: r.devices.update({("0a", "01"): (b"9" * 32, False)}),
        [DeviceDeleted("0a", "01"), DeviceAdded("0a", "01"), DeviceStatusChanged("0a", "01", False)],
    ),
    "settings changed, added and removed": (
        settings_changed,
        [SettingChanged("auth_mode"), SettingChanged("new"), SettingChanged("revoked")],
    ),
    "a setting set again to its value": (lambda r: r.settings.update({"revoked": [1, 2]}), []),
    "several, in order": (
        several,
        [
            CaDeleted("0a"),
            CaStatusChanged("0b", False),
            DeviceAdded("0b", "00"),
            DeviceStatusChanged("0b", "03", False),
            SettingChanged("a"),
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_missed_change_gives_its_event(case: str) -> None:
    change, expected = CASES[case]
    after = copy.deepcopy(BASE)
    change(after)
    assert missed_changes(BASE.index(), after.index(), BASE.settings, after.settings) == expected


def test_the_indexes_are_only_read() -> None:
    before, after = BASE.index(), copy.deepcopy(BASE)
    without_ca(after, "0b")
    read_again = after.index()
    missed_changes(before, read_again, {}, {})
    assert missed_changes(before, BASE.index(), {}, {}) == []
    assert missed_changes(read_again, after.index(), {}, {}) == []
