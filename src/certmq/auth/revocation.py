"""Which live sessions a registry change cuts: the one rule, used by the broker when the change
is made and by the console when it asks the operator to confirm it.

Inactivating or deleting a CA revokes every device certificate it issued; inactivating or
deleting a device certificate revokes that device. Other changes revoke nobody. Sessions of
AccessKey or anonymous clients are never cut by a registry change (docs/certificates.md).
"""

from __future__ import annotations

from certmq.auth.identity import Identity
from certmq.registry.events import (
    CaDeleted,
    CaStatusChanged,
    DeviceDeleted,
    DeviceStatusChanged,
    RegistryEvent,
)


def revokes(change: RegistryEvent, identity: Identity) -> bool:
    """Whether ``change`` ends the right of a client authenticated as ``identity`` to stay."""
    if not identity.has_device_certificate:
        return False
    if isinstance(change, CaDeleted) or (isinstance(change, CaStatusChanged) and not change.active):
        return identity.ca_sn == change.sn
    if isinstance(change, DeviceDeleted) or (isinstance(change, DeviceStatusChanged) and not change.active):
        return identity.is_device(change.ca_sn, change.device_sn)
    return False


def revocation_reason(change: RegistryEvent) -> str | None:
    """What a client cut by ``change`` is told, and the log says; None when it revokes nobody."""
    if isinstance(change, CaDeleted):
        return f"CA certificate {change.sn} was deleted"
    if isinstance(change, CaStatusChanged) and not change.active:
        return f"CA certificate {change.sn} was inactivated"
    if isinstance(change, DeviceDeleted):
        return f"device certificate {change.device_sn} was deleted"
    if isinstance(change, DeviceStatusChanged) and not change.active:
        return f"device certificate {change.device_sn} was inactivated"
    return None
