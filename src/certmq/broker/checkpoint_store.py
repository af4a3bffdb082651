"""The durable store of broker state: retained messages and persistent sessions.

The broker writes a whole snapshot at a time, as a checkpoint of its journal (at shutdown and
whenever the journal has grown by ``mqtt.checkpoint_bytes``), and reads it back once, at start,
before the journal's later records; see :mod:`certmq.broker.state_keeper`. A snapshot is
made of the records below: named tuples of plain values whose times are wall-clock times
(``time.time()``), so a store knows nothing of the event loop or of the broker's own objects.

:class:`StateStore` is what the broker needs from a store; :class:`SqliteStateStore` keeps the
state in one SQLite file in the data directory. A store for several nodes (PostgreSQL, or a
clustered key-value store) implements the same two calls.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from certmq.mqtt.properties import PROPERTY_TYPES, PropertyType

STATE_FILE_NAME = "broker-state.db"


class StateStoreError(Exception):
    """The saved broker state cannot be read or written; the message says what to do."""


class StateFormatError(StateStoreError):
    """The saved state is in a format this version of certmq does not read."""


# -- records ---------------------------------------------------------------------------------


class StoredMessage(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Mapping[int, Any]  # the forwarded PUBLISH properties (MQTT 5.0 3.3.2.3)
    expires_at: float | None  # wall-clock time after which it is not delivered; None: never
    sender: str | None  # client id of the publisher, for no-local subscriptions
    message_id: int = 0  # its id in the journal; 0: none


class StoredDelivery(NamedTuple):
    """A message queued or in flight to one session, with that session's QoS and flags."""

    message: StoredMessage  # the same record for every delivery of one message: stored once
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...]
    delivery_id: int = 0  # its id in the journal, for a queued delivery; 0: none


class StoredFlight(NamedTuple):
    """A QoS 1 or 2 delivery sent and not yet fully acknowledged."""

    packet_id: int
    delivery: StoredDelivery
    released: bool  # PUBREL sent, waiting for PUBCOMP


class StoredSubscription(NamedTuple):
    topic_filter: str  # as subscribed, including a `$share/group/` prefix
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    subscription_id: int | None


