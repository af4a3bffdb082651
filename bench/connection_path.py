"""certmq's CPU cost per short MQTT connection over plain TCP: the path after the transport.

    .venv/bin/python bench/connection_path.py                     # certmq, then mosquitto
    .venv/bin/python bench/connection_path.py --broker certmq --repeat 5
    .venv/bin/python bench/connection_path.py --profile           # certmq under cProfile
    .venv/bin/python bench/connection_path.py --in-process        # certmq's Python alone, no sockets

Each connection is TCP connect, CONNECT (MQTT 3.1.1, clean session, a client id of its own,
keep alive 60 s), CONNACK, DISCONNECT and close, a few in flight. Without TLS, what is left is
the broker's own work per connection: accepting, the CONNECT rules, authentication (anonymous:
one audit record), the session, CONNACK, DISCONNECT and cleanup. The broker's CPU time (user +
system, /proc/PID/stat) is read before and after each run, after a short settling time that
lets it finish closing and write the audit log; it is divided by the number of connections.

``--in-process`` drives MQTTConnection objects over a stand-in transport in this process, with
the instance's authenticator (anonymous on TCP; and a registered device's certificate on mutual
TLS), and reports the Python time per connection: no sockets, no kernel, little noise, the
number to watch while changing the connection path (``--profile`` with it: under cProfile).

The connecting client is this script (asyncio, on the other CPUs when there are two): its own
CPU time is not counted. certmq runs as ``certmq serve`` with its defaults but for anonymous
access and only the TCP listener; mosquitto with ``allow_anonymous true`` and no persistence.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import processes
from stand_in import StandInTransport

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_PYTHON = ROOT / ".venv" / "bin" / "python"
START_TIMEOUT = 60.0
SETTLE_SECONDS = 1.0
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
DISCONNECT = b"\xe0\x00"


def connect_packet(client_id: str) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, keep alive 60 s, no will, no credentials."""
    identifier = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(identifier).to_bytes(2, "big") + identifier
    assert len(variable) < 128
    return bytes((0x10, len(variable))) + variable


# ---- the client ----


class _ShortConnection(asyncio.Protocol):
    def __init__(self, client_id: str, done: asyncio.Future[None]) -> None:
        self.client_id = client_id
        self.done = done
        self.received = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(connect_packet(self.client_id))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) < 4 or self.done.done():
            return
        assert self.transport is not None
        if self.received[:4] != CONNACK_ACCEPTED:
            self.done.set_exception(RuntimeError(f"{self.client_id}: unexpected reply {self.received!r}"))
        else:
            self.transport.write(DISCONNECT)
            self.done.set_result(None)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"{self.client_id}: closed before CONNACK ({exc})"))


async def _connect_many(port: int, connections: int, concurrency: int, prefix: str) -> float:
    loop = asyncio.get_running_loop()
    numbers = iter(range(connections))

    async def worker() -> None:
        for number in numbers:
            done: asyncio.Future[None] = loop.create_future()
            await loop.create_connection(
                lambda: _ShortConnection(f"{prefix}-{number}", done),  # noqa: B023 - awaited here
                "127.0.0.1",
                port,
            )
            await asyncio.wait_for(done, 10)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


def connect_many(port: int, connections: int, concurrency: int, prefix: str) -> float:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_connect_many(port, connections, concurrency, prefix))
    return uvloop.run(_connect_many(port, connections, concurrency, prefix))


# ---- the brokers ----


