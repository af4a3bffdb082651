"""certmq as a cluster, measured in one run: what a second worker adds, and what crossing nodes costs.

    .venv/bin/python bench/cluster.py            # full run, 4 to 8 minutes
    .venv/bin/python bench/cluster.py --quick    # smoke run, about a minute; leaves the docs alone

Starts a throw-away PostgreSQL server and, per cluster, a nats-server with JetStream, on
loopback, then measures:

- **throughput**: certmq as a single node (no cluster), as two single nodes side by side (each
  with a load generator of its own: the most a second process can add on this machine), as one
  node of a cluster (`certmq serve` with NATS and PostgreSQL: "1 worker") and as
  `certmq serve --workers 2`, with the load generator of bench/run.py, in fan-out (1 publisher
  -> 100 subscribers) and fan-in (100 publishers -> 10 subscribers, 10 publishers each) cells;
  the four alternate within each repeat. Rates, and the CPU per delivery of certmq (all its processes) and of nats-server;
- then, on two nodes of one cluster (two `certmq serve` processes, A and B):
  **latency** of deliveries at a steady rate, the subscriber on the publisher's node and on the
  other, QoS 0 and QoS 1; **revocation**: a device inactivated through A's REST API, until its
  mutual TLS session on B (or on A) is cut; **takeover**: a CONNECT on B (or A) with the client
  id of a client connected to A, until its CONNACK, and until A's client has DISCONNECT 0x8E.

Writes bench/results/cluster-<timestamp>.json and, after a full run, the results of the section
"Cluster" of docs/benchmarks.md, whose method it follows.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brokers as broker_processes
import cluster_adoption
import cluster_servers
import load_generator
import machine
import mutual_tls
import processes
import report
import run as throughput_run
from brokers import RunningBroker
from cluster_servers import NatsServer, PostgresServer
from load_generator import Cell
from mqtt_probe import Identity, Probe, ProbeError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
DOCS_FILE = ROOT / "docs" / "benchmarks.md"
BEGIN_MARKER = "<!-- cluster-results:begin -->"
END_MARKER = "<!-- cluster-results:end -->"
DOCS_HEADING = "## Cluster"

# The configurations of the throughput cells, by name (no spaces: names go into client ids).
SINGLE, ONE_WORKER, TWO_WORKERS = "single", "workers-1", "workers-2"
# Two single nodes side by side, each with a load generator of its own running the cell at the
# same time: two processes that share nothing, what a second process can add on this machine at
# most (its ceiling), for any design of the cluster.
SIDE_BY_SIDE = "side-by-side"
CONFIGURATIONS = {
    SINGLE: "single node",
    ONE_WORKER: "1 worker",
    TWO_WORKERS: "2 workers",
    SIDE_BY_SIDE: "2 single nodes side by side",
}
PHASES = ("throughput", "latency", "revocation", "takeover", "adoption")
NOT_AUTHORIZED, SESSION_TAKEN_OVER = 0x87, 0x8E
END_TIMEOUT = 10.0  # seconds for a session to be cut, or taken over


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs, one repeat, few samples: a smoke run"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, from: {', '.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--configurations",
        default=",".join(CONFIGURATIONS),
        help=f"throughput configurations, from: {', '.join(CONFIGURATIONS)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, help="runs per cell and configuration (default 3; --quick: 1)")
    parser.add_argument(
        "--duration", type=float, help="seconds of publishing per throughput run (default 2; --quick: 0.5)"
    )
    parser.add_argument("--size", type=int, default=32, help="payload bytes (default 32)")
    parser.add_argument(
        "--fanout", type=int, default=100, help="subscribers in the fan-out cells (default 100)"
    )
    parser.add_argument(
        "--fan-in",
        default="100,10",
        metavar="P,S",
        help="publishers and subscribers of the fan-in cells (default 100,10)",
    )
    parser.add_argument("--qos", default="0,1", help="QoS levels of the throughput cells (default 0,1)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=1000,
        help="messages per second in the latency cells (default 1000)",
    )
    parser.add_argument(
        "--latency-duration", type=float, help="seconds per latency run (default 3; --quick: 1)"
    )
    parser.add_argument(
        "--samples", type=int, help="revocations and takeovers per placement (default 100; --quick: 10)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=360,
        help="stop starting throughput runs when the rest would not fit in this many seconds (default 360)",
    )
    broker_processes.add_certmq_options(parser)
    processes.add_disturbance_options(parser, default_retries=1)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the servers' logs and data")
    args = parser.parse_args(argv)
    args.phase_names = [name.strip() for name in args.phases.split(",") if name.strip()]
    args.broker_names = [name.strip() for name in args.configurations.split(",") if name.strip()]
    if not args.phase_names or set(args.phase_names) - set(PHASES):
        parser.error(f"--phases: a comma-separated list from {', '.join(PHASES)}")
    if not args.broker_names or set(args.broker_names) - set(CONFIGURATIONS):
        parser.error(f"--configurations: a comma-separated list from {', '.join(CONFIGURATIONS)}")
    try:
        args.fan_in_publishers, args.fan_in_subscribers = (int(part) for part in args.fan_in.split(","))
    except ValueError:
        parser.error("--fan-in P,S: two numbers")
    levels = [level.strip() for level in args.qos.split(",") if level.strip()]
    if not levels or set(levels) - {"0", "1"} or len(set(levels)) != len(levels):
        parser.error("--qos: 0, 1 or 0,1")
    args.qos_levels = sorted(int(level) for level in levels)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 0.5 if args.quick else 2.0
    if args.latency_duration is None:
        args.latency_duration = 1.0 if args.quick else 3.0
    if args.samples is None:
        args.samples = 10 if args.quick else 100
    if args.retries is None:
        args.retries = 0 if args.quick else 1
    if args.repeat < 1 or args.duration <= 0 or args.samples < 1 or not 20 <= args.size <= 65536:
        parser.error("--repeat >= 1, --duration > 0, --samples >= 1, 20 <= --size <= 65536")
    if not (args.fan_in_publishers > 1 and 1 <= args.fan_in_subscribers <= args.fan_in_publishers):
        parser.error("--fan-in P,S: 1 < P, 1 <= S <= P")
    # What bench/run.py's measure() reads.
    args.only, args.publisher_batch = None, 65536
    return args


# Deliveries the publishers may run ahead of the subscribers: a bound of the load generator's
# (an MQTT QoS 0 publisher waits for no subscriber), not of the broker's. It must cover what the
# longest way through the configurations holds (Little's law: rate = what is in flight / time
# in flight): with 100,000, the two workers of the fan-out cell sat idle a quarter of the time,
# the publisher waiting for the subscribers of the other worker, whose messages cross two
# processes and NATS (docs/benchmarks.md, "Cluster").
MAX_LEAD = 1_000_000
# QoS 1 messages the publishers of a cell keep unacknowledged, all together. Without a bound,
# 100 publishers would keep 100,000 messages waiting for the cluster's stream to store them.
IN_FLIGHT = 10_000


def throughput_cells(args: argparse.Namespace) -> list[Cell]:
    fan_in_window = max(1, IN_FLIGHT // args.fan_in_publishers)
    cells = [
        cell
        for qos in args.qos_levels
        for cell in (
            Cell("tcp", qos, args.fanout, max_lead=MAX_LEAD),
            Cell(
                "tcp",
                qos,
                args.fan_in_subscribers,
                publishers=args.fan_in_publishers,
                window=fan_in_window,
                max_lead=MAX_LEAD,
            ),
        )
    ]
    if 1 in args.qos_levels:
        # A subscriber whose session is kept: what each node acknowledges is in its journal
        # first (the single node's on its disk, a cluster node's in JetStream).
        cells.append(Cell("tcp", 1, 1, durable=True))
    return cells


# ---- starting the cluster ----


def cluster_environment(nats: NatsServer, database_url: str, node: str) -> dict[str, str]:
    return {
        "CERTMQ_CLUSTER_NATS_SERVERS": nats.url,
        "CERTMQ_STORAGE_URL": database_url,
        "CERTMQ_CLUSTER_NODE_NAME": node,
    }


@dataclass
class SideBySide:
    """Two single nodes measured as one configuration: each cell runs on both at once."""

    name: str
    first: RunningBroker
    second: RunningBroker

    @property
    def pid(self) -> int:
        return self.first.pid

    @property
    def tcp_port(self) -> int:
        return self.first.tcp_port

    @property
    def facts(self) -> dict[str, str]:
        return self.first.facts

    def alive(self) -> bool:
        return self.first.alive() and self.second.alive()

    def log_tail(self, lines: int = 20) -> str:
        return self.first.log_tail(lines) + "\n" + self.second.log_tail(lines)

    def stop(self) -> None:
        self.first.stop()
        self.second.stop()


def run_cell(broker: RunningBroker | SideBySide, cell: Cell, **options: Any) -> dict[str, Any]:
    """The load generator's run of ``cell``; on two single nodes side by side, one load generator
    each, at once, their results added up."""
    if not isinstance(broker, SideBySide):
        return load_generator.run_cell(broker, cell, **options)
    tag = options.pop("tag")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(load_generator.run_cell, node, cell, tag=f"{tag}-{index}", **options)
            for index, node in enumerate((broker.first, broker.second), 1)
        ]
        first, second = (future.result() for future in futures)
    return added_up(first, second)


def added_up(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two load generators' results of one cell run at the same time, as one result."""
    total = dict(first)
    for key in ("sent", "acked", "received", "expected", "sequence_errors", "deliveries_per_s"):
        total[key] = first[key] + second[key]
    for key in (
        "broker_cpu_s",
        "broker_busy",
        "load_generator_cpu_share",
        "publisher_cpu_s",
        "subscriber_cpu_s",
    ):
        total[key] = first[key] + second[key]
    total["complete"] = first["complete"] and second["complete"]
    total["elapsed_s"] = max(first["elapsed_s"], second["elapsed_s"])
    total["connections_per_process"] = first["connections_per_process"] + second["connections_per_process"]
    total["broker_cpu_by_process_s"] = first["broker_cpu_by_process_s"] + second["broker_cpu_by_process_s"]
    # What each saw of the rest of the machine includes the other node and its load generator.
    total["other_cpu_share"] = max(
        0.0, first["other_cpu_share"] - second["broker_busy"] - second["load_generator_cpu_share"]
    )
    received = total["received"]
    total["cpu_us_per_message"] = total["broker_cpu_s"] * 1e6 / received if received else None
    return total