class StoredWill(NamedTuple):
    """A will that is still to be published, and when."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Mapping[int, Any]  # the will properties as received in CONNECT
    publish_at: float  # wall-clock time


class StoredSession(NamedTuple):
    client_id: str
    protocol_version: int
    expiry_interval: int  # seconds; 0xFFFFFFFF: never expires
    # Wall-clock time the client went offline; for a session connected when the snapshot was
    # taken (``connected``), the snapshot's time.
    disconnected_at: float
    subscriptions: Sequence[StoredSubscription]
    inflight: Sequence[StoredFlight]  # in the order they were sent
    pending: Sequence[StoredDelivery]  # queued, oldest first
    incoming_qos2: Sequence[int]  # packet ids of QoS 2 PUBLISHes answered with PUBREC, awaiting PUBREL
    will: StoredWill | None  # for a connected session, due its delay after the snapshot
    owner: str = ""  # the owner key of the identity that created it (certmq.auth.ownership)
    # Who the client connected as last: its topic permissions are compiled again from these.
    username: str | None = None
    identity: Mapping[str, str] = {}
    connected: bool = False  # its client was connected when the snapshot was taken


class BrokerState(NamedTuple):
    saved_at: float  # wall-clock time of the snapshot
    retained: Sequence[StoredMessage]
    sessions: Sequence[StoredSession]
    # The journal segments this snapshot covers: those numbered up to this one.
    journal_segment: int = 0
    # The next ids the journal gives a message and a delivery.
    next_message_id: int = 1
    next_delivery_id: int = 1


class StateStore(Protocol):
    """Where the broker keeps its state between runs.

    Both calls block; the broker makes them from a worker thread, never from the event loop.
    """

    def load(self) -> BrokerState | None:
        """The last snapshot saved; None when none was ever saved."""
        ...

    def save(self, state: BrokerState) -> None:
        """Replace the saved snapshot with ``state``, all or nothing: a save that fails or is
        interrupted leaves the previous snapshot in place."""
        ...

    def close(self) -> None: ...


# -- properties as JSON ----------------------------------------------------------------------


def properties_to_json(properties: Mapping[int, Any]) -> str:
    """MQTT properties as a JSON object keyed by property id; binary values in base64."""
    if not properties:
        return "{}"
    document: dict[str, Any] = {}
    for identifier, value in properties.items():
        if PROPERTY_TYPES.get(identifier) is PropertyType.BINARY:
            value = base64.b64encode(value).decode("ascii")
        document[str(int(identifier))] = value
    return json.dumps(document, separators=(",", ":"))


def properties_from_json(text: str) -> dict[int, Any]:
    if text == "{}":
        return {}
    properties: dict[int, Any] = {}
    for key, value in json.loads(text).items():
        identifier = int(key)
        kind = PROPERTY_TYPES.get(identifier)
        if kind is PropertyType.BINARY:
            value = base64.b64decode(value)
        elif kind is PropertyType.UTF8_STRING_PAIR:
            value = [(name, text) for name, text in value]
        properties[identifier] = value
    return properties


# -- SQLite ----------------------------------------------------------------------------------

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_at REAL NOT NULL,
    journal_segment INTEGER NOT NULL DEFAULT 0,
    next_message_id INTEGER NOT NULL DEFAULT 1,
    next_delivery_id INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    properties TEXT NOT NULL,
    expires_at REAL,
    sender TEXT,
    message_id INTEGER NOT NULL DEFAULT 0
);
-- Messages queued or in flight to sessions; one row however many sessions hold the message.
-- id: the message's id in the journal (when positive).
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties TEXT NOT NULL,
    expires_at REAL,
    sender TEXT
);
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    protocol_version INTEGER NOT NULL,
    expiry_interval INTEGER NOT NULL,
    disconnected_at REAL NOT NULL,
    incoming_qos2 TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    username TEXT,
    identity TEXT NOT NULL DEFAULT '{}',
    connected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    topic_filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL,
    retain_as_published INTEGER NOT NULL,
    retain_handling INTEGER NOT NULL,
    subscription_id INTEGER,
    PRIMARY KEY (client_id, topic_filter)
);
CREATE TABLE inflight (
    client_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    packet_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    subscription_ids TEXT NOT NULL,
    released INTEGER NOT NULL,
    PRIMARY KEY (client_id, position)
);
CREATE TABLE queued (
    client_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    subscription_ids TEXT NOT NULL,
    delivery_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, position)
);
CREATE TABLE wills (
    client_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties TEXT NOT NULL,
    publish_at REAL NOT NULL
);
"""

# SQL that brings a file from format version N to N + 1, run in one transaction with the
# version update. Add an entry whenever SCHEMA_VERSION goes up.
MIGRATIONS: dict[int, str] = {
    # 2: the journal's checkpoint (its segment and ids); sessions keep their owner, their
    # client's identity and whether it was connected. A session saved without an owner ("") is
    # adopted by the first identity that resumes it.
    1: """
ALTER TABLE snapshot ADD COLUMN journal_segment INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshot ADD COLUMN next_message_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE snapshot ADD COLUMN next_delivery_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE retained ADD COLUMN message_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN username TEXT;
ALTER TABLE sessions ADD COLUMN identity TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sessions ADD COLUMN connected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queued ADD COLUMN delivery_id INTEGER NOT NULL DEFAULT 0;
""",
}

_TABLES = ("snapshot", "retained", "messages", "sessions", "subscriptions", "inflight", "queued", "wills")


def _ids_to_json(ids: tuple[int, ...]) -> str:
    return "[]" if not ids else json.dumps(ids)


def _ids_from_json(text: str) -> tuple[int, ...]:
    return () if text == "[]" else tuple(json.loads(text))


