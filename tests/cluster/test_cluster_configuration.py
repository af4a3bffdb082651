"""Starting a cluster: what a node refuses, and three nodes that come up ready."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from cluster_nodes import READINESS_PATH, ClusterNodes, SharedInstance, readiness
from nats_servers import NatsCluster

from broker_process import certmq_command


def test_a_node_without_a_shared_registry_refuses_to_start_and_names_storage_url(
    nats_cluster: NatsCluster, shared_instance: SharedInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"
    shared_instance.copy_to(data_dir)
    command, environment = certmq_command()
    environment["CERTMQ_CLUSTER_NATS_SERVERS"] = nats_cluster.urls
    environment["CERTMQ_CLUSTER_NODE_NAME"] = "node-1"
    result = subprocess.run(
        [*command, "serve", "--data-dir", str(data_dir)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0, f"the node started on SQLite:\n{result.stdout}\n{result.stderr}"
    assert "storage.url" in result.stderr, result.stderr
    assert "CERTMQ_STORAGE_URL" in result.stderr, result.stderr


def test_a_node_whose_registry_cannot_be_reached_says_so_without_its_password(
    shared_instance: SharedInstance, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"
    shared_instance.copy_to(data_dir)
    command, environment = certmq_command()
    # Port 1 on loopback: nothing listens there.
    environment["CERTMQ_STORAGE_URL"] = "postgresql://certmq:hunter2@127.0.0.1:1/certmq"
    result = subprocess.run(
        [*command, "serve", "--data-dir", str(data_dir)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, f"{result.returncode}:\n{result.stderr}"
    assert "cannot open the registry at postgresql" in result.stderr, result.stderr
    assert "127.0.0.1:1" in result.stderr and "CERTMQ_STORAGE_URL" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_three_nodes_on_nats_and_postgresql_all_come_up_ready(
    start_cluster: Callable[..., ClusterNodes],
) -> None:
    cluster = start_cluster((1, 2, 3), empty_registry=True)
    answers = {number: readiness(node) for number, node in cluster.nodes.items()}
    assert {number: answer.status_code for number, answer in answers.items()} == {1: 200, 2: 200, 3: 200}, (
        f"{READINESS_PATH}: "
        + "; ".join(f"node-{n}: {a.status_code} {a.text[:200]}" for n, a in answers.items())
    )
