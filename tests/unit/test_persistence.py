"""The durable broker state: the SQLite store of checkpoints, snapshots of the core, restoring
them, and the keeper that checkpoints the journal."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from certmq.auth.identity import ANONYMOUS, Identity
from certmq.auth.ownership import session_owner
from certmq.broker.checkpoint_store import (
    SCHEMA_VERSION,
    STATE_FILE_NAME,
    BrokerState,
    SqliteStateStore,
    StateFormatError,
    StateStoreError,
    StoredDelivery,
    StoredFlight,
    StoredMessage,
    StoredSession,
    StoredSubscription,
    StoredWill,
    properties_from_json,
    properties_to_json,
)
from certmq.broker.core import BrokerCore
from certmq.broker.durable_storage import LocalStorage
from certmq.broker.journal_log import JournalError, segment_numbers
from certmq.broker.messages import Delivery, Message
from certmq.broker.recovery import Recovery, restore_snapshot
from certmq.broker.session import Session
from certmq.broker.state_keeper import StateKeeper, snapshot_to_state, take_snapshot
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.config import MqttSection
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.session_flows import NEVER_EXPIRES, OutgoingFlight

SAVED_AT = 1_800_000_000.0

MESSAGE_PROPERTIES: dict[int, Any] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: 1,
    PropertyId.CONTENT_TYPE: "application/json",
    PropertyId.RESPONSE_TOPIC: "replies/1",
    PropertyId.CORRELATION_DATA: b"\x00\xffcorrelation",
    PropertyId.USER_PROPERTY: [("region", "eu"), ("region", "us"), ("empty", "")],
}


def a_state() -> BrokerState:
    """One of every kind of record."""
    queued = StoredMessage(
        "sensors/1", b"\x00\x01binary", 2, False, MESSAGE_PROPERTIES, SAVED_AT + 30, "pub-1", 41
    )
    plain = StoredMessage("sensors/2", b"", 1, False, {}, None, None)
    return BrokerState(
        SAVED_AT,
        [
            StoredMessage("status/a", b"online", 1, True, MESSAGE_PROPERTIES, None, "device-a", 40),
            StoredMessage("status/b", b"offline", 0, True, {}, SAVED_AT + 3600, None),
            StoredMessage("$SYS/custom", "ünïcode".encode(), 2, True, {}, None, "x"),
        ],
        [
            StoredSession(
                "durable-5",
                5,
                3600,
                SAVED_AT - 10,
                [
                    StoredSubscription("sensors/#", 2, True, True, 2, 17),
                    StoredSubscription("$share/workers/jobs/+", 1, False, False, 0, None),
                ],
                [
                    StoredFlight(7, StoredDelivery(queued, 2, False, (17,)), False),
                    StoredFlight(8, StoredDelivery(queued, 1, True, (17, 18)), False),
                    StoredFlight(9, StoredDelivery(plain, 2, False, ()), True),
                ],
                [StoredDelivery(queued, 2, False, (), 900), StoredDelivery(plain, 1, False, (3,))],
                [3, 12, 65535],
                StoredWill(
                    "wills/durable-5",
                    b"gone",
                    1,
                    True,
                    {PropertyId.WILL_DELAY_INTERVAL: 30, PropertyId.CORRELATION_DATA: b"\x01"},
                    SAVED_AT + 20,
                ),
                "cert:0a1b:77",
                None,
                {"cert.cn": "sensor-5", "cert.sn": "77", "cert.ca_sn": "0a1b"},
                connected=True,
            ),
            StoredSession(
                "durable-3",
                4,
                NEVER_EXPIRES,
                SAVED_AT,
                [],
                [],
                [StoredDelivery(queued, 1, False, ())],
                [],
                None,
                "access-key:LTAI5",
                "Signature|LTAI5|mqtt-1",
                {"access_key_id": "LTAI5"},
            ),
        ],
        journal_segment=12,
        next_message_id=42,
        next_delivery_id=901,
    )


def test_properties_survive_json_with_binary_and_string_pairs() -> None:
    text = properties_to_json(MESSAGE_PROPERTIES)
    assert "correlation" not in text  # binary data is base64, not mangled into a string
    assert properties_from_json(text) == MESSAGE_PROPERTIES
    assert properties_from_json(text)[PropertyId.USER_PROPERTY][0] == ("region", "eu")
    assert properties_from_json(properties_to_json({})) == {}


def test_every_kind_of_state_round_trips(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    store = SqliteStateStore(path)
    assert store.load() is None  # nothing saved yet
    state = a_state()
    store.save(state)
    store.close()

    reopened = SqliteStateStore(path)
    loaded = reopened.load()
    assert loaded == state
    assert loaded is not None and loaded.sessions[0].pending[0].delivery_id == 900
    assert path.stat().st_mode & 0o777 == 0o600
    # A message queued for several sessions (or several times) is stored and loaded once.
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM messages").fetchone() == (2,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert loaded is not None
    first, second = loaded.sessions
    assert first.inflight[0].delivery.message is first.pending[0].message is second.pending[0].message

    # A later save replaces the whole state.
    reopened.save(BrokerState(SAVED_AT + 60, state.retained[:1], []))
    assert reopened.load() == BrokerState(SAVED_AT + 60, state.retained[:1], [])
    reopened.close()


class _Client:
    """Stands in for a connection: what the core calls on the one carrying a session."""

    def __init__(self, protocol_version: int = 5) -> None:
        self.protocol_version = protocol_version
        self.delivered: list[Delivery] = []

    def deliver(self, delivery: Delivery, cache: Any = None) -> None:
        self.delivered.append(delivery)

    def take_over(self, clean_start: bool) -> None:
        raise AssertionError("no take-over expected")


def connect(
    core: BrokerCore, client_id: str, expiry: int, version: int = 5, identity: Identity = ANONYMOUS
) -> Session:
    session, _ = core.attach(
        _Client(version),  # type: ignore[arg-type]
        client_id,
        True,
        expiry,
        protocol_version=version,
        owner=session_owner(identity),
        username=f"user-{client_id}",
        identity=identity,
    )
    return session


def a_busy_core() -> BrokerCore:
    """A core in the middle of things: offline sessions with queues, messages in flight both ways,
    a delayed will, retained messages with and without expiry, one client still connected."""
    core = BrokerCore(MqttSection())
    offline = connect(core, "offline-5", 3600, identity=Identity(ca_sn="0a", device_sn="5", cn="five"))
    core.subscribe(offline, SubscriptionEntry("offline-5", "sensors/#", 2, no_local=True, subscription_id=4))
    core.subscribe(offline, SubscriptionEntry("offline-5", "$share/g/jobs/+", 1))
    offline.will = Will("wills/offline-5", b"bye", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 600})
    offline.inflight[1] = OutgoingFlight(Delivery(Message("sensors/x", b"sent", 2), 2, False, (4,)), 1)
    offline.inflight[2] = OutgoingFlight(
        Delivery(Message("sensors/y", b"released", 2), 2, False), 2, released=True
    )
    offline.incoming_qos2.update({5, 6})
    core.detach(offline, publish_will=True)

    legacy = connect(core, "legacy-3", NEVER_EXPIRES, version=4)
    core.subscribe(legacy, SubscriptionEntry("legacy-3", "sensors/+", 1))
    core.detach(legacy, publish_will=False)

    online = connect(core, "online", 120)
    core.subscribe(
        online, SubscriptionEntry("online", "jobs/#", 1, retain_as_published=True, retain_handling=1)
    )
    online.will = Will("wills/online", b"lost", 0, False, {})
    connect(core, "clean", 0)  # ends with its connection: not saved

    core.publish(
        Message("sensors/temp", b"21.5", 2, True, dict(MESSAGE_PROPERTIES), core.loop.time() + 300, "p")
    )
    core.publish(Message("status/old", b"stale", 1, True, {}, core.loop.time() - 1, "p"))
    core.publish(Message("jobs/1", b"work", 1, False, {}, None, "p"))
    return core


def comparable(core: BrokerCore) -> dict[str, Any]:
    sessions = {}
    for client_id, session in core.sessions.items():
        sessions[client_id] = (
            session.protocol_version,
            session.expiry_interval,
            session.owner,
            session.username,
            session.identity,
            session.subscriptions,
            {
                packet_id: (f.delivery.message.topic, f.delivery.qos, f.released)
                for packet_id, f in session.inflight.items()
            },
            [(d.message.topic, d.message.payload, d.qos, d.subscription_ids) for d in session.pending],
            session.incoming_qos2,
            session.will,
        )
    return {
        "retained": sorted((m.topic, m.payload, m.qos, m.properties) for m in core.retained),
        "sessions": sessions,
        "subscriptions": len(core.subscriptions),
    }


async def test_a_core_survives_a_save_and_a_restart(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    core = a_busy_core()
    store = SqliteStateStore(tmp_path / STATE_FILE_NAME)
    store.save(snapshot_to_state(take_snapshot(core, SAVED_AT, loop.time())))
    store.close()

    state = SqliteStateStore(tmp_path / STATE_FILE_NAME).load()
    assert state is not None
    assert {session.client_id for session in state.sessions} == {"offline-5", "legacy-3", "online"}
    assert [message.topic for message in state.retained] == ["sensors/temp"]  # the expired one is left out
    restored = BrokerCore(MqttSection())
    restore_snapshot(restored, state, SAVED_AT, loop.time())

    expected = comparable(core)
    del expected["sessions"]["clean"]
    expected["retained"] = [r for r in expected["retained"] if r[0] != "status/old"]
    assert comparable(restored) == expected
    assert all(session.connection is None for session in restored.sessions.values())
    # Routing works on the restored subscriptions: queued for the offline session.
    restored.publish(Message("sensors/new", b"after", 1))
    assert restored.sessions["offline-5"].pending[-1].message.payload == b"after"
    # The delayed will and the expiry run from where they were.
    offline = restored.sessions["offline-5"]
    assert offline.will_handle is not None and offline.expiry_handle is not None
    assert offline.will_handle.when() - loop.time() == pytest.approx(600, abs=1)
    assert offline.expiry_handle.when() - loop.time() == pytest.approx(3600, abs=1)
    assert restored.sessions["legacy-3"].expiry_handle is None  # never expires
    # A restored message's expiry is a loop deadline again.
    retained = next(iter(restored.retained))
    assert retained.expires_at is not None
    assert retained.expires_at - loop.time() == pytest.approx(300, abs=1)


async def test_expiry_keeps_counting_while_the_broker_is_down() -> None:
    loop = asyncio.get_running_loop()
    core = BrokerCore(MqttSection())
    watcher = connect(core, "watcher", 10_000)
    core.subscribe(watcher, SubscriptionEntry("watcher", "wills/#", 1))
    core.detach(watcher, publish_will=False)
    short = connect(core, "short", 100)
    short.will = Will("wills/short", b"expired while down", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 5000})
    core.detach(short, publish_will=True)
    long = connect(core, "long", 1000)
    long.will = Will(
        "wills/long", b"delay passed while down", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 100}
    )
    core.detach(long, publish_will=True)
    core.publish(Message("retained/soon", b"x", 1, True, {}, loop.time() + 150))
    core.publish(Message("retained/later", b"y", 1, True, {}, loop.time() + 400))

    # Saved 40 s after the clients went away, restored after 200 s of downtime.
    state = snapshot_to_state(take_snapshot(core, SAVED_AT, loop.time() + 40))
    restored = BrokerCore(MqttSection())
    restore_snapshot(restored, state, SAVED_AT + 200, loop.time())

    assert [message.topic for message in restored.retained] == ["retained/later"]
    later = next(iter(restored.retained))
    assert later.expires_at is not None
    assert later.expires_at - loop.time() == pytest.approx(400 - 40 - 200, abs=1)
    long_session = restored.sessions["long"]
    assert long_session.expiry_handle is not None
    assert long_session.expiry_handle.when() - loop.time() == pytest.approx(1000 - 240, abs=1)

    await asyncio.sleep(0.01)  # deadlines that passed while the broker was down fire at once
    assert "short" not in restored.sessions
    assert "long" in restored.sessions and long_session.will is None
    wills = sorted(delivery.message.payload for delivery in restored.sessions["watcher"].pending)
    assert wills == [b"delay passed while down", b"expired while down"]


async def test_a_connected_client_is_saved_as_gone_at_the_snapshot() -> None:
    loop = asyncio.get_running_loop()
    core = BrokerCore(MqttSection())
    online = connect(core, "online", 300)
    online.will = Will("wills/online", b"lost", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 60})
    (saved,) = snapshot_to_state(take_snapshot(core, SAVED_AT, loop.time())).sessions
    assert saved.connected and saved.disconnected_at == SAVED_AT
    assert saved.will is not None and saved.will.publish_at == SAVED_AT + 60
    # Restored after a crash 30 s later: gone as of the crash, its will due 60 s after that.
    restored = BrokerCore(MqttSection())
    recovery = Recovery(SAVED_AT + 40, loop.time())
    recovery.load_checkpoint(snapshot_to_state(take_snapshot(core, SAVED_AT, loop.time())))
    recovery.restore(restored, None, SAVED_AT + 30)
    back = restored.sessions["online"]
    assert back.connection is None and back.will is not None
    assert back.will_handle is not None and back.will_handle.when() - loop.time() == pytest.approx(50, abs=1)
    assert back.expiry_handle is not None and back.expiry_handle.when() - loop.time() == pytest.approx(
        290, abs=1
    )


def test_a_failed_save_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / STATE_FILE_NAME)
    first = a_state()
    store.save(first)
    broken_will = StoredWill("w", b"", 0, False, {PropertyId.CONTENT_TYPE: object()}, SAVED_AT)
    second = BrokerState(
        SAVED_AT + 60,
        [],  # the deletes and part of the inserts have run when the will fails to encode
        [StoredSession("other", 5, 60, SAVED_AT, [], [], [], [], broken_will, "anonymous", None, {})],
    )
    with pytest.raises(TypeError):
        store.save(second)
    assert store.load() == first
    store.close()
    assert SqliteStateStore(tmp_path / STATE_FILE_NAME).load() == first


def test_a_process_killed_while_saving_leaves_the_previous_snapshot(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    SqliteStateStore(path).save(a_state())
    # Another process starts a save and dies half-way through it, without any cleanup.
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from certmq.broker import checkpoint_store
        encode = checkpoint_store.properties_to_json
        calls = 0
        def dying(properties):
            global calls
            calls += 1
            if calls == 3:
                os._exit(9)
            return encode(properties)
        checkpoint_store.properties_to_json = dying
        from tests.unit.test_persistence import a_state
        state = a_state()
        checkpoint_store.SqliteStateStore(Path({str(path)!r})).save(state._replace(saved_at=0.0))
        """
    )
    root = Path(__file__).resolve().parents[2]
    finished = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, timeout=60)
    assert finished.returncode == 9, finished.stderr.decode()
    assert SqliteStateStore(path).load() == a_state()


