"""Prometheus metrics of the instance (docs/api.md, "Metrics"), served at ``/metrics``
(:mod:`certmq.api.metrics`).

Two kinds of metric:

* counted as things happen: the decisions by result and reason. The application counts each
  decision it records, through :meth:`Metrics.count_decision` (or a recorder wrapped with
  :meth:`Metrics.counting`);
* read at each scrape: connections by listener, the broker's counters (messages in and out,
  TLS handshake failures...), the registry's sizes, the certificates that expire within
  30 days, the strangers' refusals folded in the decision log and the calls that were not
  authenticated folded in the operations log. Reading them at scrape time keeps the hot paths
  free of metric updates.

The metrics live in a registry of their own (not prometheus-client's global one), so several
instances, or tests, in one process do not mix.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certmq.auth.listener_name import MQTT_LISTENERS
from certmq.control import BrokerControl
from certmq.registry.records import RegistryCounts

F = TypeVar("F", bound=Callable[..., Any])

# Broker counters (BrokerControl.stats keys) exported as Prometheus counters: name, help.
_BROKER_COUNTERS: dict[str, tuple[str, str]] = {
    "messages_received": ("certmq_messages_received", "PUBLISH packets received from clients"),
    "messages_sent": ("certmq_messages_sent", "PUBLISH packets sent to clients"),
    "messages_dropped": ("certmq_messages_dropped", "messages dropped (queue full, expired, no route)"),
    "messages_routed": ("certmq_messages_routed", "messages routed to subscribers"),
    "bytes_received": ("certmq_bytes_received", "bytes received from MQTT clients"),
    "bytes_sent": ("certmq_bytes_sent", "bytes sent to MQTT clients"),
    "connections_total": ("certmq_connections_opened", "MQTT connections accepted"),
    "tls_handshake_failures": ("certmq_tls_handshake_failures", "TLS handshakes that failed"),
    "malformed_packets": ("certmq_malformed_packets", "connections closed for a malformed packet"),
    "publishes_denied": ("certmq_publishes_denied", "PUBLISH packets refused by topic authorization"),
    "wills_dropped": ("certmq_wills_dropped", "wills not published: the topic rules or the identity changed"),
    "messages_dropped_queue_full": (
        "certmq_messages_dropped_queue_full",
        "QoS 1 and 2 messages dropped for a session whose queue was full (messages or bytes)",
    ),
    "retained_refused": (
        "certmq_retained_refused",
        "retained messages not stored: the retained messages were at their limits",
    ),
    "subscriptions_over_limit": (
        "certmq_subscriptions_over_limit",
        "subscriptions refused: the client had as many as it may have",
    ),
    "topics_over_limit": (
        "certmq_topics_over_limit",
        "topics and filters refused for their length or levels (PUBLISH, SUBSCRIBE, will)",
    ),
    "sessions_over_limit": (
        "certmq_sessions_over_limit",
        "CONNECTs refused: the session they would create goes beyond a limit on sessions",
    ),
    # A node of a cluster (docs/cluster.md): its NATS link and the messages between the nodes.
    "cluster_nats_disconnects": ("certmq_cluster_nats_disconnects", "connections to NATS lost"),
    "cluster_nats_reconnects": (
        "certmq_cluster_nats_reconnects",
        "connections to NATS made again after one was lost",
    ),
    "cluster_nats_errors": ("certmq_cluster_nats_errors", "errors the NATS servers reported to this node"),
    "cluster_slow_consumer_drops": (
        "certmq_cluster_slow_consumer_drops",
        "QoS 0 messages from other nodes that NATS dropped because this node did not take them fast enough",
    ),
    "cluster_messages_sent": ("certmq_cluster_messages_sent", "messages handed to NATS for the other nodes"),
    "cluster_messages_stored": (
        "certmq_cluster_messages_stored",
        "QoS 1 and 2, retained and point-to-point messages the stream between the nodes stored",
    ),
    "cluster_store_full": (
        "certmq_cluster_store_full",
        "messages the stream between the nodes refused because it is full (their publishers got 0x97)",
    ),
    "cluster_store_failures": (
        "certmq_cluster_store_failures",
        "messages the stream between the nodes did not store, no quorum or no answer in time (their publishers got 0x80)",
    ),
    "cluster_sessions_adopted": (
        "certmq_cluster_sessions_adopted",
        "sessions of nodes that were gone this node adopted",
    ),
    "cluster_messages_received": ("certmq_cluster_messages_received", "messages received from other nodes"),
    "cluster_duplicates": (
        "certmq_cluster_duplicates",
        "messages from other nodes received again and dropped (overlapping subscriptions, redeliveries)",
    ),
    "cluster_malformed": ("certmq_cluster_malformed", "messages from NATS this node could not read, dropped"),
    "cluster_too_long": (
        "certmq_cluster_too_long",
        "messages on topics too long for a NATS subject, routed to this node's clients only",
    ),
    # A worker of `certmq serve --workers N` (docs/cluster.md, "One machine, several cores").
    "worker_connections_handed_over": (
        "certmq_worker_connections_handed_over",
        "connections this worker accepted and handed over to a less loaded worker",
    ),
    "worker_connections_taken_over": (
        "certmq_worker_connections_taken_over",
        "connections another worker accepted and handed over to this one",
    ),
}
# Quantities the limits bound, exported as gauges: name, help.
_BROKER_GAUGES: dict[str, tuple[str, str]] = {
    "retained_messages": ("certmq_retained_messages", "retained messages stored"),
    "retained_bytes": ("certmq_retained_bytes", "bytes the retained messages hold (mqtt.max_retained_bytes)"),
    "sessions": ("certmq_sessions", "sessions the broker holds, online and offline (mqtt.max_sessions)"),
    "subscriptions": ("certmq_subscriptions", "subscriptions of all sessions"),
    "queued_messages": ("certmq_queued_messages", "QoS 1 and 2 messages queued for sessions"),
    "queued_bytes": (
        "certmq_queued_bytes",
        "bytes of the messages queued and in flight for sessions (mqtt.max_queued_bytes each)",
    ),
    "cluster_nodes": (
        "certmq_cluster_nodes",
        "nodes of the cluster alive (in the bucket of members), this one included",
    ),
    "cluster_nats_connected": (
        "certmq_cluster_nats_connected",
        "1 while this node is connected to NATS, else 0",
    ),
}
_CONNECTIONS_PREFIX = "connections_"
_IGNORED_STATS = {"clients_connected"}  # the same number as the sum of certmq_connections


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape reads from the broker and the registry."""

    stats: dict[str, int]
    connections_by_listener: dict[str, int]
    counts: RegistryCounts
    refusals_folded: dict[str, int]  # by reason
    calls_folded: dict[str, int]  # by error code


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        connections = GaugeMetricFamily(
            "certmq_connections", "live MQTT connections by listener", labels=["listener"]
        )
        for listener, count in sorted(snapshot.connections_by_listener.items()):
            connections.add_metric([listener], count)
        yield connections
        for key, value in sorted(snapshot.stats.items()):
            if key in _BROKER_COUNTERS:
                name, documentation = _BROKER_COUNTERS[key]
                yield CounterMetricFamily(name, documentation, value=value)
            elif key in _BROKER_GAUGES:
                name, documentation = _BROKER_GAUGES[key]
                yield GaugeMetricFamily(name, documentation, value=value)
            elif not key.startswith(_CONNECTIONS_PREFIX) and key not in _IGNORED_STATS:
                yield GaugeMetricFamily(f"certmq_broker_{key}", f"broker statistic {key}", value=value)
        counts = snapshot.counts
        cas = GaugeMetricFamily("certmq_ca_certificates", "registered CA certificates", labels=["status"])
        cas.add_metric(["active"], counts.cas_active)
        cas.add_metric(["inactive"], counts.cas_inactive)
        yield cas
        devices = GaugeMetricFamily(
            "certmq_device_certificates", "registered device certificates", labels=["status"]
        )
        devices.add_metric(["active"], counts.devices_active)
        devices.add_metric(["inactive"], counts.devices_inactive)
        yield devices
        days = counts.expiring_within.days
        expiring = GaugeMetricFamily(
            "certmq_certificates_expiring",
            f"registered certificates valid now that expire within {days} days",
            labels=["kind"],
        )
        expiring.add_metric(["ca"], counts.cas_expiring)
        expiring.add_metric(["device"], counts.devices_expiring)
        yield expiring
        yield _counted(
            "certmq_decisions_folded",
            "refusals of peers that proved no known identity, counted into folded rows of the "
            "decision log instead of written one by one, by reason",
            "reason",
            snapshot.refusals_folded,
        )
        yield _counted(
            "certmq_api_calls_folded",
            "calls of the RPC API that were not authenticated, counted into folded rows of the "
            "operations log instead of written one by one, by error code",
            "code",
            snapshot.calls_folded,
        )


