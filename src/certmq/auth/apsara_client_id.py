"""ApsaraMQ for MQTT client ids: ``GroupID@@@DeviceID`` (docs/configuration.md:
``mqtt.apsara_client_id`` requires the form, ``auth.bind_client_id = "device-id"`` binds the
DeviceID to the certificate's CN)."""

from __future__ import annotations

SEPARATOR = "@@@"


def valid_apsara_client_id(client_id: str) -> bool:
    """An ApsaraMQ client id: `GroupID@@@DeviceID`, at most 64 characters, GroupID `GID_`/`GID-` +
    [A-Za-z0-9_-], 7-64 long."""
    if len(client_id) > 64:
        return False
    group, separator, device = client_id.partition(SEPARATOR)
    # A GroupID may be up to 64 characters, but the whole id may not: its length bounds the GroupID.
    if not separator or not device or len(group) < 7:
        return False
    if not (group.startswith("GID_") or group.startswith("GID-")):
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in group)


def device_id_of(client_id: str) -> str | None:
    """The DeviceID of ``GroupID@@@DeviceID``; None when the client id has no separator."""
    _, separator, device_id = client_id.partition(SEPARATOR)
    return device_id if separator else None