def test_a_newer_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    SqliteStateStore(path).save(a_state())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StateFormatError, match=rf"format 99.*reads format {SCHEMA_VERSION}.*newer certmq"):
        SqliteStateStore(path).load()


async def test_a_format_1_file_is_converted_and_its_sessions_are_adopted(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    SqliteStateStore(path).save(a_state())
    with sqlite3.connect(path) as raw:  # as certmq wrote it before sessions had owners
        for table, column in FIRST_FORMAT_LACKED:
            raw.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        raw.execute("UPDATE schema_version SET version = 1")
    state = SqliteStateStore(path).load()
    assert state is not None
    assert [(s.client_id, s.owner, s.username, s.identity) for s in state.sessions] == [
        ("durable-5", "", None, {}),
        ("durable-3", "", None, {}),
    ]
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)

    # The first identity that resumes such a session becomes its owner; another one is refused.
    core = BrokerCore(MqttSection())
    restore_snapshot(core, state, SAVED_AT, asyncio.get_running_loop().time())
    assert core.may_resume("durable-5", "access-key:LTAI5")
    device = Identity(ca_sn="0a", device_sn="5")
    session = connect_again(core, "durable-5", device)
    assert session.owner == session_owner(device) == "cert:0a:5"
    core.detach(session, publish_will=False)
    assert not core.may_resume("durable-5", "access-key:LTAI5")
    assert core.may_resume("durable-5", "cert:0a:5")