def start_configuration(
    name: str, args: argparse.Namespace, workdir: Path, postgres: PostgresServer
) -> tuple[RunningBroker | SideBySide, NatsServer | None]:
    """certmq as ``name`` says: a single node, two single nodes side by side, or a cluster of
    its own (its NATS server, its database) run by ``certmq serve --workers N``."""
    if name == SINGLE:
        return broker_processes.start_certmq(workdir, args.python, args.event_loop, None, name=name), None
    if name == SIDE_BY_SIDE:
        nodes = [
            broker_processes.start_certmq(workdir, args.python, args.event_loop, None, name=f"{name}-{index}")
            for index in (1, 2)
        ]
        return SideBySide(name, *nodes), None
    workers = int(name.removeprefix("workers-"))
    nats = cluster_servers.start_nats(workdir / f"nats-{name}")
    broker = broker_processes.start_certmq(
        workdir,
        args.python,
        args.event_loop,
        None,
        cluster_environment(nats, postgres.new_database(), name),
        name=name,
        serve_options=["--workers", str(workers)] if workers > 1 else None,
        # The listeners accept connections once the first worker is up; the others follow.
        ready_pattern=r"\d+ workers sharing" if workers > 1 else None,
    )
    broker.companions = {"nats-server": nats.pid, "postgresql": postgres.pid}
    broker.facts["workers"] = str(workers)
    return broker, nats