def start_certmq(
    workdir: Path, python: str, cpus: set[int] | None, profile_file: Path | None
) -> tuple[subprocess.Popen[bytes], int]:
    data_dir = workdir / "certmq-data"
    env = dict(os.environ)
    subprocess.run(
        [python, "-m", "certmq", "init", "--data-dir", str(data_dir), "--json"],
        check=True,
        capture_output=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    port = processes.free_port()
    env.update(
        CERTMQ_LISTENERS_TCP=f"127.0.0.1:{port}",
        CERTMQ_LISTENERS_TLS="",
        CERTMQ_LISTENERS_WS="",
        CERTMQ_LISTENERS_WSS="",
        CERTMQ_LISTENERS_HTTP="",
        CERTMQ_AUTH_ANONYMOUS="true",
    )
    python_options = ["-m", "cProfile", "-o", str(profile_file)] if profile_file else []
    log = open(workdir / "certmq.log", "wb")  # noqa: SIM115 - kept open for the broker's life
    process = processes.start(
        [python, *python_options, "-m", "certmq", "serve", "--data-dir", str(data_dir)],
        cpus=cpus,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    processes.wait_for_port(port, process, START_TIMEOUT)
    return process, port


def start_mosquitto(workdir: Path, cpus: set[int] | None) -> tuple[subprocess.Popen[bytes], int]:
    port = processes.free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"per_listener_settings false\nallow_anonymous true\npersistence false\n"
        f"log_dest file {workdir / 'mosquitto.log'}\nlog_type error\nlog_type warning\n"
        f"set_tcp_nodelay true\nuser {pwd.getpwuid(os.getuid()).pw_name}\nlistener {port} 127.0.0.1\n"
    )
    process = processes.start(
        ["mosquitto", "-c", str(config)],
        cpus=cpus,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.wait_for_port(port, process, START_TIMEOUT)
    return process, port


# ---- in process: the Python path alone ----


async def _in_process(listener_name: str, connections: int, device: RegisteredDevice | None) -> float:
    """Seconds of CPU per connection: connection_made, CONNECT, CONNACK, DISCONNECT, connection_lost."""
    from certmq.auth.admission import ListenerPolicy
    from certmq.auth.authenticator import InstanceAuthenticator
    from certmq.broker.connection import AUTHENTICATING, Listener, MQTTConnection
    from certmq.broker.core import BrokerCore
    from certmq.config import MqttSection
    from certmq.registry.records import DecisionEntry

    decisions: list[DecisionEntry] = []
    authenticator = InstanceAuthenticator(
        instance_id="mqtt-bench",
        access_keys={},
        auth_mode=lambda: "mutual",
        anonymous=True,
        index=device.index if device else None,
        audit=lambda **fields: decisions.append(DecisionEntry(**fields)),
        # The plain TCP cell measures a listener that mutual mode closes unless configured open.
        policy=ListenerPolicy(tcp_in_mutual_mode=True, anonymous=True),
    )
    core = BrokerCore(MqttSection(), authenticator=authenticator)
    listener = Listener(listener_name)
    certificate = device.certificate if device else None
    packets = [connect_packet(f"bench-{number}") for number in range(connections)]
    expected = 0
    started = time.process_time()
    for packet in packets:
        transport = StandInTransport(certificate)
        connection = MQTTConnection(core, listener)
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(packet)
        while connection.state == AUTHENTICATING:  # an authentication that has to wait
            await asyncio.sleep(0)
        connection.data_received(DISCONNECT)
        connection.connection_lost(None)
        expected += transport.written == [CONNACK_ACCEPTED] and transport.closing
        if len(decisions) > 10_000:
            decisions.clear()
    elapsed = time.process_time() - started
    if expected != connections or core.sessions or core.connections:
        raise RuntimeError(f"{connections - expected} connections did not go as expected: {decisions[-1:]}")
    return elapsed / connections


@dataclass(frozen=True)
class RegisteredDevice:
    certificate: bytes  # DER
    index: Any  # certmq.registry.index.TrustIndex, with the device's CA and the device


def registered_device() -> RegisteredDevice:
    """A device certificate, and a trust index where its CA and the device are registered."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    from certmq import pki
    from certmq.auth.decision import decide_device
    from certmq.registry.index import CaEntry, TrustIndex, subject_key_identifier_of

    key = pki.generate_key("ec")
    ca = pki.create_ca("bench CA", key)
    der = pki.issue_device_certificate(
        ca, key, "bench-device", pki.generate_key("ec").public_key()
    ).public_bytes(Encoding.DER)
    index = TrustIndex()
    index.put_ca(
        CaEntry(
            sn=pki.serial_hex(ca),
            certificate=ca,
            active=True,
            subject_der=ca.subject.public_bytes(),
            subject_key_identifier=subject_key_identifier_of(ca),
            fingerprint=bytes.fromhex(pki.fingerprint_sha256(ca)),
        )
    )
    decision = decide_device(der, index)
    index.put_device(decision.ca_sn, decision.device_sn, hashlib.sha256(der).digest(), True)
    return RegisteredDevice(der, index)


def in_process(args: argparse.Namespace) -> None:
    import cProfile

    import uvloop

    cells = [
        ("plain TCP, anonymous", "tcp", None),
        ("mutual TLS, registered device", "tls", registered_device()),
    ]
    for label, listener_name, device in cells:
        uvloop.run(_in_process(listener_name, args.warmup, device))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            uvloop.run(_in_process(listener_name, args.connections, device))
            profiler.disable()
            print(f"--- {label}")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
            continue
        costs = [uvloop.run(_in_process(listener_name, args.connections, device)) for _ in range(args.repeat)]
        print(
            f"  {label:<32} {statistics.median(costs) * 1e6:6.1f} µs of Python per connection "
            f"(median of {args.repeat}: {', '.join(f'{cost * 1e6:.1f}' for cost in costs)})"
        )


# ---- measuring ----


def measure(
    pid: int, port: int, connections: int, concurrency: int, prefix: str
) -> tuple[float, float, float]:
    """(broker CPU ms per connection, of which its main thread's, connections per second) for one run."""
    before, main_before = processes.cpu_seconds(pid), main_thread_cpu_seconds(pid)
    elapsed = connect_many(port, connections, concurrency, prefix)
    time.sleep(SETTLE_SECONDS)
    after, main_after = processes.cpu_seconds(pid), main_thread_cpu_seconds(pid)
    return (
        (after - before) * 1e3 / connections,
        (main_after - main_before) * 1e3 / connections,
        connections / elapsed,
    )


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process's main thread (certmq: the event loop's)."""
    text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_broker(name: str, args: argparse.Namespace, workdir: Path, cpus: processes.CpuPlan) -> list[float]:
    if name == "certmq":
        process, port = start_certmq(workdir, args.python, cpus.broker, None)
    else:
        process, port = start_mosquitto(workdir, cpus.broker)
    try:
        connect_many(port, args.warmup, args.concurrency, f"{name}-warmup")
        results = []
        for repeat in range(args.repeat):
            cost, main, rate = measure(
                process.pid, port, args.connections, args.concurrency, f"{name}-{repeat}"
            )
            print(
                f"  {name:<10} run {repeat + 1}: {cost * 1e3:7.1f} µs CPU/connection "
                f"(main thread {main * 1e3:5.1f})  {rate:7.0f} conn/s"
            )
            results.append(cost)
        return results
    finally:
        processes.stop(process)


def profile(args: argparse.Namespace, workdir: Path, cpus: processes.CpuPlan) -> None:
    output = workdir / "certmq.prof"
    process, port = start_certmq(workdir, args.python, cpus.broker, output)
    try:
        connect_many(port, args.warmup, args.concurrency, "profile-warmup")
        cost, _, rate = measure(process.pid, port, args.connections, args.concurrency, "profile")
        print(f"  under cProfile: {cost * 1e3:.1f} µs CPU/connection, {rate:.0f} conn/s")
    finally:
        processes.stop(process, grace_seconds=30)
    stats = pstats.Stats(str(output))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(f"profile: {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", choices=("certmq", "mosquitto", "both"), default="both")
    parser.add_argument("--connections", type=int, default=5000, help="connections per run (default 5000)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per broker (default 3)")
    parser.add_argument("--warmup", type=int, default=500, help="connections before measuring (default 500)")
    parser.add_argument("--profile", action="store_true", help="certmq under cProfile, and its hot spots")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the Python connection path alone, over a stand-in transport",
    )
    parser.add_argument("--top", type=int, default=40, help="functions shown by --profile (default 40)")
    parser.add_argument(
        "--python", default=str(DEFAULT_PYTHON) if DEFAULT_PYTHON.exists() else sys.executable
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the broker to one CPU")
    args = parser.parse_args(argv)
    if args.in_process:
        in_process(args)
        return 0
    cpus = processes.CpuPlan.split(not args.no_pin)
    if cpus.load_generator:
        os.sched_setaffinity(0, cpus.load_generator)
    with tempfile.TemporaryDirectory(prefix="certmq-connection-path-") as directory:
        workdir = Path(directory)
        try:
            if args.profile:
                profile(args, workdir, cpus)
                return 0
            names = ("certmq", "mosquitto") if args.broker == "both" else (args.broker,)
            medians = {}
            for name in names:
                medians[name] = statistics.median(run_broker(name, args, workdir, cpus))
            print(
                f"{args.connections} connections, {args.concurrency} in flight, median of {args.repeat} "
                f"runs ({cpus.describe()}):"
            )
            for name, cost in medians.items():
                print(f"  {name:<10} {cost * 1e3:7.1f} µs CPU/connection")
        finally:
            processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
