"""certmq's CPU cost per mutual TLS connection, with Debian's mosquitto as the reference, in one run.

    .venv/bin/python bench/connections.py            # full run, about 6 minutes
    .venv/bin/python bench/connections.py --quick    # smoke run, about 2 minutes
    .venv/bin/python bench/connections.py --profile  # certmq alone under cProfile: where its time goes

Starts certmq in mutual mode and mosquitto with ``require_certificate true`` on loopback, both
trusting the same device CA, and measures the broker's CPU time per connection, a full TLS 1.3
handshake with a client certificate then CONNECT, CONNACK and DISCONNECT, for two cells:

- registered device: one device certificate connects again and again (certmq registered it on
  its first connection, during the warm-up);
- first-time device: N devices connect once each (certmq registers each: a committed row, an
  audit record); a fresh set of devices for every pair of runs.

Each cell runs on one broker then the other, alternating the order, --repeat times; the table
shows medians and the median of the per-repeat certmq / mosquitto ratios. Then it times the
mutual-authentication decision with 1,000,000 registered devices (bench/decision_scale.py).
It writes bench/results/connections-<timestamp>.json and, after a full run, the results of the
section "Connection cost (mutual TLS)" of docs/benchmarks.md, whose method it follows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import brokers as broker_processes
import certificates
import connection_generator
import decision_scale
import machine
import mutual_tls
import processes
import report
from brokers import RunningBroker
from load_generator import LoadGeneratorError
from mutual_tls import DeviceCa, DeviceIdentities, MutualCertmq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
DOCS_FILE = ROOT / "docs" / "benchmarks.md"
BEGIN_MARKER = "<!-- connection-results:begin -->"
END_MARKER = "<!-- connection-results:end -->"
DOCS_HEADING = "## Connection cost (mutual TLS)"
SUBJECT, REFERENCE = "certmq", "mosquitto"
BROKERS = (SUBJECT, REFERENCE)
CELLS = ("registered device", "first-time device")
REGISTERED_DEVICE = "registered-device-0001"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer connections, one repeat, 100,000 devices")
    parser.add_argument(
        "--repeat", type=int, help="runs per cell and broker; the median is reported (default 5)"
    )
    parser.add_argument(
        "--connections", type=int, help="connections per run, and first-time devices per run (default 1000)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight (default 4)")
    parser.add_argument(
        "--devices", type=int, help="registered devices for the decision cost (default 1,000,000)"
    )
    parser.add_argument(
        "--real-devices", type=int, default=500, help="of which real, registered certificates (default 500)"
    )
    parser.add_argument("--no-decisions", action="store_true", help="skip the decision cost at scale")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run certmq alone under cProfile through a long run of each cell, and print its hot spots",
    )
    broker_processes.add_certmq_options(parser)
    processes.add_disturbance_options(parser, default_retries=1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the broker to one CPU")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the brokers' logs and data")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    if args.connections is None:
        args.connections = 200 if args.quick else 1000
    if args.devices is None:
        args.devices = 100_000 if args.quick else 1_000_000
    if args.retries is None:
        args.retries = 0 if args.quick else 1
    if args.repeat < 1 or args.connections < 10 or not 1 <= args.concurrency <= 64 or args.retries < 0:
        parser.error("--repeat >= 1, --connections >= 10, 1 <= --concurrency <= 64, --retries >= 0")
    if not 1 <= args.real_devices <= args.devices:
        parser.error("1 <= --real-devices <= --devices")
    return args


class Devices:
    """The device identities of the run: one registered device, and fresh first-time sets."""

    def __init__(self, workdir: Path) -> None:
        self.directory = workdir / "devices"
        self.ca = DeviceCa.create(self.directory)
        self.registered = mutual_tls.issue_identities(
            self.ca, [REGISTERED_DEVICE], self.directory / "registered.pem"
        )
        self.first_time_sets: list[DeviceIdentities] = []

    def first_time(self, count: int, label: str) -> DeviceIdentities:
        number = len(self.first_time_sets) + 1
        names = [f"first-time-{label}-{number:03d}-{index:05d}" for index in range(count)]
        identities = mutual_tls.issue_identities(
            self.ca, names, self.directory / f"first-time-{number:03d}.pem"
        )
        self.first_time_sets.append(identities)
        return identities


# ---- measuring ----


def run_one(
    broker: RunningBroker,
    cell: str,
    identities: DeviceIdentities,
    connections: int,
    args: argparse.Namespace,
    tag: str,
    log_dir: Path,
    cpus: processes.CpuPlan,
) -> dict[str, Any]:
    record: dict[str, Any] = {"broker": broker.name, "cell": cell, "identities_file": identities.file.name}
    if not broker.alive():
        record["error"] = f"{broker.name} is not running (exit status {broker.process.returncode})"
        return record
    try:
        record.update(
            connection_generator.run_connections(
                broker,
                identities=identities.file,
                connections=connections,
                concurrency=args.concurrency,
                tag=tag,
                log_dir=log_dir,
                cpus=cpus.load_generator,
            )
        )
    except LoadGeneratorError as error:
        record["error"] = str(error)
        if not broker.alive():
            record["error"] += f"; {broker.name} exited:\n{broker.log_tail()}"
    return record


def print_run(record: dict[str, Any]) -> None:
    label = f"  {record['cell']:<18} {record['broker']:<10}"
    if "error" in record:
        print(f"{label} ERROR {record['error']}")
        return
    problems = ""
    if not record["complete"]:
        problems = (
            f"  INCOMPLETE {record['succeeded']}/{record['connections']} "
            f"(refused {record['refused']}, failed {record['failed']}: {record['first_error']})"
        )
    print(
        f"{label} {record['cpu_ms_per_connection'] or 0:>6.2f} ms CPU/conn {record['connections_per_s']:>6.0f} conn/s  "
        f"busy {record['broker_busy']:>4.0%}  client {record['client_cpu_share']:>4.0%}  "
        f"other {record['other_cpu_share']:>4.0%}{problems}"
    )


def warm_up(
    running: dict[str, RunningBroker],
    devices: Devices,
    args: argparse.Namespace,
    log_dir: Path,
    cpus: processes.CpuPlan,
) -> None:
    """Not recorded. The first connection also proves that each broker accepts the device CA (on
    certmq the CA's registration reaches the TLS layer a moment after the API answered) and, on
    certmq, registers the device of the registered-device cell."""
    for name, broker in running.items():

        def accepted(broker: RunningBroker = broker) -> bool:
            result = run_one(
                broker, "probe", devices.registered, 1, args, f"probe-{broker.name}", log_dir, cpus
            )
            return result.get("succeeded") == 1

        if not mutual_tls.wait_until(accepted, timeout=15, interval=0.5):
            probe = run_one(broker, "probe", devices.registered, 1, args, f"probe-{name}", log_dir, cpus)
            raise RuntimeError(f"{name} refuses the device certificate: {probe.get('first_error') or probe}")
    count = 50 if args.quick else 200
    new_devices = devices.first_time(count // 2, "warmup")
    for name, broker in running.items():
        for cell, identities, connections in (
            ("registered device", devices.registered, count),
            ("first-time device", new_devices, count // 2),
        ):
            result = run_one(
                broker, cell, identities, connections, args, f"warmup-{name}-{cell[:5]}", log_dir, cpus
            )
            if "error" in result or not result["complete"]:
                print(f"warm-up {name} {cell}: {result.get('error') or result.get('first_error')}")


def measure(
    running: dict[str, RunningBroker],
    devices: Devices,
    args: argparse.Namespace,
    log_dir: Path,
    cpus: processes.CpuPlan,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    names = list(running)
    serial = 0
    for repeat in range(args.repeat):
        for index, cell in enumerate(CELLS):
            # Alternate which broker goes first, so that a drift in the machine's speed favours neither.
            order = names if (repeat + index) % 2 == 0 else list(reversed(names))
            for attempt in range(1 + args.retries):
                if cell == "registered device":
                    identities = devices.registered
                else:
                    # Both brokers of a pair get the same, never seen, devices.
                    identities = devices.first_time(args.connections, f"r{repeat + 1}")
                pair = []
                for name in order:
                    serial += 1
                    tag = f"r{serial}-{name}-{'reg' if cell == 'registered device' else 'new'}"
                    record = run_one(
                        running[name], cell, identities, args.connections, args, tag, log_dir, cpus
                    )
                    record.update(repeat=repeat, attempt=attempt)
                    print_run(record)
                    pair.append(record)
                runs.extend(pair)
                disturbance = max((run.get("other_cpu_share", 0.0) for run in pair), default=0.0)
                if disturbance <= args.max_disturbance or attempt == args.retries:
                    break
                for run in pair:
                    run["discarded"] = f"other programs used {disturbance:.0%} of a CPU"
                print(
                    f"  {cell:<18} other programs used {disturbance:.0%} of a CPU: measuring the pair again"
                )
    return runs


def idle_cpu(running: dict[str, RunningBroker], seconds: float = 3.0) -> dict[str, float]:
    """Each broker's CPU time per second when no client connects (timers, the audit writer)."""
    before = {name: broker.cpu_seconds() for name, broker in running.items()}
    time.sleep(seconds)
    return {
        name: round((broker.cpu_seconds() - before[name]) * 1e3 / seconds, 2)
        for name, broker in running.items()
    }


# ---- checking that certmq really registered and audited ----


def check_certmq(certmq: MutualCertmq, devices: Devices, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Device records and audit log rows of certmq, read back through its REST API."""
    time.sleep(1.5)  # the audit log is written in batches, at least every 0.5 s
    api = certmq.api
    first_time_runs = [
        r for r in runs if r["broker"] == SUBJECT and r["cell"] == "first-time device" and "error" not in r
    ]
    succeeded = sum(r["succeeded"] for r in first_time_runs)
    attempted = sum(r["connections"] for r in first_time_runs)
    warm_up_sets = [s for s in devices.first_time_sets if "warmup" in s.names[0]]
    warmed = sum(len(s.names) for s in warm_up_sets)
    total = api.device_total(certmq.ca_sn)
    low, high = 1 + warmed + succeeded, 1 + warmed + attempted
    checks: dict[str, Any] = {
        "device_records": total,
        "device_records_expected": [low, high],
        "device_records_ok": low <= total <= high,
    }
    # A sample of the devices of the measured runs: each has a record and exactly one decision.
    measured_sets = {r["identities_file"] for r in first_time_runs}
    sample = [s for s in devices.first_time_sets if s.file.name in measured_sets][:3]
    samples = []
    for identities in sample:
        for position in (0, len(identities.names) // 2, len(identities.names) - 1):
            name, serial = identities.names[position], identities.serials[position]
            record = api.device(name)
            decisions = api.decisions(serial)
            samples.append(
                {
                    "name": name,
                    "device_sn": serial,
                    "registered": record is not None
                    and record["device_sn"] == serial
                    and record["status"] == "active",
                    "decisions": [f"{d['result']} {d['reason']}" for d in decisions],
                }
            )
    checks["sampled_devices"] = samples
    checks["sampled_devices_ok"] = bool(samples) and all(
        s["registered"] and s["decisions"] == ["allow new-device"] for s in samples
    )
    # The registered device: one decision per connection (the search returns 1000 at most).
    registered_runs = [
        r for r in runs if r["broker"] == SUBJECT and r["cell"] == "registered device" and "error" not in r
    ]
    decisions = api.decisions(devices.registered.serials[0], limit=1000)
    expected = min(1000, sum(r["succeeded"] for r in registered_runs))
    allowed = sum(1 for d in decisions if d["result"] == "allow" and d["reason"] == "registered-device")
    checks["registered_device_decisions"] = {
        "found": len(decisions),
        "allow_registered": allowed,
        "expected_at_least": expected,
    }
    checks["registered_device_decisions_ok"] = allowed >= expected
    checks["ok"] = all(
        checks[key] for key in ("device_records_ok", "sampled_devices_ok", "registered_device_decisions_ok")
    )
    return checks


# ---- summary ----


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    counted = [r for r in runs if "discarded" not in r]
    summary = []
    for cell in CELLS:
        entry: dict[str, Any] = {"cell": cell, "brokers": {}}
        for name in names:
            mine = [r for r in counted if r["cell"] == cell and r["broker"] == name]
            good = [r for r in mine if "error" not in r and r.get("cpu_ms_per_connection")]
            entry["brokers"][name] = {
                "cpu_ms_per_connection": _median([r["cpu_ms_per_connection"] for r in good]),
                "connections_per_s": _median([r["connections_per_s"] for r in good]),
                "broker_busy": _median([r["broker_busy"] for r in good]),
                "client_cpu_share": _median([r["client_cpu_share"] for r in good]),
                "other_cpu_share": _median([r["other_cpu_share"] for r in good]),
                "latency_ms_p50": _median([r["latency_ms_p50"] for r in good]),
                "main_thread_ms_per_connection": _median([r["main_thread_ms_per_connection"] for r in good]),
                "other_threads_ms_per_connection": _median(
                    [r["other_threads_ms_per_connection"] for r in good]
                ),
                "runs": len(good),
                "incomplete": sum(1 for r in good if not r["complete"]),
                "errors": [r["error"] for r in mine if "error" in r],
            }
        if SUBJECT in names and REFERENCE in names:
            for label, key in (("cpu", "cpu_ms_per_connection"), ("rate", "connections_per_s")):
                paired = report._paired_ratios(counted, cell, key)
                entry[f"{label}_ratio"] = _median(paired)
                entry[f"{label}_ratio_range"] = [min(paired), max(paired)] if paired else None
        summary.append(entry)
    return summary


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(entry: dict[str, Any], label: str, brackets: bool) -> str:
    value = entry.get(f"{label}_ratio")
    if value is None:
        return "-"
    text = f"{value:.2f}x"
    spread = entry.get(f"{label}_ratio_range")
    if brackets and spread and spread[0] != spread[1]:
        text += f" ({spread[0]:.2f}-{spread[1]:.2f})"
    return text


def _flag(broker_summary: dict[str, Any]) -> str:
    return " *" if broker_summary["incomplete"] or broker_summary["errors"] else ""


def connection_rows(summary: list[dict[str, Any]], names: list[str], brackets: bool) -> list[list[str]]:
    both = SUBJECT in names and REFERENCE in names
    header = ["cell", *[f"{n} CPU ms/conn" for n in names]]
    header += ["ratio"] if both else []
    header += [f"{n} conn/s" for n in names]
    header += ["ratio"] if both else []
    header += [f"{n} busy" for n in names]
    rows = [header]
    for entry in summary:
        brokers = entry["brokers"]
        row = [
            entry["cell"],
            *[_number(brokers[n]["cpu_ms_per_connection"]) + _flag(brokers[n]) for n in names],
        ]
        row += [_ratio(entry, "cpu", brackets)] if both else []
        row += [_number(brokers[n]["connections_per_s"], 0) for n in names]
        row += [_ratio(entry, "rate", brackets)] if both else []
        row += [
            "-" if brokers[n]["broker_busy"] is None else f"{brokers[n]['broker_busy']:.0%}" for n in names
        ]
        rows.append(row)
    return rows


def console_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    header = [h.replace("ratio", f"{SUBJECT} / {REFERENCE}") for h in rows[0]]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def describe_run(args: argparse.Namespace, facts: dict[str, Any], started: datetime.datetime) -> str:
    machine_facts, brokers = facts["machine"], facts["brokers"]
    tls = facts.get("tls", {})
    parts = [
        f"Run of {started:%Y-%m-%d %H:%M} UTC: `python bench/connections.py"
        + (f" {' '.join(facts['argv'])}" if facts["argv"] else "")
        + f"`; {args.repeat} run{'s' if args.repeat > 1 else ''} per cell and broker (median shown), "
        f"{args.connections} connections per run, {args.concurrency} in flight, MQTT 3.1.1; "
        f"{tls.get('protocol', '?')}, {tls.get('cipher', '?')}, key exchange {tls.get('group', '?')}"
        f"{' on both brokers' if tls.get('same_on_both') else ''}, "
        f"EC P-256 server, CA and device keys; no session resumed ({tls.get('resumed', '?')} resumptions).",
        f"Machine: {machine_facts['cpus']} CPUs ({machine_facts['cpu_model']}), Linux {machine_facts['kernel']}, "
        f"{machine_facts['openssl']}, load average before the run {facts['load_average_before']}; "
        f"{facts['cpu_pinning']}.",
    ]
    if SUBJECT in brokers:
        certmq = brokers[SUBJECT]
        parts.append(
            f"certmq {certmq['version']} at commit {machine_facts['certmq_commit']}, Python {machine_facts['python']}, "
            f"event loop {certmq['event_loop']}, TLS by {machine_facts.get('certmq_openssl', 'unknown')}, "
            f"mutual mode, SQLite registry; idle CPU "
            f"{facts['idle_cpu_ms_per_s'].get(SUBJECT, 0):.1f} ms/s."
        )
    if REFERENCE in brokers:
        parts.append(
            f"mosquitto {brokers[REFERENCE]['version']}, require_certificate true; idle CPU "
            f"{facts['idle_cpu_ms_per_s'].get(REFERENCE, 0):.1f} ms/s."
        )
    split = facts.get("certmq_threads")
    if split:
        parts.append(
            "certmq's CPU per connection by thread (medians): "
            + "; ".join(
                f"{cell}: event loop {values['main']:.2f} ms, registry database thread {values['others']:.2f} ms"
                for cell, values in split.items()
            )
            + "."
        )
    other = facts.get("other_cpu_share_median")
    if other is not None:
        parts.append(
            f"Other programs used a median {other:.0%} of a CPU during the runs (two CPUs in all): the "
            "connection rates and busy shares suffer from it more than the CPU per connection."
        )
    checks = facts.get("certmq_checks")
    if checks:
        parts.append(
            f"certmq registered {checks['device_records']:,} devices in the run, and their sampled records "
            f"and audit rows were read back: {'all present' if checks['ok'] else 'SOME MISSING'}."
        )
    discarded = facts.get("discarded_runs", 0)
    if discarded:
        parts.append(
            f"{discarded} runs were measured again because other programs used more than "
            f"{args.max_disturbance:.0%} of a CPU meanwhile (kept in the JSON file, not in the table)."
        )
    peak = facts.get("client_peak")
    if peak:
        parts.append(
            f"The connection generator used at most {peak['share']:.0%} of its CPU ({peak['cell']} on {peak['broker']})."
        )
    return "\n".join(parts)


def decision_markdown(result: dict[str, Any]) -> str:
    rows = [decision_scale.header(result), *decision_scale.table(result)]
    lines = [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n\n" + decision_scale.summary_line(result) + "."


# ---- profiling ----


def profile(args: argparse.Namespace, workdir: Path, cpus: processes.CpuPlan, log_dir: Path) -> int:
    """certmq alone under cProfile (the event loop's thread), through a long run of each cell."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    output = RESULTS_DIR / f"connections-{stamp}.prof"
    output.parent.mkdir(parents=True, exist_ok=True)
    devices = Devices(workdir)
    certmq = mutual_tls.start_certmq(
        workdir,
        args.python,
        args.event_loop,
        cpus.broker,
        devices.ca,
        python_options=["-m", "cProfile", "-o", str(output)],
    )
    running = {SUBJECT: certmq.broker}
    warm_up(running, devices, args, log_dir, cpus)
    count = args.connections * max(args.repeat, 3)
    for cell, identities in (
        ("registered device", devices.registered),
        ("first-time device", devices.first_time(count, "profile")),
    ):
        record = run_one(certmq.broker, cell, identities, count, args, f"profile-{cell[:5]}", log_dir, cpus)
        print_run(record)
        threads = connection_generator.thread_cpu_seconds(certmq.broker.pid)
        print(f"    CPU seconds by thread so far: {threads}")
    certmq.api.close()
    certmq.broker.stop()
    stats = pstats.Stats(str(output))
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    print(f"profile: {output.relative_to(ROOT)} (python -m pstats {output.relative_to(ROOT)})")
    return 0


# ---- main ----


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    start = time.monotonic()

    processes.exit_on_sigterm("the brokers")
    workdir = Path(tempfile.mkdtemp(prefix="certmq-connections-"))
    log_dir = workdir / "generator"
    log_dir.mkdir()
    running: dict[str, RunningBroker] = {}
    certmq: MutualCertmq | None = None
    checks: dict[str, Any] | None = None
    try:
        binary = connection_generator.build()
        cpus = processes.CpuPlan.split(not args.no_pin)
        print(
            f"connection generator: {binary.relative_to(ROOT)}; work directory {workdir}; CPUs: {cpus.describe()}"
        )
        if args.profile:
            return profile(args, workdir, cpus, log_dir)
        load_before = machine.load_average()
        devices = Devices(workdir)
        certmq = mutual_tls.start_certmq(workdir, args.python, args.event_loop, cpus.broker, devices.ca)
        running[SUBJECT] = certmq.broker
        key_kind = certificates.served_key_kind(certmq.broker.tls_port)
        certmq.broker.facts["server_key"] = str(key_kind)
        running[REFERENCE] = mutual_tls.start_mosquitto(workdir, cpus.broker, devices.ca, key_kind)
        for name, broker in running.items():
            print(
                f"{name}: pid {broker.pid}, mutual TLS on 127.0.0.1:{broker.tls_port}, server key {key_kind}"
            )
        warm_up(running, devices, args, log_dir, cpus)
        idle = idle_cpu(running)
        runs = measure(running, devices, args, log_dir, cpus)
        checks = check_certmq(certmq, devices, runs)
        load_after = machine.load_average()
    except (LoadGeneratorError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if certmq is not None:
            certmq.api.close()
        processes.stop_all()
        if args.keep_workdir:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"certmq checks: {'ok' if checks['ok'] else 'FAILED'}: {checks['device_records']:,} device records "
        f"(expected {checks['device_records_expected'][0]:,}-{checks['device_records_expected'][1]:,}); "
        f"registered device decisions {checks['registered_device_decisions']}; "
        f"sampled first-time devices: {sum(1 for s in checks['sampled_devices'] if s['registered'])}/"
        f"{len(checks['sampled_devices'])} registered, decisions {sorted({d for s in checks['sampled_devices'] for d in s['decisions']})}"
    )

    decisions: dict[str, Any] | None = None
    if not args.no_decisions:
        with tempfile.TemporaryDirectory(prefix="certmq-decisions-") as directory:
            decisions = asyncio.run(
                decision_scale.run(args.devices, args.real_devices, 5000, Path(directory))
            )

    names = list(BROKERS)
    summary = summarise(runs, names)
    good = [r for r in runs if "error" not in r]
    tls = next((r for r in good if r.get("tls_protocol")), {})
    client_peak = max(good, key=lambda r: r["client_cpu_share"], default=None)
    facts: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "started": started.isoformat(),
        "seconds": round(time.monotonic() - start, 1),
        "machine": machine.facts(args.python, ROOT),
        "brokers": {name: broker.facts for name, broker in running.items()},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu_pinning": cpus.describe(),
        "idle_cpu_ms_per_s": idle,
        "tls": {
            "protocol": tls.get("tls_protocol"),
            "cipher": tls.get("tls_cipher"),
            "group": tls.get("tls_group"),
            "resumed": sum(r.get("resumed", 0) for r in good),
            # What each broker negotiated, over all its runs: one line each when they match.
            "by_broker": {
                name: sorted(
                    {
                        f"{r['tls_protocol']} {r['tls_cipher']} {r['tls_group']}"
                        for r in good
                        if r["broker"] == name and r.get("tls_protocol")
                    }
                )
                for name in BROKERS
            },
        },
        "settings": {
            "repeat": args.repeat,
            "connections": args.connections,
            "concurrency": args.concurrency,
            "settle_seconds": connection_generator.SETTLE_SECONDS,
            "protocol": "MQTT 3.1.1",
            "quick": args.quick,
        },
        "certmq_checks": checks,
        "discarded_runs": sum(1 for r in runs if "discarded" in r),
        "client_peak": None
        if client_peak is None
        else {
            "share": client_peak["client_cpu_share"],
            "cell": client_peak["cell"],
            "broker": client_peak["broker"],
        },
    }
    negotiated = list(facts["tls"]["by_broker"].values())
    facts["tls"]["same_on_both"] = (
        all(len(n) == 1 for n in negotiated) and len({n[0] for n in negotiated}) == 1
    )
    facts["certmq_threads"] = {
        entry["cell"]: {
            "main": entry["brokers"][SUBJECT]["main_thread_ms_per_connection"],
            "others": entry["brokers"][SUBJECT]["other_threads_ms_per_connection"],
        }
        for entry in summary
        if entry["brokers"][SUBJECT]["main_thread_ms_per_connection"] is not None
    }
    counted = [r["other_cpu_share"] for r in good if "discarded" not in r]
    facts["other_cpu_share_median"] = statistics.median(counted) if counted else None
    description = describe_run(args, facts, started)
    print()
    print(description)
    print()
    print(console_table(connection_rows(summary, names, brackets=True)))
    print(
        "CPU ms/conn: broker CPU time per connection (median); conn/s: connections per second; ratio: median of "
        "the per-repeat certmq/mosquitto ratios (lowest-highest); busy: broker CPU / connecting time"
    )
    if decisions is not None:
        print()
        decision_scale.print_table(decisions)

    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_file = RESULTS_DIR / f"connections-{stamp}.json"
    report.write_json(json_file, {"facts": facts, "summary": summary, "runs": runs, "decisions": decisions})
    print(f"\nresults: {json_file.relative_to(ROOT)}")

    failed = any("error" in r for r in runs) or not checks["ok"]
    complete = not args.quick and decisions is not None and not failed
    if args.no_docs:
        pass
    elif complete and decisions is not None:
        block = f"{description}\n\n{markdown_table(connection_rows(summary, names, brackets=True))}\n\n"
        priority = ", at real-time priority" if decisions["realtime_priority"] else ""
        block += (
            f"Decision cost at scale (`bench/decision_scale.py`, the least disturbed of "
            f"{decision_scale.PASSES} passes{priority}):\n\n"
        )
        block += decision_markdown(decisions)
        report.update_docs(DOCS_FILE, block, begin=BEGIN_MARKER, end=END_MARKER, heading=DOCS_HEADING)
        print(f"updated {DOCS_FILE.relative_to(ROOT)}")
    else:
        print(f"{DOCS_FILE.relative_to(ROOT)} not updated (only a complete full run updates it)")
    return 1 if failed or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
