"""Start the brokers under test on loopback: certmq, and Debian's mosquitto as the reference."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import processes
from certificates import ServerCertificate

ROOT = Path(__file__).resolve().parent.parent

# Both brokers get the same delivery limits, certmq's defaults ([mqtt] max_inflight and
# max_queued_messages in docs/configuration.md): up to 65535 QoS 1 messages in flight per
# subscriber, then 1000 queued. The load generator never runs that far ahead, so neither
# broker drops messages because of a limit.
MAX_INFLIGHT = 65535
MAX_QUEUED = 1000
START_TIMEOUT = 60.0


def add_certmq_options(parser: argparse.ArgumentParser) -> None:
    """--python and --event-loop: how the benchmarks run certmq."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    parser.add_argument(
        "--python",
        default=str(venv_python) if venv_python.exists() else sys.executable,
        help="the Python that runs certmq (default: .venv/bin/python)",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="certmq's event loop (certmq serve --event-loop; default auto)",
    )


@dataclass
class RunningBroker:
    name: str
    tcp_port: int
    tls_port: int
    ca_file: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    facts: dict[str, str] = field(default_factory=dict)
    # Processes that work for this broker, measured apart by name: a cluster's NATS and
    # PostgreSQL servers.
    companions: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        return processes.cpu_seconds(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        processes.stop(self.process)


def _wait_listening(broker: RunningBroker) -> None:
    try:
        processes.wait_for_port(broker.tcp_port, broker.process, START_TIMEOUT)
        processes.wait_for_port(broker.tls_port, broker.process, START_TIMEOUT, tls_cafile=broker.ca_file)
    except RuntimeError as error:
        broker.stop()
        raise RuntimeError(
            f"{broker.name} did not start: {error}\n--- {broker.log_file}:\n{broker.log_tail()}"
        ) from None


# ---- mosquitto ----


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    return found


def mosquitto_version() -> str:
    result = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=10)
    match = re.search(r"mosquitto version (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def start_mosquitto(
    workdir: Path,
    certificate: ServerCertificate,
    cpus: set[int] | None,
    tls_listener_settings: str = "",
    persistence: bool = False,
) -> RunningBroker:
    """``tls_listener_settings``: more lines for the TLS listener (bench/connections.py asks
    for client certificates with them). ``persistence``: mosquitto keeps sessions and retained
    messages in ``mosquitto.db``, saved every ``autosave_interval`` (1800 s by default) and at
    exit."""
    directory = workdir / "mosquitto"
    directory.mkdir(parents=True, exist_ok=True)
    tcp_port, tls_port = processes.free_port(), processes.free_port()
    log_file = directory / "mosquitto.log"
    config_file = directory / "mosquitto.conf"
    # When started as root, mosquitto switches to the user named here; keep the current
    # one so that it can read the key file in the private work directory.
    user = pwd.getpwuid(os.getuid()).pw_name
    config_file.write_text(
        f"""# Written by bench/run.py for one benchmark run.
per_listener_settings false
allow_anonymous true
persistence {"true" if persistence else "false"}
persistence_location {directory}/
log_dest file {log_file}
log_type error
log_type warning
user {user}
set_tcp_nodelay true
max_inflight_messages {MAX_INFLIGHT}
max_queued_messages {MAX_QUEUED}

listener {tcp_port} 127.0.0.1

listener {tls_port} 127.0.0.1
certfile {certificate.cert_file}
keyfile {certificate.key_file}
{tls_listener_settings}"""
    )
    with open(directory / "stdout.log", "wb") as output:
        process = processes.start(
            [mosquitto_binary(), "-c", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    broker = RunningBroker("mosquitto", tcp_port, tls_port, certificate.ca_file, process, log_file)
    broker.facts = {
        "version": mosquitto_version(),
        "server_key": str(certificate.key_kind),
        "config": f"set_tcp_nodelay true, max_inflight_messages {MAX_INFLIGHT}, max_queued_messages {MAX_QUEUED}, "
        f"persistence {'true (saved every 1800 s and at exit)' if persistence else 'false'}, "
        "logging to a file (errors and warnings)",
    }
    _wait_listening(broker)
    return broker


# ---- certmq ----


def _init_certmq(python: str, data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    result = subprocess.run(
        [python, "-m", "certmq", "init", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"certmq init failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            summary: dict[str, str] = json.loads(line)
            return summary
    raise RuntimeError(f"certmq init printed no JSON object:\n{result.stdout}")


@dataclass(frozen=True)
class CertmqInstance:
    """The files of an instance, made by ``certmq init``: a node's data directory."""

    data_dir: Path
    server_ca_file: Path

    def copy(self, data_dir: Path) -> CertmqInstance:
        """The same instance for another node of a cluster (docs/cluster.md: each node gets a
        copy of the files ``certmq init`` made). Copy before either node starts."""
        shutil.copytree(self.data_dir, data_dir)
        return CertmqInstance(data_dir, data_dir / self.server_ca_file.relative_to(self.data_dir))


def init_certmq(python: str, data_dir: Path) -> CertmqInstance:
    summary = _init_certmq(python, data_dir, dict(os.environ))
    return CertmqInstance(data_dir, Path(summary["server_ca_file"]))


def start_certmq(
    workdir: Path,
    python: str,
    event_loop: str,
    cpus: set[int] | None,
    environment: dict[str, str] | None = None,
    python_options: list[str] | None = None,
    *,
    name: str = "certmq",
    instance: CertmqInstance | None = None,
    serve_options: list[str] | None = None,
    ready_pattern: str | None = None,
) -> RunningBroker:
    """``environment``: CERTMQ_* settings that replace the defaults below (bench/connections.py
    runs the instance in mutual mode with its HTTP API on). ``python_options`` go before
    ``-m certmq serve``, e.g. ``["-m", "cProfile", "-o", FILE]`` to profile the broker.
    ``name`` names the broker and its directory in ``workdir``; ``instance``: files made
    beforehand (one copy per node of a cluster), else ``certmq init`` makes them.
    ``serve_options`` go after ``serve`` (``["--workers", "2"]``); ``ready_pattern``: a regular
    expression that the log must match before the broker counts as started (the listeners
    accept connections as soon as the first of several workers is up)."""
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    tcp_port, tls_port = processes.free_port(), processes.free_port()
    env = dict(os.environ)
    if instance is None:
        instance = init_certmq(python, directory / "data")
    env.update(
        CERTMQ_LISTENERS_TCP=f"127.0.0.1:{tcp_port}",
        CERTMQ_LISTENERS_TLS=f"127.0.0.1:{tls_port}",
        CERTMQ_LISTENERS_WS="",
        CERTMQ_LISTENERS_WSS="",
        CERTMQ_LISTENERS_HTTP="",
        CERTMQ_AUTH_ANONYMOUS="true",
        CERTMQ_EVENT_LOOP=event_loop,
    )
    env.update(environment or {})
    log_file = directory / "certmq.log"
    with open(log_file, "wb") as output:
        process = processes.start(
            [
                python,
                *(python_options or []),
                "-m",
                "certmq",
                "serve",
                "--data-dir",
                str(instance.data_dir),
                *(serve_options or []),
            ],
            cpus=cpus,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    broker = RunningBroker(name, tcp_port, tls_port, instance.server_ca_file, process, log_file)
    _wait_listening(broker)
    if ready_pattern is not None:
        _wait_for_log(broker, ready_pattern)
    broker.facts = {"version": certmq_version(python), "event_loop": loaded_event_loop(process.pid)}
    return broker


def _wait_for_log(broker: RunningBroker, pattern: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not re.search(pattern, broker.log_file.read_text(errors="replace")):
        if not broker.alive() or time.monotonic() > deadline:
            broker.stop()
            raise RuntimeError(
                f"{broker.name} did not log /{pattern}/ within {START_TIMEOUT:.0f} s\n"
                f"--- {broker.log_file}:\n{broker.log_tail()}"
            )
        time.sleep(0.1)


def certmq_version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import certmq; print(certmq.__version__)"], capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip() or "unknown"


def loaded_event_loop(pid: int) -> str:
    """uvloop when its extension module is mapped into the process, else asyncio."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    return "uvloop" if re.search(r"/uvloop/loop\.[^/]*\.so", maps) else "asyncio"
