"""Live connections as the console shows them: who they are, and how many an action would cut.

The broker disconnects the sessions that a registry change revokes; the console
only counts them beforehand, from the identity each session authenticated with, so that a
confirmation can say how many devices will be disconnected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from certmq.auth.revocation import revokes
from certmq.control import BrokerControl, ConnectionInfo
from certmq.registry.events import CaDeleted, DeviceDeleted, RegistryEvent


async def cut_by(control: BrokerControl, change: RegistryEvent) -> list[ConnectionInfo]:
    """The live sessions that ``change`` would cut, on every node, by the rule each node applies
    when it is made."""
    live = await control.connections()
    return [connection for connection in live.items if revokes(change, connection.identity)]


async def of_ca(control: BrokerControl, ca_sn: str) -> list[ConnectionInfo]:
    """Live sessions authenticated by a device certificate that ``ca_sn`` issued: those that
    inactivating or deleting the CA cuts."""
    return await cut_by(control, CaDeleted(ca_sn))


async def of_device(control: BrokerControl, ca_sn: str, device_sn: str) -> list[ConnectionInfo]:
    """Live sessions of one device certificate: those that inactivating or deleting it cuts."""
    return await cut_by(control, DeviceDeleted(ca_sn, device_sn))


def by_ca(connections: list[ConnectionInfo]) -> Counter[str]:
    """Live sessions per CA Sn, of the clients that authenticated with a device certificate."""
    return Counter(
        connection.identity.ca_sn for connection in connections if connection.identity.has_device_certificate
    )


def by_device(connections: list[ConnectionInfo]) -> Counter[tuple[str, str]]:
    """Live sessions per (CA Sn, DeviceSn)."""
    return Counter(
        (connection.identity.ca_sn, connection.identity.device_sn)
        for connection in connections
        if connection.identity.has_device_certificate
    )


@dataclass(frozen=True, slots=True)
class IdentityKinds:
    """How the live sessions authenticated: what a change of the auth mode is about."""

    device_certificate: int
    access_key: int
    neither: int  # anonymous, where allowed

    @property
    def total(self) -> int:
        return self.device_certificate + self.access_key + self.neither


def identity_kinds(connections: list[ConnectionInfo]) -> IdentityKinds:
    certificate = sum(1 for connection in connections if connection.identity.has_device_certificate)
    access_key = sum(
        1
        for connection in connections
        if not connection.identity.has_device_certificate and connection.identity.access_key_id
    )
    return IdentityKinds(certificate, access_key, len(connections) - certificate - access_key)
