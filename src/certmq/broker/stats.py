"""Counters the broker keeps for $SYS topics and metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BrokerStats:
    clients_connected: int = 0
    connections_total: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    messages_routed: int = 0
    messages_dropped: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    malformed_packets: int = 0
    tls_handshake_failures: int = 0
    publishes_denied: int = 0
    wills_dropped: int = 0  # wills not published: the rules or the client's identity changed
    # Refusals by the limits on what a client can make the broker hold (docs/configuration.md).
    messages_dropped_queue_full: int = 0
    retained_refused: int = 0
    subscriptions_over_limit: int = 0
    topics_over_limit: int = 0
    sessions_over_limit: int = 0