class SqliteStateStore:
    """The broker state in one SQLite file (WAL mode), rewritten whole in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        # Saves and loads come from worker threads; one at a time on the one connection.
        self._lock = threading.Lock()

    # -- opening ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            try:
                self._connection = self._open()
            except sqlite3.DatabaseError as error:
                raise StateStoreError(
                    f"{self.path}: cannot open the saved broker state ({error}). Move the file away "
                    "to start without it; retained messages and persistent sessions are then lost."
                ) from error
            except OSError as error:
                raise StateStoreError(
                    f"{self.path}: cannot create the broker state file ({error.strerror}). The data "
                    "directory must exist and be writable by the broker; or set mqtt.persistence = false."
                ) from error
        return self._connection

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            # It holds message payloads: readable by the broker's user only.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            self._prepare_schema(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _prepare_schema(self, connection: sqlite3.Connection) -> None:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            connection.executescript(
                f"BEGIN; {_SCHEMA} INSERT INTO schema_version VALUES ({SCHEMA_VERSION}); COMMIT;"
            )
            return
        if "schema_version" not in tables:
            raise StateFormatError(
                f"{self.path} is not a certmq broker state file (it has no schema_version table); "
                "move it away or point the data directory elsewhere."
            )
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        version = None if row is None else row[0]
        if version == SCHEMA_VERSION:
            return
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StateFormatError(
                f"{self.path} is in broker state format {version}, and this certmq reads format "
                f"{SCHEMA_VERSION}: it was written by a newer certmq. Run that version, or move the file "
                "away to start without the saved sessions and retained messages."
            )
        missing = [step for step in range(version, SCHEMA_VERSION) if step not in MIGRATIONS]
        if missing:
            raise StateFormatError(
                f"{self.path} is in broker state format {version}, which this certmq cannot convert to "
                f"format {SCHEMA_VERSION}. Move the file away to start without the saved sessions and "
                "retained messages."
            )
        script = "".join(MIGRATIONS[step] for step in range(version, SCHEMA_VERSION))
        connection.executescript(
            f"BEGIN; {script} UPDATE schema_version SET version = {SCHEMA_VERSION}; COMMIT;"
        )

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- saving ----------------------------------------------------------------------------

    def save(self, state: BrokerState) -> None:
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                self._write(connection, state)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _write(self, connection: sqlite3.Connection, state: BrokerState) -> None:
        for table in _TABLES:
            connection.execute(f"DELETE FROM {table}")
        connection.execute(
            "INSERT INTO snapshot (id, saved_at, journal_segment, next_message_id, next_delivery_id)"
            " VALUES (1, ?, ?, ?, ?)",
            (state.saved_at, state.journal_segment, state.next_message_id, state.next_delivery_id),
        )
        connection.executemany(
            "INSERT INTO retained VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    m.topic,
                    m.payload,
                    m.qos,
                    properties_to_json(m.properties),
                    m.expires_at,
                    m.sender,
                    m.message_id,
                )
                for m in state.retained
            ),
        )
        message_ids: dict[int, int] = {}
        message_rows: list[tuple[Any, ...]] = []

        def message_id(message: StoredMessage) -> int:
            # Every record in ``state`` is alive for the whole save, so id() identifies it. A
            # message without a journal id gets a row id below 1.
            found = message_ids.get(id(message))
            if found is None:
                found = message_ids[id(message)] = message.message_id or -len(message_rows)
                message_rows.append(
                    (
                        found,
                        message.topic,
                        message.payload,
                        message.qos,
                        message.retain,
                        properties_to_json(message.properties),
                        message.expires_at,
                        message.sender,
                    )
                )
            return found

        session_rows: list[tuple[Any, ...]] = []
        subscription_rows: list[tuple[Any, ...]] = []
        inflight_rows: list[tuple[Any, ...]] = []
        queued_rows: list[tuple[Any, ...]] = []
        will_rows: list[tuple[Any, ...]] = []
        for session in state.sessions:
            client_id = session.client_id
            session_rows.append(
                (
                    client_id,
                    session.protocol_version,
                    session.expiry_interval,
                    session.disconnected_at,
                    json.dumps(sorted(session.incoming_qos2)),
                    session.owner,
                    session.username,
                    json.dumps(dict(session.identity)),
                    session.connected,
                )
            )
            subscription_rows.extend((client_id, *subscription) for subscription in session.subscriptions)
            for position, (packet_id, delivery, released) in enumerate(session.inflight):
                inflight_rows.append(
                    (
                        client_id,
                        position,
                        packet_id,
                        message_id(delivery.message),
                        delivery.qos,
                        delivery.retain,
                        _ids_to_json(delivery.subscription_ids),
                        released,
                    )
                )
            for position, delivery in enumerate(session.pending):
                queued_rows.append(
                    (
                        client_id,
                        position,
                        message_id(delivery.message),
                        delivery.qos,
                        delivery.retain,
                        _ids_to_json(delivery.subscription_ids),
                        delivery.delivery_id,
                    )
                )
            will = session.will
            if will is not None:
                will_rows.append(
                    (
                        client_id,
                        will.topic,
                        will.payload,
                        will.qos,
                        will.retain,
                        properties_to_json(will.properties),
                        will.publish_at,
                    )
                )
        connection.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", session_rows)
        connection.executemany("INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)", subscription_rows)
        connection.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", message_rows)
        connection.executemany("INSERT INTO inflight VALUES (?, ?, ?, ?, ?, ?, ?, ?)", inflight_rows)
        connection.executemany("INSERT INTO queued VALUES (?, ?, ?, ?, ?, ?, ?)", queued_rows)
        connection.executemany("INSERT INTO wills VALUES (?, ?, ?, ?, ?, ?, ?)", will_rows)

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> BrokerState | None:
        with self._lock:
            connection = self._connect()
            # One read transaction: a consistent snapshot even if another process writes.
            connection.execute("BEGIN")
            try:
                return self._read(connection)
            finally:
                connection.execute("COMMIT")

    def _read(self, connection: sqlite3.Connection) -> BrokerState | None:
        row = connection.execute(
            "SELECT saved_at, journal_segment, next_message_id, next_delivery_id FROM snapshot"
        ).fetchone()
        if row is None:
            return None
        saved_at, journal_segment, next_message_id, next_delivery_id = row
        retained = [
            StoredMessage(
                topic, payload, qos, True, properties_from_json(properties), expires_at, sender, message_id
            )
            for topic, payload, qos, properties, expires_at, sender, message_id in connection.execute(
                "SELECT topic, payload, qos, properties, expires_at, sender, message_id FROM retained"
            )
        ]
        messages = {
            message_id: StoredMessage(
                topic,
                payload,
                qos,
                bool(retain),
                properties_from_json(properties),
                expires_at,
                sender,
                max(message_id, 0),
            )
            for message_id, topic, payload, qos, retain, properties, expires_at, sender in connection.execute(
                "SELECT id, topic, payload, qos, retain, properties, expires_at, sender FROM messages"
            )
        }
        subscriptions: defaultdict[str, list[StoredSubscription]] = defaultdict(list)
        for (
            client_id,
            topic_filter,
            qos,
            no_local,
            as_published,
            handling,
            subscription_id,
        ) in connection.execute(
            "SELECT client_id, topic_filter, qos, no_local, retain_as_published, retain_handling,"
            " subscription_id FROM subscriptions"
        ):
            subscriptions[client_id].append(
                StoredSubscription(
                    topic_filter, qos, bool(no_local), bool(as_published), handling, subscription_id
                )
            )
        inflight: defaultdict[str, list[StoredFlight]] = defaultdict(list)
        for client_id, packet_id, message_id, qos, retain, ids, released in connection.execute(
            "SELECT client_id, packet_id, message_id, qos, retain, subscription_ids, released"
            " FROM inflight ORDER BY client_id, position"
        ):
            delivery = StoredDelivery(messages[message_id], qos, bool(retain), _ids_from_json(ids))
            inflight[client_id].append(StoredFlight(packet_id, delivery, bool(released)))
        pending: defaultdict[str, list[StoredDelivery]] = defaultdict(list)
        for client_id, message_id, qos, retain, ids, delivery_id in connection.execute(
            "SELECT client_id, message_id, qos, retain, subscription_ids, delivery_id FROM queued"
            " ORDER BY client_id, position"
        ):
            pending[client_id].append(
                StoredDelivery(messages[message_id], qos, bool(retain), _ids_from_json(ids), delivery_id)
            )
        wills = {
            client_id: StoredWill(
                topic, payload, qos, bool(retain), properties_from_json(properties), publish_at
            )
            for client_id, topic, payload, qos, retain, properties, publish_at in connection.execute(
                "SELECT client_id, topic, payload, qos, retain, properties, publish_at FROM wills"
            )
        }
        sessions = [
            StoredSession(
                client_id,
                protocol_version,
                expiry_interval,
                disconnected_at,
                subscriptions.get(client_id, []),
                inflight.get(client_id, []),
                pending.get(client_id, []),
                json.loads(incoming_qos2),
                wills.get(client_id),
                owner,
                username,
                json.loads(identity),
                bool(connected),
            )
            for (
                client_id,
                protocol_version,
                expiry_interval,
                disconnected_at,
                incoming_qos2,
                owner,
                username,
                identity,
                connected,
            ) in connection.execute(
                "SELECT client_id, protocol_version, expiry_interval, disconnected_at, incoming_qos2,"
                " owner, username, identity, connected FROM sessions"
            )
        ]
        return BrokerState(saved_at, retained, sessions, journal_segment, next_message_id, next_delivery_id)
