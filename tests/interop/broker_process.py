"""Start a real broker on loopback for the interoperability tests.

By default the broker is certmq (``python -m certmq serve``). With ``CERTMQ_TEST_BROKER=mosquitto``
the same tests run against Debian's mosquitto with an equivalent generated configuration, so that
every test can be proven against a reference broker. The Debian build of mosquitto has no
WebSocket support, so in that mode a small WebSocket-to-TCP bridge serves the ``ws`` and ``wss``
ports (path ``/mqtt``, subprotocol ``mqtt``) in front of mosquitto's TCP listener.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import getpass
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

# certmq settings (CERTMQ_MQTT_<KEY>) and the mosquitto.conf option that means the same thing.
MOSQUITTO_EQUIVALENTS = {
    "CERTMQ_MQTT_MAX_PACKET_SIZE": "max_packet_size",
    "CERTMQ_MQTT_SERVER_KEEP_ALIVE": "max_keepalive",
    "CERTMQ_MQTT_MAX_QUEUED_MESSAGES": "max_queued_messages",
    # mosquitto counts only the queued messages' payloads, not those in flight.
    "CERTMQ_MQTT_MAX_QUEUED_BYTES": "max_queued_bytes",
    "CERTMQ_MQTT_MAX_INFLIGHT": "max_inflight_messages",
    # mosquitto's in-flight limit is also the Receive Maximum it announces and enforces.
    "CERTMQ_MQTT_RECEIVE_MAXIMUM": "max_inflight_messages",
    "CERTMQ_MQTT_TOPIC_ALIAS_MAXIMUM": "max_topic_alias",
    "CERTMQ_MQTT_SYS_INTERVAL": "sys_interval",
    "CERTMQ_MQTT_AUTOSAVE_INTERVAL": "autosave_interval",
}
# mosquitto options that belong to each listener rather than to the whole broker.
MOSQUITTO_LISTENER_OPTIONS = {"max_topic_alias"}
# certmq settings that mosquitto 2.0 cannot express; tests that need them expect failure there.
MOSQUITTO_UNSUPPORTED = {
    "CERTMQ_MQTT_CONNECT_TIMEOUT",
    "CERTMQ_MQTT_MAX_RETAINED_MESSAGES",
    "CERTMQ_MQTT_MAX_RETAINED_BYTES",
    "CERTMQ_MQTT_MAX_SUBSCRIPTIONS_PER_CLIENT",
    "CERTMQ_MQTT_MAX_TOPIC_LENGTH",
    "CERTMQ_MQTT_MAX_TOPIC_LEVELS",
    "CERTMQ_MQTT_MAX_SESSIONS",
    "CERTMQ_MQTT_MAX_SESSIONS_PER_CERTIFICATE",
    "CERTMQ_MQTT_MAX_SESSIONS_PER_ACCESS_KEY",
    "CERTMQ_MQTT_MAX_ANONYMOUS_SESSIONS",
}


def broker_kind() -> str:
    kind = os.environ.get("CERTMQ_TEST_BROKER", "certmq").strip().lower() or "certmq"
    if kind not in ("certmq", "mosquitto"):
        raise RuntimeError(f"CERTMQ_TEST_BROKER must be 'certmq' or 'mosquitto', not {kind!r}")
    return kind


def expect_failure_on_mosquitto(reason: str) -> Any:
    """Mark a test of behaviour that mosquitto 2.0.11 lacks: it must fail there (strictly, so a
    pass is noticed), and it must pass on certmq, where the mark does nothing."""
    import pytest

    return pytest.mark.xfail(broker_kind() == "mosquitto", reason=f"mosquitto 2.0.11: {reason}", strict=True)


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Ports for the servers the tests start: below the range the kernel gives outgoing connections,
# which would otherwise take a port chosen for a server in the seconds before it listens
# (sometimes the server's own connections, to NATS or PostgreSQL, as it starts).
_SERVER_PORTS = range(10000, max(_first_ephemeral_port(), 10001))
_handed_out: set[int] = set()
# Not the random module's generator, which tests may seed: two test runs would pick alike.
_chance = random.SystemRandom()


def free_port() -> int:
    """A loopback port free now, outside the ephemeral range, not handed out before here."""
    for _ in range(1000):
        port = _chance.choice(_SERVER_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {_SERVER_PORTS.start} and {_SERVER_PORTS.stop - 1}")


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class RunningBroker:
    """One broker process and the addresses the tests connect to."""

    kind: str
    host: str
    tcp_port: int
    tls_port: int
    ws_port: int
    wss_port: int
    http_port: int
    ca_file: Path
    data_dir: Path
    log_file: Path
    settings: dict[str, str]
    process: subprocess.Popen[bytes]
    command: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    wait_ports: list[int] = field(default_factory=list)
    init_info: dict[str, Any] = field(default_factory=dict)
    _bridge: WebSocketBridge | None = None
    exit_code: int | None = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metrics(self) -> dict[str, float]:
        """The samples of certmq's /metrics page by name and labels, as Prometheus reads them:
        ``{'certmq_messages_received_total': 12.0, 'certmq_connections{listener="tls"}': 3.0, ...}``."""
        import httpx

        page = httpx.get(f"http://{self.host}:{self.http_port}/metrics", timeout=10)
        page.raise_for_status()
        samples = {}
        for line in page.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def restart(self) -> None:
        """Stop with SIGTERM (asserting a clean exit) and start again on the same data directory
        and ports."""
        code = self._terminate()
        assert code == 0, f"{self.kind} exited with code {code} after SIGTERM\n{self.log_tail()}"
        self.start()

    def crash_and_restart(self) -> None:
        """Kill with SIGKILL, as a power cut would stop it, and start again on the same data
        directory and ports."""
        self.kill()
        self.start()

    def kill(self) -> None:
        """Kill with SIGKILL, as a power cut would stop it."""
        self.process.kill()
        self.process.wait()
        self.exit_code = self.process.returncode

    def start(self) -> None:
        """Start again, after a stop or a kill, on the same data directory and ports."""
        self.exit_code = None
        self.process = launch(self.command, self.environment, self.data_dir, self.log_file)
        _wait_for_ports(self.process, self.wait_ports, self.log_file, self.kind)

    def stop(self) -> int:
        """Send SIGTERM and wait; returns the exit code (killing the process if it hangs)."""
        if self._bridge is not None:
            self._bridge.stop()
            self._bridge = None
        return self._terminate()

    def _terminate(self) -> int:
        if self.exit_code is not None:
            return self.exit_code
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.exit_code = -9
                raise AssertionError(
                    f"{self.kind} did not exit within {STOP_TIMEOUT}s of SIGTERM\n{self.log_tail()}"
                ) from None
        self.exit_code = self.process.returncode
        return self.exit_code


# Passed through from the test run's environment; every other CERTMQ_* variable is dropped so that
# each broker runs with exactly the settings its test asked for.
PASSED_THROUGH = {"CERTMQ_EVENT_LOOP"}


def _clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CERTMQ_") or name in PASSED_THROUGH
    }


def launch(
    command: list[str], environment: dict[str, str], data_dir: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start ``command`` in ``data_dir``, its output appended to ``log_file``."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            command,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=data_dir,
        )


def _wait_for_ports(process: subprocess.Popen[bytes], ports: list[int], log_file: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {process.returncode} before listening on {pending}\n"
                + log_file.read_text(errors="replace")[-4000:]
            )
        pending = [port for port in pending if not port_accepts(port)]
        if not pending:
            return
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"{what} did not listen on ports {pending} within {START_TIMEOUT}s\n"
                + log_file.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.05)


def start_broker(data_dir: Path, settings: Mapping[str, Any] | None = None) -> RunningBroker:
    settings = {name: str(value) for name, value in (settings or {}).items()}
    for name in settings:
        if not name.startswith("CERTMQ_"):
            raise ValueError(f"broker settings are CERTMQ_<SECTION>_<KEY> variables, not {name!r}")
    data_dir.mkdir(parents=True, exist_ok=True)
    if broker_kind() == "mosquitto":
        return _start_mosquitto(data_dir, settings)
    return _start_certmq(data_dir, settings)


def _start_certmq(data_dir: Path, settings: dict[str, str]) -> RunningBroker:
    return serve_certmq(data_dir, settings, initialised(data_dir))


# What `certmq init` made once in this test run, and what it printed: the instance every broker
# of the run starts from a copy of (tests/unit/test_instance.py tests `certmq init` itself).
_first_instance: tuple[Path, dict[str, Any]] | None = None


def initialised(data_dir: Path) -> dict[str, Any]:
    """``data_dir`` made an instance as ``certmq init`` makes one, and what init printed, its
    paths in ``data_dir``. An empty ``data_dir`` gets a copy of the run's first instance (its id,
    keys, credentials and server CA), as the nodes of a cluster do; one that holds something
    already is left to ``certmq init``."""
    global _first_instance
    if any(data_dir.iterdir()):
        return init_certmq(data_dir)
    if _first_instance is None:
        first = Path(tempfile.mkdtemp(prefix="certmq-first-instance-"))
        atexit.register(shutil.rmtree, first, ignore_errors=True)
        _first_instance = (first, init_certmq(first / "data"))
    first, info = _first_instance
    shutil.copytree(first / "data", data_dir, dirs_exist_ok=True)
    return {
        name: str(data_dir / Path(value).relative_to(first / "data"))
        if isinstance(value, str) and Path(value).is_relative_to(first / "data")
        else value
        for name, value in info.items()
    }


def certmq_command() -> tuple[list[str], dict[str, str]]:
    """``python -m certmq`` from this checkout, and its environment."""
    environment = _clean_environment()
    source = str(PROJECT_ROOT / "src")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [source, environment.get("PYTHONPATH")]))
    return [sys.executable, "-m", "certmq"], environment


def init_certmq(data_dir: Path) -> dict[str, Any]:
    """``certmq init --json`` in ``data_dir``: what it printed (the instance id, the admin token,
    the AccessKey pair, the server CA's path)."""
    command, environment = certmq_command()
    init = subprocess.run(
        [*command, "init", "--data-dir", str(data_dir), "--json"],
        env=environment,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if init.returncode != 0:
        raise RuntimeError(
            f"certmq init exited {init.returncode}\nstdout: {init.stdout.decode(errors='replace')}\n"
            f"stderr: {init.stderr.decode(errors='replace')}"
        )
    try:
        info: dict[str, Any] = json.loads(init.stdout)
    except json.JSONDecodeError as error:
        raise RuntimeError(
            f"certmq init --json did not print one JSON object ({error}): {init.stdout!r}"
        ) from None
    return info


def serve_certmq(
    data_dir: Path, settings: dict[str, str], info: dict[str, Any], arguments: Sequence[str] = ()
) -> RunningBroker:
    """``certmq serve`` on the instance in ``data_dir`` (``info``: what its init printed), every
    listener on a free port, returned once they accept connections. ``arguments``: more options
    of ``certmq serve`` (``--workers 2``)."""
    command, environment = certmq_command()
    ports = {name: free_port() for name in ("tcp", "tls", "ws", "wss", "http")}
    for name, port in ports.items():
        environment[f"CERTMQ_LISTENERS_{name.upper()}"] = f"{HOST}:{port}"
    environment["CERTMQ_AUTH_ANONYMOUS"] = "true"
    environment.update(settings)
    log_file = data_dir / "broker.log"
    serve = [*command, "serve", "--data-dir", str(data_dir), *arguments]
    process = launch(serve, environment, data_dir, log_file)
    # The HTTP listener (API, console, metrics) is not part of what these tests exercise.
    # Plain TCP and WebSocket stay closed in mutual mode unless asked for; the HTTP API is there too.
    closed = set()
    if settings.get("CERTMQ_INSTANCE_AUTH_MODE") == "mutual":
        closed = {
            name
            for name in ("tcp", "ws")
            if settings.get(f"CERTMQ_LISTENERS_{name.upper()}_IN_MUTUAL_MODE", "false") != "true"
        }
    mqtt_ports = [port for name, port in ports.items() if name not in closed]
    _wait_for_ports(process, mqtt_ports, log_file, "certmq serve")
    return RunningBroker(
        kind="certmq",
        host=HOST,
        tcp_port=ports["tcp"],
        tls_port=ports["tls"],
        ws_port=ports["ws"],
        wss_port=ports["wss"],
        http_port=ports["http"],
        ca_file=Path(info["server_ca_file"]),
        data_dir=data_dir,
        log_file=log_file,
        settings=settings,
        process=process,
        command=serve,
        environment=environment,
        wait_ports=mqtt_ports,
        init_info=info,
    )


def write_test_ca(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) for tests that need one of their own."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_file = directory / "ca.pem"
    key_file = directory / "ca.key"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificate_file, key_file


def _write_localhost_server_certificate(
    directory: Path, ca_file: Path, ca_key_file: Path
) -> tuple[Path, Path]:
    ca_certificate = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certificate_file = directory / "server.pem"
    key_file = directory / "server.key"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificate_file, key_file


def _start_mosquitto(data_dir: Path, settings: dict[str, str]) -> RunningBroker:
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    ca_file, ca_key_file = write_test_ca(data_dir / "ca", "certmq interop test CA")
    certificate_file, key_file = _write_localhost_server_certificate(data_dir, ca_file, ca_key_file)
    ports = {name: free_port() for name in ("tcp", "tls", "ws", "wss")}
    lines = [
        f"user {getpass.getuser()}",
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %H:%M:%S",
    ]
    per_listener = []
    for name, value in settings.items():
        if name in MOSQUITTO_UNSUPPORTED:
            continue
        if name not in MOSQUITTO_EQUIVALENTS:
            raise ValueError(f"{name} has no mosquitto equivalent; add one to MOSQUITTO_EQUIVALENTS")
        option = MOSQUITTO_EQUIVALENTS[name]
        (per_listener if option in MOSQUITTO_LISTENER_OPTIONS else lines).append(f"{option} {value}")
    lines += [
        f"listener {ports['tcp']} {HOST}",
        *per_listener,
        f"listener {ports['tls']} {HOST}",
        *per_listener,
        f"cafile {ca_file}",
        f"certfile {certificate_file}",
        f"keyfile {key_file}",
    ]
    config_file = data_dir / "mosquitto.conf"
    config_file.write_text("\n".join(lines) + "\n")
    log_file = data_dir / "broker.log"
    command = [executable, "-c", str(config_file)]
    environment = _clean_environment()
    process = launch(command, environment, data_dir, log_file)
    _wait_for_ports(process, [ports["tcp"], ports["tls"]], log_file, "mosquitto")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate_file, key_file)
    bridge = WebSocketBridge(ports["tcp"], ports["ws"], ports["wss"], server_context)
    bridge.start()
    return RunningBroker(
        kind="mosquitto",
        host=HOST,
        tcp_port=ports["tcp"],
        tls_port=ports["tls"],
        ws_port=ports["ws"],
        wss_port=ports["wss"],
        http_port=0,
        ca_file=ca_file,
        data_dir=data_dir,
        log_file=log_file,
        settings=settings,
        process=process,
        command=command,
        environment=environment,
        wait_ports=[ports["tcp"], ports["tls"]],
        _bridge=bridge,
    )


class WebSocketBridge:
    """Serves MQTT over WebSocket (ws and wss, path /mqtt) by relaying to a TCP MQTT listener."""

    def __init__(self, tcp_port: int, ws_port: int, wss_port: int, server_context: ssl.SSLContext) -> None:
        self._tcp_port = tcp_port
        self._ports = (ws_port, wss_port)
        self._server_context = server_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="websocket-bridge", daemon=True)
        self._servers: list[Any] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        def only_mqtt_path(connection: Any, request: Any) -> Any:
            if request.path != "/mqtt":
                return Response(404, "Not Found", Headers(), b"")
            return None

        for port, context in ((self._ports[0], None), (self._ports[1], self._server_context)):
            server = await serve(
                self._relay,
                HOST,
                port,
                ssl=context,
                subprotocols=["mqtt"],
                process_request=only_mqtt_path,
                compression=None,
                max_size=None,
                ping_interval=None,
            )
            self._servers.append(server)

    async def _relay(self, websocket: Any) -> None:
        reader, writer = await asyncio.open_connection(HOST, self._tcp_port)

        async def to_broker() -> None:
            try:
                async for frame in websocket:
                    writer.write(frame if isinstance(frame, bytes) else frame.encode())
                    await writer.drain()
            finally:
                writer.close()

        async def to_client() -> None:
            try:
                while chunk := await reader.read(65536):
                    await websocket.send(chunk)
            finally:
                await websocket.close()

        tasks = [asyncio.ensure_future(to_broker()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        async def close_all() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
