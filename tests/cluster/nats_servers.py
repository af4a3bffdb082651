"""A throw-away NATS cluster for the cluster tests: three ``nats-server`` processes (Debian's) on
free loopback ports, routed to each other, with JetStream on, its files in a directory of the
test run's own.

The cluster is ready when every running server has a route to every other and all of them
agree on a JetStream meta leader: a node that connects earlier may find JetStream unable to
create a stream. Readiness is read from each server's monitoring port, never waited for by the
clock.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats

from broker_process import HOST, free_port, launch

NATS_SERVER = "/usr/sbin/nats-server"
CLUSTER_NAME = "certmq-tests"
# An MQTT packet may carry up to 1 MiB of payload (certmq's max_packet_size) plus its topic and
# properties, and a node's envelope around it: 8 MB is NATS's largest payload without a warning.
MAX_PAYLOAD = "8MB"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def nats_server_executable() -> str:
    found = shutil.which("nats-server") or NATS_SERVER
    if not Path(found).exists():
        raise RuntimeError(
            "nats-server is missing: install Debian's package (apt-get install nats-server; .ci/run does)"
        )
    return found


@dataclass
class NatsServer:
    """One server of the cluster: its ports, its configuration file, its process."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # by the test, on purpose

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "nats-server.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "nats-server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self, routes: list[int]) -> None:
        route_urls = ", ".join(f'"nats-route://{HOST}:{port}"' for port in routes)
        self.config_file.write_text(
            f"server_name: {self.name}\n"
            f"listen: {HOST}:{self.client_port}\n"
            f"http: {HOST}:{self.monitor_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{ store_dir: "{self.directory / "jetstream"}" }}\n'
            f"cluster {{\n"
            f"  name: {CLUSTER_NAME}\n"
            f"  listen: {HOST}:{self.route_port}\n"
            f"  routes: [{route_urls}]\n"
            f"}}\n"
        )

    def monitor(self, endpoint: str) -> Any:
        """A monitoring endpoint's JSON (``/routez``, ``/jsz``, ``/healthz``)."""
        response = httpx.get(f"http://{HOST}:{self.monitor_port}{endpoint}", timeout=2)
        response.raise_for_status()
        return response.json()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class NatsCluster:
    """Three (or ``size``) NATS servers in one cluster with JetStream.

    ``urls`` is what a certmq node is given (``CERTMQ_CLUSTER_NATS_SERVERS``). ``kill(i)``,
    ``stop(i)`` and ``restart(i)`` act on server ``i`` (0-based); ``restart`` and ``start``
    return once the cluster is whole again."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.executable = nats_server_executable()
        self.servers: list[NatsServer] = []
        for index in range(size):
            server_directory = directory / f"nats-{index + 1}"
            server_directory.mkdir(parents=True, exist_ok=True)
            self.servers.append(
                NatsServer(f"nats-{index + 1}", free_port(), free_port(), free_port(), server_directory)
            )
        for server in self.servers:
            server.write_config([other.route_port for other in self.servers if other is not server])

    @property
    def urls(self) -> str:
        return ",".join(server.url for server in self.servers)

    def start(self) -> None:
        for server in self.servers:
            self._launch(server)
        self.wait_until_formed()

    def _launch(self, server: NatsServer) -> None:
        command = [self.executable, "--config", str(server.config_file)]
        server.stopped = False
        server.process = launch(command, dict(os.environ), server.directory, server.log_file)

    def kill(self, index: int) -> None:
        """SIGKILL: the server is gone at once, as a crashed machine would be."""
        server = self.servers[index]
        assert server.process is not None
        server.stopped = True
        server.process.kill()
        server.process.wait()

    def stop(self, index: int) -> None:
        """SIGTERM: the server shuts down in order and closes its connections."""
        self._terminate(self.servers[index])

    def restart(self, index: int) -> None:
        """Stop server ``index`` if it runs, start it again on the same ports and files, and
        wait until it is back in the cluster."""
        server = self.servers[index]
        if server.running:
            self._terminate(server)
        self._launch(server)
        self.wait_until_formed()

    def stream_leader(self, stream: str) -> int:
        """The index of the server that leads JetStream stream ``stream``."""
        for server in self.servers:
            if not server.running:
                continue
            report = server.monitor("/jsz?accounts=true&streams=true")
            for account in report.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        return next(index for index, other in enumerate(self.servers) if other.name == leader)
        raise LookupError(f"no server leads the stream {stream}")

    def wait_until_formed(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until each running server is routed to every other running server and all
        of them name the same JetStream meta leader, one of them."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._formation()
            if state is None:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in self.servers)
                raise RuntimeError(f"the NATS cluster did not form within {timeout}s: {state}\n{logs}")
            time.sleep(0.05)

    def _formation(self) -> str | None:
        """What keeps the cluster from being whole, or None when nothing does."""
        for server in self.servers:
            if server.process is not None and not server.stopped and not server.running:
                raise RuntimeError(
                    f"{server.name} exited with code {server.process.returncode}\n{server.log_tail()}"
                )
        running = [server for server in self.servers if server.running]
        names = {server.name for server in running}
        leaders = set()
        for server in running:
            try:
                routes = server.monitor("/routez")
                jetstream = server.monitor("/jsz")
                health = server.monitor("/healthz")
            except (httpx.HTTPError, ValueError) as error:
                return f"{server.name}: monitoring not answering ({error})"
            if routes.get("num_routes", 0) < len(running) - 1:
                return f"{server.name}: {routes.get('num_routes', 0)} of {len(running) - 1} routes"
            leader = (jetstream.get("meta_cluster") or {}).get("leader")
            if leader not in names:
                return f"{server.name}: JetStream meta leader {leader!r}"
            if health.get("status") != "ok":
                return f"{server.name}: health {health}"
            leaders.add(leader)
        if len(leaders) > 1:
            return f"the servers name different meta leaders: {sorted(leaders)}"
        return None

    def _terminate(self, server: NatsServer) -> None:
        server.stopped = True
        process = server.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        for server in self.servers:
            self._terminate(server)


def delete_streams(urls: str, subject_prefix: str) -> None:
    """Delete the JetStream streams (buckets and object stores included) of the cluster whose
    subject prefix is ``subject_prefix``: the NATS servers are shared by every test of a run,
    and a server started again catches up on every stream it holds before it says it is
    healthy."""
    stem = subject_prefix.replace(".", "_").upper()

    async def delete() -> None:
        client = await nats.connect(servers=urls.split(","), connect_timeout=5, max_reconnect_attempts=2)
        try:
            jetstream = client.jetstream()
            for info in await jetstream.streams_info():
                name = info.config.name or ""
                if name.startswith((f"{stem}_", f"KV_{stem}_", f"OBJ_{stem}_")):
                    await jetstream.delete_stream(name)
        finally:
            await client.close()

    try:
        asyncio.run(delete())
    except Exception as error:  # housekeeping: what is left costs time, not correctness
        warnings.warn(f"the streams of {subject_prefix} were not deleted: {error!r}", stacklevel=2)
