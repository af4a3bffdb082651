"""How long a checkpoint of the broker state and restoring it take, and how long the event loop is held.

Run with ``PYTHONPATH=src python bench/state_save.py [--retained N] [--sessions N]``. Builds a core
with N retained messages and N offline persistent sessions (5 subscriptions, 10 queued and 2
in-flight QoS 1 messages each, the queued ones shared as they are when one publish reaches many
sessions), then times each step in the broker's own way: the snapshot on the loop, the records
and the SQLite write in a thread, the load and the restore (best of several repeats), and how late
a 1 ms timer fires while a save runs (worst seen), which is what connected clients would notice.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from certmq.broker.checkpoint_store import STATE_FILE_NAME, SqliteStateStore
from certmq.broker.core import BrokerCore
from certmq.broker.durable_storage import LocalStorage
from certmq.broker.messages import Message
from certmq.broker.recovery import Recovery
from certmq.broker.session import Delivery, OutgoingFlight, Session, SubscriptionEntry
from certmq.broker.sessions import LocalSessions
from certmq.broker.state_keeper import StateKeeper, snapshot_to_state, take_snapshot
from certmq.config import MqttSection
from certmq.mqtt.properties import PropertyId


def build_core(retained: int, sessions: int) -> BrokerCore:
    core = BrokerCore(MqttSection())
    now = core.loop.time()
    for index in range(retained):
        properties = {PropertyId.CONTENT_TYPE: "application/json"} if index % 4 == 0 else {}
        expires_at = now + 3600 if index % 10 == 0 else None
        topic = f"site/{index % 50}/device/{index}/status"
        core.retained.set(Message(topic, b"x" * 100, 1, True, properties, expires_at, f"device-{index}"))
    shared = [
        Message(f"alerts/{n}", b"y" * 200, 1, False, {PropertyId.USER_PROPERTY: [("k", "v")]})
        for n in range(10)
    ]
    for index in range(sessions):
        client_id = f"client-{index}"
        session = Session(client_id, 5, 86400)
        for n in range(5):
            entry = SubscriptionEntry(client_id, f"site/{n}/device/+/status", 1, subscription_id=n + 1)
            session.subscriptions[entry.topic_filter] = entry
        session.pending.extend(Delivery(message, 1, False) for message in shared)
        for packet_id in (1, 2):
            session.inflight[packet_id] = OutgoingFlight(
                Delivery(Message("direct", b"z" * 50, 1), 1, False), packet_id
            )
        core.restore_session(session, 86400, None)
    return core


async def measure(retained: int, sessions: int, repeat: int) -> None:
    loop = asyncio.get_running_loop()
    core = build_core(retained, sessions)
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStateStore(Path(directory) / STATE_FILE_NAME)
        snapshot_times, convert_times, save_times, load_times, restore_times = [], [], [], [], []
        for _ in range(repeat):
            started = time.perf_counter()
            snapshot = take_snapshot(core, time.time(), loop.time())
            snapshot_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            state = await asyncio.to_thread(snapshot_to_state, snapshot)
            convert_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.to_thread(store.save, state)
            save_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            loaded = await asyncio.to_thread(store.load)
            load_times.append(time.perf_counter() - started)
            assert loaded is not None
            restored = BrokerCore(MqttSection())
            started = time.perf_counter()
            recovery = Recovery(time.time(), loop.time())
            recovery.load_checkpoint(loaded)
            recovery.restore(restored, None, loaded.saved_at)
            restore_times.append(time.perf_counter() - started)
            # Their timers would fire long after this run: cancelled, as a stop would.
            assert isinstance(restored.ownership, LocalSessions)
            for session in restored.sessions.values():
                restored.ownership.expiry.cancel(session)
                restored.wills.cancel(session)
        lag = await loop_delay_during_saves(core, store, Path(directory) / "journal", repeat)
        size = (Path(directory) / STATE_FILE_NAME).stat().st_size
        store.close()
    print(f"{retained} retained messages, {sessions} sessions; file {size / 1e6:.1f} MB")
    for name, times in (
        ("snapshot on the event loop", snapshot_times),
        ("records from it (worker thread)", convert_times),
        ("write to SQLite (worker thread)", save_times),
        ("load from SQLite (worker thread)", load_times),
        ("restore into the core (at start)", restore_times),
    ):
        print(f"  {name:34} {min(times) * 1000:8.1f} ms")
    print(
        f"  {'longest loop stall during a save':34} {lag * 1000:8.1f} ms (a timer of 1 ms, worst of {repeat} saves)"
    )


async def loop_delay_during_saves(
    core: BrokerCore, store: SqliteStateStore, journal: Path, repeat: int
) -> float:
    """The longest a 1 ms timer fired late while StateKeeper checkpoints: what clients would feel."""
    keeper = StateKeeper(core, LocalStorage(store, journal))
    await keeper.restore()
    loop = asyncio.get_running_loop()
    worst = 0.0
    for _ in range(repeat):
        saving = loop.create_task(keeper.checkpoint())
        while not saving.done():
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)
        await saving
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retained", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure(args.retained, args.sessions, args.repeat))


if __name__ == "__main__":
    main()
