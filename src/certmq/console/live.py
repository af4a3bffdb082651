"""Live connections as the console shows them: who they are, and how many an action would cut.

The broker disconnects the sessions that a registry change revokes; the console
only counts them beforehand, from the identity each session authenticated with, so that a
confirmation can say how many devices will be disconnected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from certmq.control import BrokerControl, ConnectionInfo

CA_SN = "cert.ca_sn"
DEVICE_SN = "cert.sn"
CN = "cert.cn"
ACCESS_KEY_ID = "access_key_id"


def of_ca(control: BrokerControl, ca_sn: str) -> list[ConnectionInfo]:
    """Live sessions authenticated by a device certificate that ``ca_sn`` issued."""
    return [connection for connection in control.connections() if connection.identity.get(CA_SN) == ca_sn]


def of_device(control: BrokerControl, ca_sn: str, device_sn: str) -> list[ConnectionInfo]:
    return [
        connection
        for connection in control.connections()
        if connection.identity.get(CA_SN) == ca_sn and connection.identity.get(DEVICE_SN) == device_sn
    ]


def by_device(connections: list[ConnectionInfo]) -> Counter[tuple[str, str]]:
    """Live sessions per (CA Sn, DeviceSn)."""
    return Counter(
        (connection.identity[CA_SN], connection.identity[DEVICE_SN])
        for connection in connections
        if CA_SN in connection.identity and DEVICE_SN in connection.identity
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
    certificate = sum(1 for connection in connections if DEVICE_SN in connection.identity)
    access_key = sum(
        1
        for connection in connections
        if DEVICE_SN not in connection.identity and ACCESS_KEY_ID in connection.identity
    )
    return IdentityKinds(certificate, access_key, len(connections) - certificate - access_key)
