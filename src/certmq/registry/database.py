"""The registry's database connection: SQLite in the data directory (the embedded default) or
PostgreSQL (docs/registry.md, "Where it is stored"), its schema migrations, and the sessions that
the store's tables (:mod:`certmq.registry.store`, :mod:`certmq.registry.log_store`) run their
transactions in, and the notices of changes that those transactions send on PostgreSQL
(:meth:`Database.announce`).

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns), foreign
keys on, and a busy timeout. Transactions that write begin with ``BEGIN IMMEDIATE``, so that two
processes sharing a file queue for the write lock instead of failing half-way.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session

from certmq.registry.events import CHANGE_CHANNEL, RegistryEvent, notice_to_json

REGISTRY_FILE = "registry.db"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Page cache per connection: listing pages of a million devices stays in memory.
SQLITE_CACHE_KIB = 65_536
# The execution option of the connections that only read (see Database).
READ_ONLY = "certmq_read_only"


def registry_url(url_or_path: str | Path, data_dir: Path | None = None) -> URL:
    """The SQLAlchemy URL of a ``[storage] url`` setting.

    ``""`` is ``DATA_DIR/registry.db``; a path without a scheme is an SQLite file;
    ``postgresql://…`` (or ``postgres://…``) uses the psycopg driver."""
    if isinstance(url_or_path, Path):
        return URL.create("sqlite+pysqlite", database=str(url_or_path))
    if not url_or_path:
        if data_dir is None:
            raise ValueError("an empty storage url means SQLite in the data directory: pass data_dir")
        return URL.create("sqlite+pysqlite", database=str(data_dir / REGISTRY_FILE))
    if "://" not in url_or_path:
        return URL.create("sqlite+pysqlite", database=url_or_path)
    url = make_url(url_or_path)
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername == "sqlite":
        return url.set(drivername="sqlite+pysqlite")
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, connection_record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below); the driver's own implicit transactions would
        # begin too late and too weakly.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_registry_engine(url_or_path: str | Path, data_dir: Path | None = None) -> Engine:
    """The engine of the registry at ``url_or_path`` (see :func:`registry_url`). An SQLite file's
    directory is created when missing."""
    url = registry_url(url_or_path, data_dir)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    _configure_sqlite(engine)
    return engine


# The advisory lock the nodes of a cluster take in turn to migrate the schema ("certmq" in ASCII).
MIGRATION_LOCK = 0x636572746D71


def alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def stored_time(moment: datetime.datetime, sqlite: bool) -> object:
    """What UtcDateTime stores, for statements written through the driver: naive UTC text on
    SQLite, timestamptz elsewhere."""
    if moment.tzinfo is None:
        raise ValueError("registry times must be timezone-aware (UTC)")
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else utc


class Database:
    """The engine and its sessions, one transaction per session. Not thread-safe: use it from
    one thread.

    ``origin`` is the node named in the notices of the changes written here (:meth:`announce`);
    the :class:`~certmq.registry.service.RegistryService` over the store sets its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Reads begin a plain (deferred) transaction on SQLite: they never wait for the write lock.
        self._read_engine = engine.execution_options(**{READ_ONLY: True})
        self.origin = ""
        self._announces = self.dialect == "postgresql"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def announce(self, connection: Connection, changes: Iterable[RegistryEvent]) -> None:
        """Tell the other nodes of ``changes``, the events of what the transaction open on
        ``connection`` writes. Every write of a change calls this inside its transaction.

        On PostgreSQL, one ``pg_notify`` on :data:`~certmq.registry.events.CHANGE_CHANNEL` per
        event, in that transaction: PostgreSQL delivers the notices when it commits and drops them
        when it rolls back, so a notice exists if and only if its change committed, and listeners
        get them in commit order (docs/registry.md, "Several nodes"). On SQLite, one node alone,
        nothing: ``changes`` is not even read."""
        if not self._announces:
            return
        sent_at = time.time()
        payloads = [notice_to_json(event, self.origin, sent_at) for event in changes]
        if payloads:
            connection.exec_driver_sql(
                "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload", (CHANGE_CHANNEL, payloads)
            )

    def migrate(self) -> None:
        """Apply every migration not yet applied (``alembic upgrade head``). On PostgreSQL the
        nodes of a cluster that start together take turns: a transaction-scoped advisory lock
        makes the second wait for the first's migration, then find nothing left to do."""
        config = alembic_config()
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def read_session(self) -> Session:
        return Session(self._read_engine, expire_on_commit=False)
