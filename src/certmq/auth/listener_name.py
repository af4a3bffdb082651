"""The MQTT listeners an instance can open, by the name that the configuration (``[listeners]``),
the admission table, the decision log, the API and the metrics give them."""

from __future__ import annotations

from enum import StrEnum


class ListenerName(StrEnum):
    TCP = "tcp"  # MQTT over TCP
    TLS = "tls"  # MQTT over TLS, the only one that can ask for device certificates
    WS = "ws"  # MQTT over WebSocket
    WSS = "wss"  # MQTT over secure WebSocket


# In the order the broker opens them.
MQTT_LISTENERS: tuple[ListenerName, ...] = tuple(ListenerName)