def start_configurations(
    args: argparse.Namespace, workdir: Path, postgres: PostgresServer
) -> tuple[dict[str, RunningBroker | SideBySide], list[NatsServer]]:
    """Every configuration at once (each waits for its own processes to start), and their NATS servers."""
    with concurrent.futures.ThreadPoolExecutor(len(args.broker_names)) as pool:
        futures = {
            name: pool.submit(start_configuration, name, args, workdir, postgres)
            for name in args.broker_names
        }
        started = {name: future.result() for name, future in futures.items()}
    running = {name: broker for name, (broker, _) in started.items()}
    for name, broker in running.items():
        print(f"{CONFIGURATIONS[name]}: pid {broker.pid}, tcp 127.0.0.1:{broker.tcp_port}")
    return running, [nats for _, nats in started.values() if nats is not None]


@dataclass
class TwoNodes:
    """Two nodes of one cluster, A and B (one process each, so that the load generator and the
    probes choose the node), in mutual mode with plain TCP open to anonymous clients, and a
    device CA registered through A's REST API."""

    a: RunningBroker
    b: RunningBroker
    api: mutual_tls.CertmqApi
    device_ca: mutual_tls.DeviceCa
    ca_sn: str

    def node(self, name: str) -> RunningBroker:
        return self.a if name == "A" else self.b


def start_two_nodes(args: argparse.Namespace, workdir: Path, postgres: PostgresServer) -> TwoNodes:
    nats = cluster_servers.start_nats(workdir / "nats-nodes")
    database = postgres.new_database()
    first = broker_processes.init_certmq(args.python, workdir / "node-a" / "data")
    second = first.copy(workdir / "node-b" / "data")
    nodes = []
    for name, instance in (("node-a", first), ("node-b", second)):
        http_port = processes.free_port()
        node = broker_processes.start_certmq(
            workdir,
            args.python,
            args.event_loop,
            None,
            {
                **cluster_environment(nats, database, name),
                "CERTMQ_INSTANCE_AUTH_MODE": "mutual",
                "CERTMQ_LISTENERS_HTTP": f"127.0.0.1:{http_port}",
                "CERTMQ_LISTENERS_TCP_IN_MUTUAL_MODE": "true",
            },
            name=name,
            instance=instance,
        )
        processes.wait_for_port(http_port, node.process, broker_processes.START_TIMEOUT)
        node.companions = {"nats-server": nats.pid, "postgresql": postgres.pid}
        node.facts["http_port"] = str(http_port)
        nodes.append(node)
    api = mutual_tls.CertmqApi(int(nodes[0].facts["http_port"]), first.data_dir)
    device_ca = mutual_tls.DeviceCa.create(workdir / "devices")
    ca_sn = api.register_ca(device_ca, "benchmark devices")
    print(
        f"two nodes: A tcp {nodes[0].tcp_port} tls {nodes[0].tls_port}, B tcp {nodes[1].tcp_port} tls {nodes[1].tls_port}"
    )
    return TwoNodes(nodes[0], nodes[1], api, device_ca, ca_sn)


# ---- latency ----