def connect_again(core: BrokerCore, client_id: str, identity: Identity) -> Session:
    session, present = core.attach(
        _Client(),  # type: ignore[arg-type]
        client_id,
        False,
        3600,
        protocol_version=5,
        owner=session_owner(identity),
        identity=identity,
    )
    assert present
    return session


async def test_the_owner_and_the_identity_survive_a_restart(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    core = BrokerCore(MqttSection())
    device = Identity(ca_sn="0a", device_sn="5", cn="five")
    core.detach(connect(core, "five", 3600, identity=device), publish_will=False)
    store = SqliteStateStore(tmp_path / STATE_FILE_NAME)
    store.save(snapshot_to_state(take_snapshot(core, SAVED_AT, loop.time())))
    state = store.load()
    assert state is not None
    restored = BrokerCore(MqttSection())
    restore_snapshot(restored, state, SAVED_AT, loop.time())
    session = restored.sessions["five"]
    assert (session.owner, session.username, session.identity) == ("cert:0a:5", "user-five", device)
    assert not restored.may_resume("five", "cert:0a:6")
    assert not restored.may_resume("five", "anonymous")


# What the first format lacked: journal ids and positions, the owner, the client's identity,
# the connected flag.
FIRST_FORMAT_LACKED = [
    ("snapshot", "journal_segment"),
    ("snapshot", "next_message_id"),
    ("snapshot", "next_delivery_id"),
    ("retained", "message_id"),
    ("sessions", "owner"),
    ("sessions", "username"),
    ("sessions", "identity"),
    ("sessions", "connected"),
    ("queued", "delivery_id"),
]


def test_a_file_of_the_first_format_is_converted(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    state = a_state()
    SqliteStateStore(path).save(state)
    with sqlite3.connect(path) as raw:
        for table, column in FIRST_FORMAT_LACKED:
            raw.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        raw.execute("UPDATE schema_version SET version = 1")
    loaded = SqliteStateStore(path).load()
    assert loaded is not None
    assert (loaded.journal_segment, loaded.next_message_id, loaded.next_delivery_id) == (0, 1, 1)
    assert [session.owner for session in loaded.sessions] == ["", ""]
    assert [session.connected for session in loaded.sessions] == [False, False]
    assert [record.topic for record in loaded.retained] == [record.topic for record in state.retained]


def test_an_unknown_older_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    SqliteStateStore(path).save(a_state())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 0")
    with pytest.raises(StateFormatError, match="cannot convert"):
        SqliteStateStore(path).load()


def test_other_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE things (x)")
    with pytest.raises(StateFormatError, match="not a certmq broker state file"):
        SqliteStateStore(foreign).load()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StateStoreError, match="Move the file away"):
        SqliteStateStore(garbage).load()
    with pytest.raises(StateStoreError, match="data directory must exist"):
        SqliteStateStore(tmp_path / "missing" / STATE_FILE_NAME).load()


class _MemoryStore:
    def __init__(self, state: BrokerState | None = None, fail_load: bool = False) -> None:
        self.state = state
        self.fail_load = fail_load
        self.saves = 0
        self.closed = False

    def load(self) -> BrokerState | None:
        if self.fail_load:
            raise StateFormatError("unreadable")
        return self.state

    def save(self, state: BrokerState) -> None:
        self.saves += 1
        self.state = state

    def close(self) -> None:
        self.closed = True


async def test_the_keeper_checkpoints_when_the_journal_has_grown_and_at_close(tmp_path: Path) -> None:
    core = BrokerCore(MqttSection())
    store = _MemoryStore()
    keeper = StateKeeper(core, LocalStorage(store, tmp_path / "journal"), checkpoint_bytes=2000)
    await keeper.restore()
    core.publish(Message("kept", b"1", 1, True))
    await keeper.flush()
    assert store.saves == 0 and segment_numbers(tmp_path / "journal") == [1]
    for number in range(50):
        core.publish(Message(f"kept/{number}", b"x" * 100, 1, True))
    await keeper.flush()
    for _ in range(100):  # the checkpoint runs in the background: saved, then segment 1 deleted
        if store.saves and not segment_numbers(tmp_path / "journal"):
            break
        await asyncio.sleep(0.01)
    # The checkpoint covers segment 1 and deletes it; what came after goes to segment 2.
    assert store.saves == 1 and store.state is not None and store.state.journal_segment == 1
    assert len(store.state.retained) == 51
    assert not segment_numbers(tmp_path / "journal")
    core.publish(Message("kept/later", b"2", 1, True))
    await keeper.flush()
    assert segment_numbers(tmp_path / "journal") == [2]
    await keeper.close()
    assert store.closed and store.saves == 2
    assert (
        store.state.journal_segment == 2
        and len(store.state.retained) == 52
        and not segment_numbers(tmp_path / "journal")
    )


async def test_a_state_that_cannot_be_read_is_never_overwritten(tmp_path: Path) -> None:
    store = _MemoryStore(fail_load=True)
    keeper = StateKeeper(BrokerCore(MqttSection()), LocalStorage(store, tmp_path / "journal"))
    with pytest.raises(StateFormatError):
        await keeper.restore()
    await keeper.close()
    assert store.saves == 0 and store.closed


async def test_a_failing_checkpoint_keeps_the_journal(tmp_path: Path) -> None:
    class Flaky(_MemoryStore):
        def save(self, state: BrokerState) -> None:
            self.saves += 1
            if self.saves == 1:
                raise OSError("disk full")
            self.state = state

    store = Flaky()
    core = BrokerCore(MqttSection())
    keeper = StateKeeper(core, LocalStorage(store, tmp_path / "journal"))
    await keeper.restore()
    core.publish(Message("kept", b"1", 1, True))
    await keeper.flush()  # the message is in the journal's first segment
    with pytest.raises(OSError, match="disk full"):
        await keeper.checkpoint()
    assert segment_numbers(tmp_path / "journal") == [1]  # the records stay until a checkpoint holds them
    await keeper.close()
    assert (
        store.saves == 2 and store.state is not None and [m.topic for m in store.state.retained] == ["kept"]
    )
    assert not segment_numbers(tmp_path / "journal")


async def test_a_journal_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    keeper = StateKeeper(
        BrokerCore(MqttSection()), LocalStorage(_MemoryStore(), tmp_path / "a-file" / "journal")
    )
    with pytest.raises(JournalError, match="data directory must be writable"):
        await keeper.restore()


async def test_a_journal_that_grows_a_whole_step_during_a_checkpoint_gets_another(tmp_path: Path) -> None:
    class Slow(_MemoryStore):
        def save(self, state: BrokerState) -> None:
            time.sleep(0.2)  # in the checkpoint's worker thread: the broker goes on meanwhile
            super().save(state)

    core = BrokerCore(MqttSection())
    store = Slow()
    keeper = StateKeeper(core, LocalStorage(store, tmp_path / "journal"), checkpoint_bytes=2000)
    await keeper.restore()
    for round_ in range(2):  # a step's worth before the first checkpoint, another during it
        for number in range(30):
            core.publish(Message(f"kept/{round_}/{number}", b"x" * 100, 1, True))
        await keeper.flush()
        await asyncio.sleep(0.05)
    for _ in range(200):
        if store.saves >= 2 and not segment_numbers(tmp_path / "journal")[:-1]:
            break
        await asyncio.sleep(0.01)
    assert store.saves == 2 and store.state is not None and len(store.state.retained) == 60
    await keeper.close()


async def test_with_a_large_state_the_journal_grows_as_large_before_a_checkpoint(tmp_path: Path) -> None:
    core = BrokerCore(MqttSection())
    store = _MemoryStore()
    keeper = StateKeeper(core, LocalStorage(store, tmp_path / "journal"), checkpoint_bytes=2000)
    await keeper.restore()
    recorder = keeper.recorder
    assert recorder is not None
    for number in range(100):  # about 13 kB of retained messages: a checkpoint follows
        core.publish(Message(f"kept/{number}", b"x" * 100, 1, True))
    await keeper.flush()
    for _ in range(200):
        if recorder.checkpoint_bytes > 13_000:
            break
        await asyncio.sleep(0.01)
    assert store.saves == 1 and recorder.checkpoint_bytes > 13_000
    for number in range(30):  # a step's worth of journal, far less than the state
        core.publish(Message(f"changed/{number}", b"y" * 100, 1, True))
    await keeper.flush()
    await asyncio.sleep(0.1)
    assert store.saves == 1
    await keeper.close()
