"""Which live sessions a registry change cuts: one rule, for the broker and for the console's
confirmations, and the identity value it reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.auth.revocation import revocation_reason, revokes
from certmq.console import live
from certmq.control import ConnectionInfo, LiveConnections
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

DEVICE = Identity(ca_sn="0a", device_sn="01", cn="meter-1")
SIBLING = Identity(ca_sn="0a", device_sn="02", cn="meter-2")  # the same CA, another device
SAME_SERIAL_OTHER_CA = Identity(ca_sn="0b", device_sn="01", cn="meter-1")
DEVICE_WITH_KEY = Identity(ca_sn="0a", device_sn="01", cn="meter-1", access_key_id="LTAI5")
ACCESS_KEY = Identity(access_key_id="LTAI5")
IDENTITIES = {
    "device": DEVICE,
    "sibling": SIBLING,
    "same serial, other CA": SAME_SERIAL_OTHER_CA,
    "device with credentials": DEVICE_WITH_KEY,
    "access key": ACCESS_KEY,
    "anonymous": ANONYMOUS,
}

# Each change, and the identities whose sessions it cuts.
CHANGES: list[tuple[RegistryEvent, set[str]]] = [
    (CaStatusChanged("0a", active=False), {"device", "sibling", "device with credentials"}),
    (CaDeleted("0a"), {"device", "sibling", "device with credentials"}),
    (DeviceStatusChanged("0a", "01", active=False), {"device", "device with credentials"}),
    (DeviceDeleted("0a", "01"), {"device", "device with credentials"}),
    (DeviceDeleted("0b", "01"), {"same serial, other CA"}),
    (CaStatusChanged("0a", active=True), set()),
    (DeviceStatusChanged("0a", "01", active=True), set()),
    (CaAdded("0a"), set()),
    (DeviceAdded("0a", "01"), set()),
    (SettingChanged("auth_mode"), set()),
    (CaDeleted("ff"), set()),
]


@pytest.mark.parametrize(("change", "cut"), CHANGES, ids=[repr(change) for change, _ in CHANGES])
def test_a_change_revokes_exactly_the_identities_it_names(change: RegistryEvent, cut: set[str]) -> None:
    assert {name for name, identity in IDENTITIES.items() if revokes(change, identity)} == cut
    if cut:  # what the clients it cuts are told
        assert revocation_reason(change) is not None


def test_what_the_clients_cut_are_told() -> None:
    assert revocation_reason(CaStatusChanged("0a", active=False)) == "CA certificate 0a was inactivated"
    assert revocation_reason(CaDeleted("0a")) == "CA certificate 0a was deleted"
    assert revocation_reason(DeviceStatusChanged("0a", "01", active=False)) == (
        "device certificate 01 was inactivated"
    )
    assert revocation_reason(DeviceDeleted("0a", "01")) == "device certificate 01 was deleted"
    for change in (CaStatusChanged("0a", active=True), CaAdded("0a"), DeviceAdded("0a", "01")):
        assert revocation_reason(change) is None


class _Broker:
    """The console's view of the broker: its live connections."""

    def __init__(self, identities: dict[str, Identity]) -> None:
        self.live = [
            ConnectionInfo(name, "tls", "127.0.0.1:1", 5, datetime.now(UTC), identity, "node-1")
            for name, identity in identities.items()
        ]

    async def connections(self) -> LiveConnections:
        return LiveConnections(self.live, len(self.live))


@pytest.mark.parametrize(("change", "cut"), CHANGES, ids=[repr(change) for change, _ in CHANGES])
async def test_the_console_counts_by_the_same_rule(change: RegistryEvent, cut: set[str]) -> None:
    broker = _Broker(IDENTITIES)
    counted = {connection.client_id for connection in await live.cut_by(broker, change)}  # type: ignore[arg-type]
    assert counted == cut


async def test_the_console_counts_what_inactivating_a_ca_or_a_device_cuts() -> None:
    broker = _Broker(IDENTITIES)
    assert {c.client_id for c in await live.of_ca(broker, "0a")} == {
        "device",
        "sibling",
        "device with credentials",
    }  # type: ignore[arg-type]
    assert {c.client_id for c in await live.of_device(broker, "0a", "01")} == {
        "device",
        "device with credentials",
    }  # type: ignore[arg-type]
    assert live.by_ca(broker.live) == {"0a": 3, "0b": 1}


def test_an_identity_is_written_under_its_documented_names_and_read_back() -> None:
    not_after = datetime(2030, 1, 1, tzinfo=UTC)
    device = Identity(
        ca_sn="0a", device_sn="01", cn="", certificate_not_after=not_after, access_key_id="LTAI5"
    )
    assert device.fields() == {
        "cert.cn": "",  # a device's names are all there, even an empty CN
        "cert.sn": "01",
        "cert.ca_sn": "0a",
        "cert.not_after": "2030-01-01T00:00:00+00:00",
        "access_key_id": "LTAI5",
    }
    assert ACCESS_KEY.fields() == {"access_key_id": "LTAI5"}
    assert ANONYMOUS.fields() == {}
    for identity in (*IDENTITIES.values(), device):
        assert Identity.from_fields(identity.fields()) == identity
    assert ANONYMOUS.is_anonymous and not ACCESS_KEY.is_anonymous and not DEVICE.is_anonymous