PLACEMENTS = {"same node": "A", "across nodes": "B"}  # where the subscriber is; the publisher is on A


def measure_latency(args: argparse.Namespace, nodes: TwoNodes, log_dir: Path) -> list[dict[str, Any]]:
    """A publisher on A at --latency-rate messages per second, its subscriber on A or on B."""
    runs: list[dict[str, Any]] = []
    serial = 0
    for repeat in range(args.repeat):
        for qos in (0, 1):
            order = list(PLACEMENTS) if (repeat + qos) % 2 == 0 else list(reversed(PLACEMENTS))
            for placement in order:
                serial += 1
                tag = f"latency{serial}-q{qos}-{PLACEMENTS[placement]}"
                record: dict[str, Any] = {"placement": placement, "qos": qos, "repeat": repeat}
                try:
                    record.update(
                        load_generator.run_cell(
                            nodes.a,
                            Cell("tcp", qos, 1),
                            size=args.size,
                            duration=args.latency_duration,
                            tag=tag,
                            log_dir=log_dir,
                            subscriber_broker=nodes.node(PLACEMENTS[placement]),
                            rate=args.latency_rate,
                            latency=True,
                        )
                    )
                except load_generator.LoadGeneratorError as error:
                    record["error"] = str(error)
                    print(f"  latency qos{qos} {placement:<13} ERROR {error}")
                    runs.append(record)
                    continue
                runs.append(record)
                print(
                    f"  latency qos{qos} {placement:<13} p50 {record['latency_p50_us']:>8.0f} us  "
                    f"p99 {record['latency_p99_us']:>8.0f} us  max {record['latency_max_us']:>8.0f} us  "
                    f"({record['latency_samples']} deliveries{'' if record['complete'] else ', INCOMPLETE'})"
                )
    return runs


# ---- revocation ----


def device_identities(
    nodes: TwoNodes, workdir: Path, count: int, label: str
) -> list[tuple[str, str, Identity]]:
    """``count`` new devices of the benchmark CA: (name, device Sn, identity), each in a file of its own."""
    devices = []
    for index in range(count):
        name = f"{label}-{index:04d}"
        issued = mutual_tls.issue_identities(nodes.device_ca, [name], workdir / "devices" / f"{name}.pem")
        devices.append((name, issued.serials[0], Identity(issued.file, issued.file, nodes.a.ca_file)))
    return devices


def connect_device(node: RunningBroker, identity: Identity, client_id: str, timeout: float = 15.0) -> Probe:
    """A device's MQTT over mutual TLS connection to ``node``, connected. Tried again while the
    node refuses it: a node learns of a CA registered on another a moment later (until then its
    TLS handshake fails, unknown CA)."""
    deadline = time.monotonic() + timeout
    while True:
        probe = Probe(node.tls_port, identity)
        try:
            code = probe.open().connect(client_id)
        except (OSError, ProbeError) as error:
            code, failure = None, str(error)
        else:
            if code == 0:
                return probe
            failure = f"reason code 0x{code:02x}"
        probe.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.name} refused device {client_id}: {failure}")
        time.sleep(0.2)


def measure_revocations(args: argparse.Namespace, nodes: TwoNodes, workdir: Path) -> list[dict[str, Any]]:
    """For each device: its mutual TLS session on B (across nodes) or on A (same node); then
    ``POST /api/v1/device-certificates/CA/DEVICE/inactivate`` on A; the time until the session
    is cut, from the moment the request is sent. Placements alternate."""
    devices = device_identities(nodes, workdir, 2 * args.samples, "revoked")
    placements = [("across nodes", nodes.b), ("same node", nodes.a)]
    # First connections register the devices (on the node each will be measured on); the
    # measured sessions are their second.
    for index, (name, _, identity) in enumerate(devices):
        connect_device(placements[index % 2][1], identity, f"{name}-first").close()
    registered = mutual_tls.wait_until(
        lambda: nodes.api.device_total(nodes.ca_sn) >= len(devices), timeout=30, interval=0.2
    )
    if not registered:
        raise RuntimeError(f"only {nodes.api.device_total(nodes.ca_sn)} of {len(devices)} devices registered")
    records = []
    for index, (name, device_sn, identity) in enumerate(devices):
        placement, node = placements[index % 2]
        probe = connect_device(node, identity, name)
        probe.watch_end()
        started = time.monotonic()
        nodes.api.post(f"/device-certificates/{nodes.ca_sn}/{device_sn}/inactivate")
        answered = time.monotonic()
        ended = probe.wait_end(END_TIMEOUT)
        probe.close()
        record = {
            "placement": placement,
            "api_ms": (answered - started) * 1e3,
            "cut_ms": None if ended is None else (ended - started) * 1e3,
            "reason": probe.end_reason,
        }
        records.append(record)
    return records


# ---- takeover ----


