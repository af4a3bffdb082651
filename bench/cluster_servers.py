"""The servers a certmq cluster shares, started on loopback for one benchmark run and stopped
with it (bench/processes.py): a NATS server with JetStream, and a PostgreSQL server that gets a
fresh database per instance of certmq."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import processes

NATS_SERVER = "/usr/sbin/nats-server"
START_TIMEOUT = 30.0
# Above certmq's largest MQTT packet (1 MiB by default) plus the envelope (docs/cluster.md).
NATS_MAX_PAYLOAD = "8MB"


@dataclass
class NatsServer:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def nats_binary() -> str:
    found = shutil.which("nats-server") or (NATS_SERVER if Path(NATS_SERVER).exists() else None)
    if not found:
        raise RuntimeError("nats-server is not installed (Debian: apt-get install nats-server)")
    return found


def start_nats(directory: Path, cpus: set[int] | None = None) -> NatsServer:
    """One nats-server with JetStream (its store in ``directory``) on a free loopback port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    config = directory / "nats.conf"
    config.write_text(
        f"# Written by bench/cluster.py for one benchmark run.\n"
        f"listen: 127.0.0.1:{port}\n"
        f"max_payload: {NATS_MAX_PAYLOAD}\n"
        f'jetstream {{ store_dir: "{directory / "jetstream"}" }}\n'
    )
    binary = nats_binary()
    with open(directory / "nats.log", "wb") as output:
        process = processes.start(
            [binary, "-c", str(config)], cpus=cpus, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    try:
        processes.wait_for_port(port, process, START_TIMEOUT)
    except RuntimeError as error:
        processes.stop(process)
        log = (directory / "nats.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nats-server did not start: {error}\n{log}") from None
    return NatsServer(f"nats://127.0.0.1:{port}", process)


def nats_version() -> str:
    result = subprocess.run([nats_binary(), "--version"], capture_output=True, text=True, timeout=10)
    return result.stdout.strip().removeprefix("nats-server: ") or "unknown"


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL server listening on a Unix socket in its own directory."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    version: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://certmq@/{database}?host={self.directory}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database for one certmq instance; returns its URL."""
        import psycopg

        name = f"certmq_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _postgres_programs() -> tuple[str, str]:
    # Debian keeps the server programs off PATH, under /usr/lib/postgresql/VERSION/bin.
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    )
    initdb, postgres = shutil.which("initdb", path=search), shutil.which("postgres", path=search)
    if not (initdb and postgres):
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return initdb, postgres


def start_postgres(cpus: set[int] | None = None) -> PostgresServer:
    """initdb, then the server in the foreground (so that bench/processes.py stops it), as the
    ``postgres`` user when this runs as root, since PostgreSQL refuses root. Its directory is a
    temporary one of its own (the benchmark's work directory is private to its user): remove it
    with :meth:`PostgresServer.remove` once the server is stopped. Durability is off (fsync,
    full page writes): the registry's writes are not what is measured."""
    initdb, postgres = _postgres_programs()
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="certmq-bench-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root, and there is no postgres user to run PostgreSQL") from None
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    data, port = directory / "data", processes.free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "certmq", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with open(directory / "postgres.log", "wb") as output:
        if as_user:
            os.chown(directory / "postgres.log", owner.pw_uid, owner.pw_gid)
        process = processes.start(
            [
                *as_user,
                postgres,
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(directory),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ],
            cpus=cpus,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    version = subprocess.run([postgres, "--version"], capture_output=True, text=True, timeout=10).stdout
    server = PostgresServer(directory, port, process, _version_number(version))
    _wait_for_postgres(server)
    return server


def _version_number(text: str) -> str:
    match = re.search(r"\d+(\.\d+)*", text)
    return match.group(0) if match else "unknown"


def _wait_for_postgres(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            log = (server.directory / "postgres.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL exited with status {server.process.returncode}:\n{log}")
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f} s"
                ) from None
            time.sleep(0.1)
