"""The time from a node's death to its sessions being resumable on another node, for
``bench/cluster.py --phases adoption`` (docs/cluster.md, "When a node is gone").

Two nodes keep their sessions in JetStream (the default). In each sample, persistent sessions
(session expiry 600 s, one QoS 1 subscription each, messages queued for them by a publisher on
the other node) are made on one node, which is then killed (SIGKILL). At once, a client of one
of those sessions connects to the other node with Clean Start 0: its CONNACK, with Session
Present, comes once that node has adopted the dead node's sessions; the time from the kill to
that CONNACK is what is measured, and the queued messages are counted as they arrive. The dead
node is then started again (it starts empty: its sessions live on), and the next sample kills
the other node. Compare with the reconnect delay of clients: paho waits 1 s before its first
attempt, by default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import brokers as broker_processes
import cluster_servers
from brokers import CertmqInstance, RunningBroker
from cluster_servers import PostgresServer
from mqtt_probe import Probe

SESSIONS = 20  # persistent sessions on the node that dies, per sample
QUEUED = 5  # messages queued for each
EXPIRY = 600
DEATHS = 8  # samples at most (each kills a node and starts it again): --samples when fewer


class Pair:
    """Two nodes of a cluster that can be killed and started again."""

    def __init__(self, args: argparse.Namespace, workdir: Path, postgres: PostgresServer) -> None:
        self.args = args
        self.workdir = workdir
        nats = cluster_servers.start_nats(workdir / "nats-adoption")
        self.nats_pid = nats.pid
        database = postgres.new_database()
        first = broker_processes.init_certmq(args.python, workdir / "adopt-a" / "data")
        self.instances: dict[str, CertmqInstance] = {
            "adopt-a": first,
            "adopt-b": first.copy(workdir / "adopt-b" / "data"),
        }
        self.environment = {
            "CERTMQ_CLUSTER_NATS_SERVERS": nats.url,
            "CERTMQ_STORAGE_URL": database,
        }
        self.nodes: dict[str, RunningBroker] = {}
        for name in self.instances:
            self.start(name)

    def start(self, name: str) -> RunningBroker:
        node = broker_processes.start_certmq(
            self.workdir,
            self.args.python,
            self.args.event_loop,
            None,
            {**self.environment, "CERTMQ_CLUSTER_NODE_NAME": name},
            name=name,
            instance=self.instances[name],
        )
        self.nodes[name] = node
        return node

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def measure(args: argparse.Namespace, workdir: Path, postgres: PostgresServer) -> list[dict[str, Any]]:
    pair = Pair(args, workdir, postgres)
    records = []
    try:
        dying, surviving = "adopt-a", "adopt-b"
        for sample in range(min(args.samples, DEATHS)):
            records.append(one_death(pair, sample, dying, surviving))
            pair.start(dying)
            dying, surviving = surviving, dying
    finally:
        pair.stop()
    return records


def one_death(pair: Pair, sample: int, dying: str, surviving: str) -> dict[str, Any]:
    holder, other = pair.nodes[dying], pair.nodes[surviving]
    client_ids = [f"adopt-{sample}-{number}" for number in range(SESSIONS)]
    for number, client_id in enumerate(client_ids):
        probe = Probe(holder.tcp_port).open()
        probe.connect(client_id, expiry=EXPIRY)
        probe.subscribe(f"adopt/{sample}/{number}", 1)
        probe.close()  # no DISCONNECT: the session stays, offline
    publisher = Probe(other.tcp_port).open()
    publisher.connect(f"adopt-publisher-{sample}")
    refused = 0
    for number in range(SESSIONS):
        for _ in range(QUEUED):
            refused += publisher.publish(f"adopt/{sample}/{number}", b"queued") != 0
    publisher.close()
    time.sleep(0.5)  # routed by the holder, into its journal

    holder.process.kill()
    holder.process.wait()
    killed = time.monotonic()
    client = Probe(other.tcp_port).open()
    code = client.connect(client_ids[0], clean_start=False, expiry=EXPIRY)
    resumed = time.monotonic()
    present = client.session_present
    received = client.receive(QUEUED, timeout=10.0)
    client.close()
    return {
        "sample": sample,
        "connack_code": code,
        "session_present": present,
        "resumable_ms": (resumed - killed) * 1e3,
        "queued": QUEUED,
        "received": received,
        "refused_publishes": refused,
    }


def summarise(records: list[dict[str, Any]], spread: Any) -> dict[str, Any]:
    return {
        "resumable_ms": spread([r["resumable_ms"] for r in records]),
        "samples": len(records),
        "without_session": sum(1 for r in records if r["connack_code"] != 0 or not r["session_present"]),
        "messages_missing": sum(r["queued"] - r["received"] for r in records),
        "sessions": SESSIONS,
        "queued": QUEUED,
    }


def table(summary: dict[str, Any], milliseconds: Any, markdown_table: Any) -> str:
    header = [
        "node killed with",
        "CONNACK (Session Present) on the other node, ms after the kill: p50 / p99 (max)",
    ]
    header += ["without their session", "queued messages missing", "samples"]
    row = [
        f"{summary['sessions']} more sessions each time, {summary['queued']} messages queued for each",
        milliseconds(summary["resumable_ms"]),
        str(summary["without_session"]),
        str(summary["messages_missing"]),
        str(summary["samples"]),
    ]
    return markdown_table(header, [row], left=1)


def failed(records: list[dict[str, Any]]) -> bool:
    return any(
        r["connack_code"] != 0 or not r["session_present"] or r["received"] < r["queued"] for r in records
    )