def measure_takeovers(args: argparse.Namespace, nodes: TwoNodes) -> list[dict[str, Any]]:
    """A client connected to A; a CONNECT with its client id on B (across nodes) or on A (same
    node): the time until that CONNECT's CONNACK, and until A's client has its DISCONNECT. And a
    CONNECT with a client id no one holds, on B: the CONNACK of a connection that takes nothing
    over. MQTT 5.0, clean start, anonymous, plain TCP; placements alternate."""
    records = []
    for index in range(2 * args.samples):
        placement, node = (("across nodes", nodes.b), ("same node", nodes.a))[index % 2]
        client_id = f"takeover-{index:04d}"
        held = Probe(nodes.a.tcp_port).open()
        if held.connect(client_id) != 0:
            raise RuntimeError(f"node A refused {client_id}")
        held.watch_end()
        taker = Probe(node.tcp_port).open()
        started = time.monotonic()
        taker.send_connect(client_id)
        code = taker.connack()
        connacked = time.monotonic()
        ended = held.wait_end(END_TIMEOUT)
        fresh = Probe(nodes.b.tcp_port).open()
        fresh_started = time.monotonic()
        fresh_code = fresh.connect(f"fresh-{index:04d}")
        fresh_connacked = time.monotonic()
        for probe in (held, taker, fresh):
            probe.close()
        records.append(
            {
                "placement": placement,
                "connack_code": code,
                "connack_ms": (connacked - started) * 1e3,
                "disconnect_ms": None if ended is None else (ended - started) * 1e3,
                "disconnect_reason": held.end_reason,
                "fresh_code": fresh_code,
                "fresh_connack_ms": (fresh_connacked - fresh_started) * 1e3,
            }
        )
    return records


# ---- summaries ----


def percentile(values: list[float], share: float) -> float | None:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -int(-share * len(ordered) // 1))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
    }


def summarise_throughput(
    runs: list[dict[str, Any]], cells: list[Cell], names: list[str]
) -> list[dict[str, Any]]:
    cell_names = [cell.name for cell in cells]
    summary = report.summarise(runs, cell_names, names, subject=TWO_WORKERS, reference=ONE_WORKER)
    against_single = report.summarise(runs, cell_names, names, subject=TWO_WORKERS, reference=SINGLE)
    ceiling = report.summarise(runs, cell_names, names, subject=SIDE_BY_SIDE, reference=SINGLE)
    for entry, other, side_by_side in zip(summary, against_single, ceiling, strict=True):
        for key in ("throughput_ratio", "throughput_ratio_range", "cpu_ratio", "cpu_ratio_range"):
            if key in other:
                entry[f"{key}_vs_single"] = other[key]
            if key in side_by_side:
                entry[f"{key}_side_by_side"] = side_by_side[key]
        for name in names:
            good = [
                r
                for r in runs
                if r["cell"] == entry["cell"]
                and r["broker"] == name
                and "error" not in r
                and "discarded" not in r
            ]
            entry["brokers"][name]["load_generator_cpu_share"] = (
                statistics.median([r["load_generator_cpu_share"] for r in good]) if good else None
            )
            # The busiest process's share of the connections: 1.0 for one process; with two
            # workers, how evenly the kernel spread the connections.
            shares = [
                max(r["connections_per_process"]) / sum(r["connections_per_process"])
                for r in good
                if r.get("connections_per_process")
            ]
            entry["brokers"][name]["largest_connection_share"] = (
                [min(shares), statistics.median(shares), max(shares)] if shares else None
            )
    return summary