def _counted(name: str, documentation: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value or "unknown"], count)
    return family


class Metrics:
    """The instance's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.decisions = Counter(
            "certmq_decisions",
            "authentication decisions by result and reason",
            ["result", "reason"],
            registry=self.registry,
        )
        self.api_calls = Counter(
            "certmq_api_calls",
            "calls of the ApsaraMQ-compatible RPC API by action and outcome (Success or the error code)",
            ["action", "code"],
            registry=self.registry,
        )
        self.secret_failures = Counter(
            "certmq_http_secret_failures",
            "HTTP requests refused for a wrong secret (admin token, AccessKey signature), by route",
            ["route"],
            registry=self.registry,
        )
        self.secret_throttled = Counter(
            "certmq_http_secret_throttled",
            "HTTP requests answered 429 unchecked because their source sent too many wrong secrets, by route",
            ["route"],
            registry=self.registry,
        )
        self._collector = _SnapshotCollector()
        self._decision_counters: dict[tuple[str, str], Any] = {}
        self.registry.register(self._collector)

    def count_decision(self, result: str, reason: str) -> None:
        # Once per CONNECT: the labelled child is looked up once per (result, reason), a few dozen.
        child = self._decision_counters.get((result, reason))
        if child is None:
            child = self.decisions.labels(result=result or "unknown", reason=reason or "unknown")
            self._decision_counters[(result, reason)] = child
        child.inc()

    def count_api_call(self, action: str, code: str) -> None:
        """Count a call of the RPC API. ``action`` must be one the API serves (or "unknown"), never
        a name a client made up: each label value is a time series."""
        self.api_calls.labels(action=action or "unknown", code=code).inc()

    def count_secret_failure(self, route: str) -> None:
        self.secret_failures.labels(route=route).inc()

    def count_secret_throttled(self, route: str) -> None:
        self.secret_throttled.labels(route=route).inc()

    def counting(self, record_decision: F) -> F:
        """``record_decision`` that also counts each decision it records. The decision is its
        first argument, an object with ``result`` and ``reason`` attributes, or keyword
        arguments ``result=`` and ``reason=``."""

        def labels(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
            decision = args[0] if args else None
            result = getattr(decision, "result", kwargs.get("result", ""))
            reason = getattr(decision, "reason", kwargs.get("reason", ""))
            return str(result), str(reason)

        if inspect.iscoroutinefunction(record_decision):

            @functools.wraps(record_decision)
            async def record_and_count_async(*args: Any, **kwargs: Any) -> Any:
                outcome = await record_decision(*args, **kwargs)
                self.count_decision(*labels(args, kwargs))
                return outcome

            return record_and_count_async  # type: ignore[return-value]

        @functools.wraps(record_decision)
        def record_and_count(*args: Any, **kwargs: Any) -> Any:
            outcome = record_decision(*args, **kwargs)
            self.count_decision(*labels(args, kwargs))
            return outcome

        return record_and_count  # type: ignore[return-value]

    def render(
        self,
        control: BrokerControl,
        counts: RegistryCounts,
        refusals_folded: dict[str, int] | None = None,
        calls_folded: dict[str, int] | None = None,
    ) -> bytes:
        """The metrics in the Prometheus text format, as of now. ``refusals_folded`` and
        ``calls_folded``: the registry's
        :attr:`~certmq.registry.service.RegistryService.refusals_folded` and
        :attr:`~certmq.registry.service.RegistryService.calls_folded`."""
        stats = control.stats()
        by_listener = {listener.name: 0 for listener in control.listeners()}
        for name in MQTT_LISTENERS:
            count = stats.get(f"{_CONNECTIONS_PREFIX}{name}", 0)
            if count or name in by_listener:
                by_listener[name] = count
        snapshot = Snapshot(
            stats=dict(stats),
            connections_by_listener=by_listener,
            counts=counts,
            refusals_folded=dict(refusals_folded or {}),
            calls_folded=dict(calls_folded or {}),
        )
        # Setting the snapshot and rendering it happen in one synchronous stretch: scrapes that
        # run at the same time cannot see each other's snapshot.
        self._collector.snapshot = snapshot
        return generate_latest(self.registry)
