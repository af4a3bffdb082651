"""What a node counts of the messages it exchanges with the other nodes (the metrics'
``certmq_cluster_*``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ClusterStats:
    """What the metrics show of the messages between nodes."""

    sent: int = 0
    stored: int = 0
    # Messages the stream refused because it is at its limits, and those it did not store for
    # another reason (no quorum, no answer in time).
    store_full: int = 0
    store_failures: int = 0
    received: int = 0
    duplicates: int = 0
    malformed: int = 0
    # Messages sent again to a stream that did not answer, or had no leader.
    store_retries: int = 0
    # Sessions of nodes that were gone, adopted by this node (certmq.cluster.adoption).
    sessions_adopted: int = 0
    # Messages whose topics make NATS subjects too long for the servers (see MAX_SUBJECT).
    too_long: int = 0