def summarise_latency(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per QoS and placement: the median over the runs of each run's percentiles."""
    summary = []
    for qos in (0, 1):
        for placement in PLACEMENTS:
            good = [r for r in runs if r["qos"] == qos and r["placement"] == placement and "error" not in r]
            entry: dict[str, Any] = {"qos": qos, "placement": placement, "runs": len(good)}
            for key in ("latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_max_us"):
                values = [r[key] for r in good]
                entry[key] = statistics.median(values) if values else None
                entry[f"{key}_range"] = [min(values), max(values)] if values else None
            entry["incomplete"] = sum(1 for r in good if not r["complete"])
            entry["deliveries"] = sum(r["latency_samples"] for r in good)
            summary.append(entry)
    return summary


def _ending(reason: int | None) -> str:
    return "closed without DISCONNECT" if reason is None else f"DISCONNECT 0x{reason:02X}"


def summarise_revocations(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for placement in PLACEMENTS:
        mine = [r for r in records if r["placement"] == placement]
        cut = [r["cut_ms"] for r in mine if r["cut_ms"] is not None]
        summary[placement] = {
            "cut_ms": spread(cut),
            "api_ms": spread([r["api_ms"] for r in mine]),
            "not_cut": sum(1 for r in mine if r["cut_ms"] is None),
            "reasons": sorted({_ending(r["reason"]) for r in mine}),
        }
    return summary


def summarise_takeovers(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for placement in PLACEMENTS:
        mine = [r for r in records if r["placement"] == placement]
        summary[placement] = {
            "connack_ms": spread([r["connack_ms"] for r in mine]),
            "disconnect_ms": spread([r["disconnect_ms"] for r in mine if r["disconnect_ms"] is not None]),
            "refused": sum(1 for r in mine if r["connack_code"] != 0),
            "no_disconnect": sum(1 for r in mine if r["disconnect_ms"] is None),
            "reasons": sorted({_ending(r["disconnect_reason"]) for r in mine}),
        }
    summary["new client id"] = {
        "connack_ms": spread([r["fresh_connack_ms"] for r in records]),
        "refused": sum(1 for r in records if r["fresh_code"] != 0),
    }
    return summary


# ---- formatting ----


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _times(value: float | None, bracket: list[float] | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}x"
    if bracket and bracket[0] != bracket[1]:
        text += f" ({bracket[0]:.2f}-{bracket[1]:.2f})"
    return text


def _milliseconds(entry: dict[str, Any]) -> str:
    """p50 / p99 (max) in milliseconds."""
    if not entry["count"]:
        return "-"
    return f"{entry['p50']:.1f} / {entry['p99']:.1f} ({entry['max']:.1f})"


def markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A table whose first ``left`` columns are text, the others numbers (aligned right)."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def throughput_table(summary: list[dict[str, Any]], names: list[str]) -> str:
    """One row per cell and configuration; the rows of two processes have the ratios: 2 workers
    against 1 worker and against the single node, two single nodes side by side against one."""
    header = ["cell", "configuration", "msg/s", "against 1 process", "2 workers / single node"]
    header += ["certmq CPU µs/msg", "nats-server CPU µs/msg", "certmq busy", "load generator busy"]
    rows = []
    for entry in summary:
        for name in names:
            measured = entry["brokers"][name]
            flag = " *" if measured["incomplete"] or measured["errors"] else ""
            nats = measured.get("companion_cpu_us_per_message", {}).get("nats-server")
            ratios = ["", ""]
            if name == TWO_WORKERS:
                ratios = [
                    _times(entry.get("throughput_ratio"), entry.get("throughput_ratio_range")),
                    _times(
                        entry.get("throughput_ratio_vs_single"), entry.get("throughput_ratio_range_vs_single")
                    ),
                ]
            elif name == SIDE_BY_SIDE:
                ratios = [
                    _times(
                        entry.get("throughput_ratio_side_by_side"),
                        entry.get("throughput_ratio_range_side_by_side"),
                    ),
                    "",
                ]
            rows.append(
                [
                    entry["cell"],
                    CONFIGURATIONS[name],
                    _number(measured["deliveries_per_s"]) + flag,
                    *ratios,
                    _number(measured["cpu_us_per_message"], 2),
                    _number(nats, 2),
                    _percent(measured["broker_busy"]),
                    _percent(measured["load_generator_cpu_share"]),
                ]
            )
    return markdown_table(header, rows, left=2)


def connection_spread(summary: list[dict[str, Any]], names: list[str]) -> str:
    """How the kernel spread the load generator's connections over the two workers."""
    if TWO_WORKERS not in names:
        return ""
    parts = []
    for entry in summary:
        shares = entry["brokers"][TWO_WORKERS].get("largest_connection_share")
        if shares:
            low, middle, high = shares
            parts.append(
                f"{entry['cell']} {middle:.0%}" + (f" ({low:.0%}-{high:.0%})" if low != high else "")
            )
    if not parts:
        return ""
    return "\n\nConnections held by the busier of the 2 workers, median (range): " + "; ".join(parts) + "."


def latency_table(summary: list[dict[str, Any]]) -> str:
    header = ["QoS", "subscriber", "p50 µs", "p90 µs", "p99 µs", "max µs", "deliveries"]
    rows = [
        [str(entry["qos"]), entry["placement"]]
        + [
            _number(entry[key])
            for key in ("latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_max_us")
        ]
        + [f"{entry['deliveries']:,}" + (" *" if entry["incomplete"] else "")]
        for entry in summary
    ]
    return markdown_table(header, rows, left=2)


def revocation_table(summary: dict[str, Any]) -> str:
    header = ["session on", "ended by", "cut after, ms: p50 / p99 (max)", "REST call, ms: p50 / p99 (max)"]
    header += ["revocations", "not cut"]
    rows = []
    for placement, where in (("same node", "node A"), ("across nodes", "node B")):
        entry = summary[placement]
        rows.append(
            [
                f"{where}, revoked through A",
                ", ".join(entry["reasons"]),
                _milliseconds(entry["cut_ms"]),
                _milliseconds(entry["api_ms"]),
                str(entry["cut_ms"]["count"] + entry["not_cut"]),
                str(entry["not_cut"]),
            ]
        )
    return markdown_table(header, rows, left=2)


def takeover_table(summary: dict[str, Any]) -> str:
    header = ["CONNECT on", "old connection ended by", "CONNACK after, ms: p50 / p99 (max)"]
    header += ["old connection ended after, ms: p50 / p99 (max)", "samples"]
    rows = []
    for placement, where in (("same node", "node A"), ("across nodes", "node B")):
        entry = summary[placement]
        rows.append(
            [
                f"{where}, id held on A",
                ", ".join(entry["reasons"]),
                _milliseconds(entry["connack_ms"]),
                _milliseconds(entry["disconnect_ms"]),
                str(entry["connack_ms"]["count"]),
            ]
        )
    fresh = summary["new client id"]["connack_ms"]
    rows.append(["node B, an id no one holds", "-", _milliseconds(fresh), "-", str(fresh["count"])])
    return markdown_table(header, rows, left=2)


def describe_run(args: argparse.Namespace, facts: dict[str, Any], started: datetime.datetime) -> str:
    machine_facts = facts["machine"]
    command = "python bench/cluster.py" + (f" {' '.join(facts['argv'])}" if facts["argv"] else "")
    return "\n".join(
        [
            f"Run of {started:%Y-%m-%d %H:%M} UTC: `{command}`, {facts['seconds']:.0f} s in all.",
            f"Machine: {machine_facts['cpus']} CPUs ({machine_facts['cpu_model']}), Linux {machine_facts['kernel']}, "
            f"load average before the run {facts['load_average_before']}; no process pinned to a CPU.",
            f"certmq {facts.get('certmq_version', '?')} at commit {machine_facts['certmq_commit']}, Python "
            f"{machine_facts['python']}, event loop {facts.get('event_loop', '?')} (uvloop {machine_facts['uvloop']}); "
            f"nats-server {facts.get('nats_server', '?')}, PostgreSQL {facts.get('postgresql', '?')}.",
            *(
                [
                    f"Other programs used a median {facts['other_cpu_share_median']:.0%} of a CPU during the "
                    f"throughput runs in the table ({facts['discarded_runs']} runs measured again because they "
                    f"used more than {args.max_disturbance:.0%})."
                ]
                if facts.get("other_cpu_share_median") is not None
                else []
            ),
        ]
    )


def results_block(
    args: argparse.Namespace,
    description: str,
    throughput: list[dict[str, Any]] | None,
    latency: list[dict[str, Any]] | None,
    revocations: dict[str, Any] | None,
    takeovers: dict[str, Any] | None,
    adoptions: dict[str, Any] | None = None,
) -> str:
    parts = [description]
    if throughput is not None:
        parts.append(
            f"**Throughput**, TCP, QoS {' and '.join(map(str, args.qos_levels))}, {args.size}-byte payloads, "
            f"{args.repeat} runs per cell and configuration (median shown; ratios: median of the per-repeat "
            f"ratios, lowest and highest in brackets), {args.duration:g} s of publishing per run. "
            "Against 1 process: 2 workers against 1 worker, 2 single nodes side by side against the "
            "single node. CPU per delivery: certmq's processes (all workers and the supervisor; both "
            "nodes side by side), then nats-server's; busy: their share of one CPU, certmq's and the "
            "load generators'.\n\n"
            + throughput_table(throughput, args.broker_names)
            + connection_spread(throughput, args.broker_names)
        )
    if latency is not None:
        parts.append(
            f"**Latency** from the PUBLISH written on node A to its delivery, {args.latency_rate:g} messages "
            f"per second for {args.latency_duration:g} s, one subscriber, median of {args.repeat} runs' percentiles.\n\n"
            + latency_table(latency)
        )
    if revocations is not None:
        parts.append(
            "**Revocation**: from the inactivation request sent to node A's REST API to the end of the "
            "device's mutual TLS session.\n\n" + revocation_table(revocations)
        )
    if takeovers is not None:
        parts.append(
            "**Takeover**: from the CONNECT written to its CONNACK, and to the DISCONNECT that the client "
            "holding the client id on node A receives.\n\n" + takeover_table(takeovers)
        )
    if adoptions is not None:
        parts.append(
            "**A node killed**: its sessions are adopted by the other node when one of their clients "
            'reconnects there (docs/cluster.md, "When a node is gone"); from the SIGKILL to that '
            "client's CONNACK with Session Present, the client connecting at once. Each sample kills "
            "the node that adopted the sessions of the one before, so it holds 20 more sessions "
            "each time. Clients reconnect after a delay of their own (paho: 1 s at first).\n\n"
            + cluster_adoption.table(adoptions, _milliseconds, markdown_table)
        )
    return "\n\n".join(parts) + "\n"


# ---- the run ----


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    start = time.monotonic()

    processes.exit_on_sigterm("the servers")
    workdir = Path(tempfile.mkdtemp(prefix="certmq-bench-cluster-"))
    log_dir = workdir / "loadgen"
    log_dir.mkdir()
    postgres: PostgresServer | None = None
    facts: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "started": started.isoformat(),
        "load_average_before": machine.load_average(),
    }
    cells = throughput_cells(args)
    throughput_runs: list[dict[str, Any]] = []
    latency_runs: list[dict[str, Any]] = []
    revocation_records: list[dict[str, Any]] = []
    takeover_records: list[dict[str, Any]] = []
    adoption_records: list[dict[str, Any]] = []
    try:
        binary = load_generator.build()
        print(f"load generator: {binary.relative_to(ROOT)}; work directory {workdir}")
        facts["nats_server"] = cluster_servers.nats_version()
        postgres = cluster_servers.start_postgres()
        facts["postgresql"] = postgres.version
        if "throughput" in args.phase_names:
            running, nats_servers = start_configurations(args, workdir, postgres)
            first = next(iter(running.values()))
            facts["certmq_version"], facts["event_loop"] = first.facts["version"], first.facts["event_loop"]
            # Leave room for the phases on two nodes (about a minute and a half at full size).
            rest = 90.0 if set(args.phase_names) - {"throughput"} else 10.0
            deadline = start + args.time_limit - rest
            print(f"throughput: {', '.join(c.name for c in cells)}; {args.repeat} repeats")
            throughput_runs = throughput_run.measure(
                args,
                running,  # type: ignore[arg-type]  # a SideBySide stands for a broker in run_cell
                cells,
                workdir,
                deadline,
                processes.CpuPlan(None, None),
                warm_up=cells,
                run_cell=run_cell,
            )
            # Stopped before the next phases, which would share the CPUs with them.
            for broker in running.values():
                broker.stop()
            for nats in nats_servers:
                processes.stop(nats.process)
        if set(args.phase_names) - {"throughput", "adoption"}:
            nodes = start_two_nodes(args, workdir, postgres)
            facts.setdefault("certmq_version", nodes.a.facts["version"])
            facts.setdefault("event_loop", nodes.a.facts["event_loop"])
            if "latency" in args.phase_names:
                print("latency:")
                latency_runs = measure_latency(args, nodes, log_dir)
            if "revocation" in args.phase_names:
                print(f"revocation: {args.samples} devices on each node")
                revocation_records = measure_revocations(args, nodes, workdir)
            if "takeover" in args.phase_names:
                print(f"takeover: {args.samples} client ids taken over on each node")
                takeover_records = measure_takeovers(args, nodes)
            nodes.api.close()
            for node in (nodes.a, nodes.b):
                node.stop()
        if "adoption" in args.phase_names:
            print(f"adoption: {args.samples} nodes killed, their sessions resumed on the other")
            adoption_records = cluster_adoption.measure(args, workdir, postgres)
    except (load_generator.LoadGeneratorError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        processes.finish(workdir, args.keep_workdir)
        if postgres is not None:
            postgres.remove()

    facts["seconds"] = round(time.monotonic() - start, 1)
    facts["load_average_after"] = machine.load_average()
    facts["machine"] = machine.facts(args.python, ROOT)
    facts["settings"] = {
        key: getattr(args, key)
        for key in (
            *("quick", "repeat", "duration", "size", "fanout", "fan_in", "qos_levels"),
            *("latency_rate", "latency_duration", "samples", "broker_names", "phase_names"),
        )
    }
    counted = [
        r["other_cpu_share"] for r in throughput_runs if "other_cpu_share" in r and "discarded" not in r
    ]
    facts["other_cpu_share_median"] = statistics.median(counted) if counted else None
    facts["discarded_runs"] = sum(1 for r in throughput_runs if "discarded" in r)
    throughput = summarise_throughput(throughput_runs, cells, args.broker_names) if throughput_runs else None
    latency = summarise_latency(latency_runs) if latency_runs else None
    revocations = summarise_revocations(revocation_records) if revocation_records else None
    takeovers = summarise_takeovers(takeover_records) if takeover_records else None
    adoptions = cluster_adoption.summarise(adoption_records, spread) if adoption_records else None
    description = describe_run(args, facts, started)
    block = results_block(args, description, throughput, latency, revocations, takeovers, adoptions)
    print()
    print(block)

    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_file = RESULTS_DIR / f"cluster-{stamp}.json"
    report.write_json(
        json_file,
        {
            "facts": facts,
            "throughput": {"summary": throughput, "runs": throughput_runs},
            "latency": {"summary": latency, "runs": latency_runs},
            "revocation": {"summary": revocations, "records": revocation_records},
            "takeover": {"summary": takeovers, "records": takeover_records},
            "adoption": {"summary": adoptions, "records": adoption_records},
        },
    )
    print(f"results: {json_file.relative_to(ROOT)}")
    complete = (
        not args.quick
        and set(args.phase_names) == set(PHASES)
        and set(args.broker_names) == set(CONFIGURATIONS)
        and all(x is not None for x in (throughput, latency, revocations, takeovers, adoptions))
    )
    if args.no_docs:
        pass
    elif complete:
        report.update_docs(DOCS_FILE, block, begin=BEGIN_MARKER, end=END_MARKER, heading=DOCS_HEADING)
        print(f"updated {DOCS_FILE.relative_to(ROOT)}")
    else:
        print(
            f"{DOCS_FILE.relative_to(ROOT)} not updated (only a full run of every phase and configuration updates it)"
        )
    failed = any("error" in r for r in throughput_runs + latency_runs)
    failed |= any(r["cut_ms"] is None for r in revocation_records)
    failed |= any(r["disconnect_ms"] is None or r["connack_code"] != 0 for r in takeover_records)
    failed |= cluster_adoption.failed(adoption_records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
