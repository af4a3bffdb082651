"""certmq throughput benchmark, with Debian's mosquitto as the reference, in one run.

    .venv/bin/python bench/run.py            # full run, about 4 minutes when the machine is quiet, at most --time-limit
    .venv/bin/python bench/run.py --quick    # smoke run, under a minute

Starts certmq and mosquitto on loopback (TCP and TLS listeners), and for each cell (transport x
QoS x fan-out) runs the C load generator bench/loadgen/mqttload against each broker in turn,
alternating the order, --repeat times. Reports medians and certmq/mosquitto ratios, writes
bench/results/<timestamp>.json and .png, and the results table of docs/benchmarks.md.
The method is described in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import brokers as broker_processes
import certificates
import load_generator
import machine
import processes
import report
from load_generator import Cell

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
DOCS_FILE = ROOT / "docs" / "benchmarks.md"
KNOWN_BROKERS = ("certmq", "mosquitto")
SETUP_ALLOWANCE = 3.0  # seconds per run beyond the publishing time: connections, drain, teardown
TEARDOWN_ALLOWANCE = 20.0  # seconds to stop the brokers and write the results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short cells, one repeat: a smoke run")
    parser.add_argument("--only", choices=("tcp", "tls"), help="one transport only")
    parser.add_argument(
        "--brokers",
        default="certmq,mosquitto",
        help="comma-separated, from: certmq, mosquitto (default: both)",
    )
    parser.add_argument("--size", type=int, default=32, help="payload bytes (default 32)")
    parser.add_argument(
        "--repeat", type=int, help="runs per cell and broker; the median is reported (default 5)"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of publishing per run (default 3; --quick: 0.5)"
    )
    parser.add_argument(
        "--fanout", type=int, default=100, help="subscribers in the fan-out cells (default 100)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=600,
        help="stop starting runs after this many seconds (default 600)",
    )
    broker_processes.add_certmq_options(parser)
    parser.add_argument(
        "--publisher-batch",
        type=int,
        default=65536,
        metavar="BYTES",
        help="bytes of messages the publisher gathers per write (default 65536; 1: one message per write)",
    )
    processes.add_disturbance_options(parser, default_retries=2)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the broker to one CPU and the load generator to the others",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the brokers' logs and data for a look"
    )
    args = parser.parse_args(argv)
    args.broker_names = [name.strip() for name in args.brokers.split(",") if name.strip()]
    unknown = set(args.broker_names) - set(KNOWN_BROKERS)
    if unknown or not args.broker_names or len(set(args.broker_names)) != len(args.broker_names):
        parser.error(f"--brokers: a comma-separated list of distinct names from {', '.join(KNOWN_BROKERS)}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    if args.duration is None:
        args.duration = 0.5 if args.quick else 3.0
    if args.repeat < 1 or args.duration <= 0 or not 0 <= args.size <= 65536 or args.fanout < 1:
        parser.error("--repeat >= 1, --duration > 0, 0 <= --size <= 65536, --fanout >= 1")
    if args.publisher_batch < 1 or args.retries < 0 or args.max_disturbance < 0:
        parser.error("--publisher-batch >= 1, --retries >= 0, --max-disturbance >= 0")
    return args


def plan_cells(args: argparse.Namespace) -> list[Cell]:
    transports = [args.only] if args.only else ["tcp", "tls"]
    cells = [
        Cell(t, qos, subscribers) for t in transports for subscribers in (1, args.fanout) for qos in (0, 1)
    ]
    return cells + [Cell(t, 1, 1, durable=True) for t in transports]


def fit_duration(args: argparse.Namespace, runs: int) -> None:
    """Shorten the publishing time if the planned runs would not fit in the time limit."""
    budget = args.time_limit * 0.9 - 30  # start-up and warm-up
    needed = runs * (args.duration + SETUP_ALLOWANCE)
    if needed > budget:
        shorter = max(0.5, budget / runs - SETUP_ALLOWANCE)
        if shorter < args.duration:
            print(
                f"note: {runs} runs of {args.duration:.1f} s would not fit in {args.time_limit:.0f} s; "
                f"publishing {shorter:.1f} s per run instead"
            )
            args.duration = round(shorter, 1)


def start_brokers(
    args: argparse.Namespace, workdir: Path, cpus: processes.CpuPlan
) -> dict[str, broker_processes.RunningBroker]:
    running: dict[str, broker_processes.RunningBroker] = {}
    key_kind = certificates.DEFAULT_KEY_KIND
    if "certmq" in args.broker_names:
        certmq = broker_processes.start_certmq(workdir, args.python, args.event_loop, cpus.broker)
        key_kind = certificates.served_key_kind(certmq.tls_port)
        certmq.facts["server_key"] = str(key_kind)
        running["certmq"] = certmq
    if "mosquitto" in args.broker_names:
        certificate = certificates.make_server_certificate(workdir / "mosquitto-tls", key_kind)
        running["mosquitto"] = broker_processes.start_mosquitto(
            workdir, certificate, cpus.broker, persistence=True
        )
    for name, broker in running.items():
        details = ", ".join(f"{k} {v}" for k, v in broker.facts.items() if k != "config")
        print(
            f"{name}: pid {broker.pid}, tcp 127.0.0.1:{broker.tcp_port}, tls 127.0.0.1:{broker.tls_port}; {details}"
        )
    return running


def measure(
    args: argparse.Namespace,
    running: dict[str, broker_processes.RunningBroker],
    cells: list[Cell],
    workdir: Path,
    deadline: float,
    cpus: processes.CpuPlan,
    warm_up: list[Cell] | None = None,
    run_cell: Callable[..., dict[str, Any]] = load_generator.run_cell,
) -> list[dict[str, Any]]:
    """Run every cell on every broker of ``running`` in turn, ``args.repeat`` times; ``warm_up``:
    the cells run first on each broker and not recorded (default: QoS 1, each transport, 1 and
    ``args.fanout`` subscribers). ``run_cell``: what runs one cell on one broker (the load
    generator's, unless a caller measures something else as a broker)."""
    log_dir = workdir / "loadgen"
    log_dir.mkdir(exist_ok=True)
    names = [name for name in args.broker_names if name in running]
    if warm_up is None:
        warm_up = [
            Cell(transport, 1, subscribers)
            for transport in ([args.only] if args.only else ["tcp", "tls"])
            for subscribers in (1, args.fanout)
        ]
    # Warm-up, not recorded: the first connections and the first thousands of messages of a
    # Python process are slower (imports on first use, allocator growth).
    for name in names:
        for cell in warm_up:
            try:
                run_cell(
                    running[name],
                    cell,
                    size=args.size,
                    duration=0.3,
                    tag=f"warmup-{name}-{cell.transport}-{cell.publishers}-{cell.subscribers}",
                    log_dir=log_dir,
                    cpus=cpus.load_generator,
                )
            except load_generator.LoadGeneratorError as error:
                print(f"warm-up {name} {cell.name}: {error}")
    runs: list[dict[str, Any]] = []
    serial = 0
    planned_pairs = args.repeat * len(cells)
    pair_seconds = len(names) * (args.duration + SETUP_ALLOWANCE)  # refined as pairs complete
    done_pairs = 0
    for repeat in range(args.repeat):
        for index, cell in enumerate(cells):
            # Alternate which broker goes first, so that a drift in the machine's speed
            # does not favour one of them.
            order = names if (repeat + index) % 2 == 0 else list(reversed(names))
            for attempt in range(1 + args.retries):
                if time.monotonic() + pair_seconds > deadline:
                    print(f"time limit reached: skipping the remaining runs (repeat {repeat + 1})")
                    return runs
                pair_started = time.monotonic()
                pair = []
                for name in order:
                    serial += 1
                    pair.append(run_one(args, running[name], cell, repeat, serial, log_dir, cpus, run_cell))
                runs.extend(pair)
                pair_seconds = max(pair_seconds, time.monotonic() - pair_started)
                disturbance = max((run.get("other_cpu_share", 0.0) for run in pair), default=0.0)
                # Measure again only while the rest of the plan still fits in the time limit.
                remaining = planned_pairs - done_pairs
                room = deadline - time.monotonic() > (remaining + 1) * pair_seconds
                if disturbance <= args.max_disturbance or attempt == args.retries or not room:
                    break
                # Other programs took a large share of the machine during this pair: measure
                # the pair again, and keep these runs in the JSON file only.
                for run in pair:
                    run["discarded"] = f"other programs used {disturbance:.0%} of a CPU"
                print(
                    f"  {cell.name:<20} other programs used {disturbance:.0%} of a CPU: measuring the pair again"
                )
            done_pairs += 1
    return runs


def run_one(
    args: argparse.Namespace,
    broker: broker_processes.RunningBroker,
    cell: Cell,
    repeat: int,
    serial: int,
    log_dir: Path,
    cpus: processes.CpuPlan,
    run_cell: Callable[..., dict[str, Any]] = load_generator.run_cell,
) -> dict[str, Any]:
    name = broker.name
    record: dict[str, Any] = {
        "broker": name,
        "cell": cell.name,
        "repeat": repeat,
        "transport": cell.transport,
        "qos": cell.qos,
        "subscribers": cell.subscribers,
        "publishers": cell.publishers,
    }
    if not broker.alive():
        record["error"] = f"{name} is not running (exit status {broker.process.returncode})"
        print(f"  {cell.name:<20} {name:<10} ERROR {record['error']}")
        return record
    tag = f"r{serial}-{name}-{cell.transport}-q{cell.qos}-s{cell.subscribers}"
    try:
        record.update(
            run_cell(
                broker,
                cell,
                size=args.size,
                duration=args.duration,
                tag=tag,
                log_dir=log_dir,
                cpus=cpus.load_generator,
                write_batch=args.publisher_batch,
            )
        )
    except load_generator.LoadGeneratorError as error:
        record["error"] = str(error)
        print(f"  {cell.name:<20} {name:<10} ERROR {error}")
        if not broker.alive():
            print(f"  {name} exited; last lines of its log:\n{broker.log_tail()}")
        return record
    missing = "" if record["complete"] else f"  INCOMPLETE {record['received']}/{record['expected']}"
    print(
        f"  {cell.name:<20} {name:<10} {record['deliveries_per_s']:>12,.0f} msg/s "
        f"{record['cpu_us_per_message'] or 0:>7.2f} us/msg  busy {record['broker_busy']:>4.0%}  "
        f"load generator {record['load_generator_cpu_share']:>4.0%}  other {record['other_cpu_share']:>4.0%}"
        f"{missing}"
    )
    return record


def load_generator_peak(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run where the load generator used the largest share of its CPU (both threads)."""
    peak = None
    for run in runs:
        if "error" in run or "discarded" in run or not run.get("elapsed_s"):
            continue
        share = (run["publisher_cpu_s"] + run["subscriber_cpu_s"]) / run["elapsed_s"]
        if peak is None or share > peak["cpu_share"]:
            peak = {
                "cpu_share": share,
                "cell": run["cell"],
                "broker": run["broker"],
                "broker_busy": run["broker_busy"],
            }
    return peak


def describe_run(args: argparse.Namespace, facts: dict[str, Any], started: datetime.datetime) -> str:
    brokers = facts["brokers"]
    parts = [
        f"Run of {started:%Y-%m-%d %H:%M} UTC: `python bench/run.py"
        + (f" {' '.join(facts['argv'])}" if facts["argv"] else "")
        + "`; "
        f"{args.repeat} run{'s' if args.repeat > 1 else ''} per cell and broker (median shown), {args.duration:g} s of publishing per run, "
        f"{args.size}-byte payload, MQTT 3.1.1, "
        + (
            "one message per write from the publisher."
            if args.publisher_batch == 1
            else f"the publisher gathers up to {args.publisher_batch} bytes of messages per write."
        )
    ]
    machine_facts = facts["machine"]
    parts.append(
        f"Machine: {machine_facts['cpus']} CPUs ({machine_facts['cpu_model']}), Linux {machine_facts['kernel']}, "
        f"{machine_facts['openssl']}, load average before the run {facts['load_average_before']}; "
        f"{facts['cpu_pinning']}."
    )
    if "certmq" in brokers:
        certmq = brokers["certmq"]
        parts.append(
            f"certmq {certmq['version']} at commit {machine_facts['certmq_commit']}, Python {machine_facts['python']}, "
            f"event loop {certmq['event_loop']} (uvloop {machine_facts['uvloop']}), server key {certmq['server_key']}, "
            f"MQTT over TLS by {machine_facts.get('certmq_openssl', 'unknown')}."
        )
    if "mosquitto" in brokers:
        mosquitto = brokers["mosquitto"]
        parts.append(f"mosquitto {mosquitto['version']}, server key {mosquitto['server_key']}.")
    other = facts.get("other_cpu_share_median")
    if other is not None:
        parts.append(
            f"Other programs used a median {other:.0%} of a CPU during the runs in the table"
            + (
                ": the machine was busy, so the absolute numbers are low and the ratios less certain."
                if other > args.max_disturbance
                else "."
            )
        )
    discarded = facts.get("discarded_runs", 0)
    if discarded:
        parts.append(
            f"{discarded} runs were measured again because other programs used more than "
            f"{args.max_disturbance:.0%} of a CPU meanwhile (kept in the JSON file, not in the table)."
        )
    peak = facts.get("load_generator_peak")
    if peak:
        parts.append(
            f"The load generator used at most {peak['cpu_share']:.0%} of one CPU ({peak['cell']} on {peak['broker']}, "
            f"which was {peak['broker_busy']:.0%} busy in that run)."
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    start = time.monotonic()
    deadline = start + args.time_limit - TEARDOWN_ALLOWANCE
    cells = plan_cells(args)
    fit_duration(args, len(cells) * len(args.broker_names) * args.repeat)

    processes.exit_on_sigterm("the brokers")
    workdir = Path(tempfile.mkdtemp(prefix="certmq-bench-"))
    try:
        binary = load_generator.build()
        print(f"load generator: {binary.relative_to(ROOT)}; work directory {workdir}")
        load_before = machine.load_average()
        cpus = processes.CpuPlan.split(not args.no_pin)
        print(f"CPUs: {cpus.describe()}")
        running = start_brokers(args, workdir, cpus)
        runs = measure(args, running, cells, workdir, deadline, cpus)
        load_after = machine.load_average()
        for name, broker in running.items():
            if not broker.alive():
                print(
                    f"{name} exited during the run (status {broker.process.returncode}); log: {broker.log_file}"
                )
    except load_generator.LoadGeneratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        processes.finish(workdir, args.keep_workdir)

    names = args.broker_names
    summary = report.summarise(runs, [cell.name for cell in cells], names)
    facts: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "started": started.isoformat(),
        "seconds": round(time.monotonic() - start, 1),
        "machine": machine.facts(args.python, ROOT),
        "brokers": {name: broker.facts for name, broker in running.items()},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu_pinning": cpus.describe(),
        "settings": {
            "size": args.size,
            "repeat": args.repeat,
            "duration": args.duration,
            "fanout": args.fanout,
            "protocol": "MQTT 3.1.1",
            "publisher_batch": args.publisher_batch,
            "quick": args.quick,
        },
    }
    facts["load_generator_peak"] = load_generator_peak(runs)
    facts["discarded_runs"] = sum(1 for run in runs if "discarded" in run)
    counted = [run["other_cpu_share"] for run in runs if "other_cpu_share" in run and "discarded" not in run]
    facts["other_cpu_share_median"] = statistics.median(counted) if counted else None
    description = describe_run(args, facts, started)
    print()
    print(description)
    print()
    print(report.console_table(summary, names))
    print(
        "msg/s: deliveries per second, end to end (median); ratio: median of the per-repeat ratios; "
        "busy: broker CPU / wall time (median); * some runs incomplete or failed, see the JSON"
    )

    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_file, chart_file = RESULTS_DIR / f"{stamp}.json", RESULTS_DIR / f"{stamp}.png"
    report.write_json(json_file, {"facts": facts, "summary": summary, "runs": runs})
    print(f"\nresults: {json_file.relative_to(ROOT)}")
    if report.write_chart(chart_file, summary, names, description.splitlines()[0]):
        print(f"chart:   {chart_file.relative_to(ROOT)}")
    complete_comparison = (
        set(names) == set(KNOWN_BROKERS)
        and not args.quick
        and not args.only
        and args.publisher_batch == 65536
    )
    if args.no_docs:
        pass
    elif complete_comparison and runs:
        block = f"{description}\n\n{report.markdown_table(summary, names)}\n"
        report.update_docs(DOCS_FILE, block)
        print(f"updated {DOCS_FILE.relative_to(ROOT)}")
    else:
        print(
            f"{DOCS_FILE.relative_to(ROOT)} not updated (only a full run of both brokers, "
            "with the default publisher batch, updates it)"
        )
    failed = any("error" in run for run in runs)
    return 1 if failed or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
