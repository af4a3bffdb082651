"""What the core records in its journal rebuilds the same state after a crash, without a
checkpoint, however the sessions changed meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from certmq.broker.checkpoint_store import STATE_FILE_NAME, SqliteStateStore
from certmq.broker.core import BrokerCore
from certmq.broker.durable_storage import LocalStorage
from certmq.broker.messages import Message
from certmq.broker.recovery import Recovery
from certmq.broker.session import Session
from certmq.broker.state_keeper import StateKeeper, read_state
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.config import MqttSection
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId
from certmq.mqtt.session_flows import NEVER_EXPIRES, OutgoingFlight

from .test_persistence import MESSAGE_PROPERTIES, _Client, comparable


async def started(directory: Path) -> tuple[BrokerCore, StateKeeper]:
    """A core restored from ``directory``, recording into its journal."""
    core = BrokerCore(MqttSection())
    keeper = StateKeeper(
        core, LocalStorage(SqliteStateStore(directory / STATE_FILE_NAME), directory / "journal")
    )
    await keeper.restore()
    return core, keeper


def connect(
    core: BrokerCore,
    client_id: str,
    expiry: int,
    will: Will | None = None,
    clean: bool = True,
    version: int = 5,
) -> Session:
    session, _ = core.attach(_Client(version), client_id, clean, expiry, protocol_version=version)  # type: ignore[arg-type]
    core.set_will(session, will)
    return session


async def test_a_crash_loses_nothing_the_journal_recorded(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    core, keeper = await started(tmp_path)

    offline = connect(
        core,
        "offline-5",
        3600,
        Will("wills/offline-5", b"bye", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 600}),
    )
    core.subscribe(offline, SubscriptionEntry("offline-5", "sensors/#", 2, no_local=True, subscription_id=4))
    core.subscribe(offline, SubscriptionEntry("offline-5", "$share/g/jobs/+", 1))
    core.subscribe(offline, SubscriptionEntry("offline-5", "dropped/#", 1))
    core.unsubscribe(offline, "dropped/#")
    core.detach(offline, publish_will=True)  # the will waits for its delay

    legacy = connect(core, "legacy-3", NEVER_EXPIRES, version=4)
    core.subscribe(legacy, SubscriptionEntry("legacy-3", "sensors/+", 1))
    core.detach(legacy, publish_will=False)

    expired = connect(core, "expired", 60)
    core.subscribe(expired, SubscriptionEntry("expired", "sensors/#", 1))
    core.detach(expired, publish_will=False)
    core.end_session(expired)  # as its expiry timer would

    shortened = connect(core, "shortened", 100)
    core.detach(shortened, publish_will=False)
    connect(core, "shortened", 0, clean=False)  # resumed with expiry 0: ends with its connection

    online = connect(
        core, "online", 120, Will("wills/online", b"lost", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 30})
    )
    core.subscribe(
        online, SubscriptionEntry("online", "jobs/#", 1, retain_as_published=True, retain_handling=1)
    )
    connect(core, "clean", 0)  # ends with its connection: never recorded

    core.publish(Message("sensors/temp", b"21.5", 2, True, dict(MESSAGE_PROPERTIES), loop.time() + 300, "p"))
    core.publish(Message("status/x", b"on", 1, True))
    core.publish(Message("status/x", b"", 1, True))  # clears it
    core.publish(Message("sensors/humidity", b"40", 1, False, {}, None, "p"))
    core.publish(Message("jobs/1", b"work", 1, False, {}, None, "p"))
    await keeper.flush()
    before = comparable(core)

    # The process dies here: no checkpoint, no clean stop. A new one starts on the same files.
    restored, _ = await started(tmp_path)
    after = comparable(restored)

    for gone in ("clean", "shortened"):
        del before["sessions"][gone]
    # Connected at the crash: offline now, its will due 30 s after the crash.
    assert restored.sessions["online"].connection is None
    assert after == before
    assert sorted(after["sessions"]) == ["legacy-3", "offline-5", "online"]
    pending = [(d.message.topic, d.message.payload) for d in restored.sessions["offline-5"].pending]
    assert pending == [("sensors/temp", b"21.5"), ("sensors/humidity", b"40"), ("jobs/1", b"work")]
    assert [m.topic for m in restored.retained] == ["sensors/temp"]
    sensors = next(iter(restored.retained))
    assert sensors.properties == MESSAGE_PROPERTIES and sensors.expires_at is not None
    assert sensors.expires_at - loop.time() == pytest.approx(300, abs=2)
    # One message object however many sessions it is queued for.
    assert (
        restored.sessions["legacy-3"].pending[0].message is restored.sessions["offline-5"].pending[0].message
    )

    offline_back, online_back = restored.sessions["offline-5"], restored.sessions["online"]
    assert offline_back.will_handle is not None and offline_back.expiry_handle is not None
    assert offline_back.will_handle.when() - loop.time() == pytest.approx(600, abs=2)
    assert offline_back.expiry_handle.when() - loop.time() == pytest.approx(3600, abs=2)
    assert online_back.will_handle is not None and online_back.expiry_handle is not None
    assert online_back.will_handle.when() - loop.time() == pytest.approx(30, abs=2)
    assert online_back.expiry_handle.when() - loop.time() == pytest.approx(120, abs=2)
    assert restored.sessions["legacy-3"].expiry_handle is None

    # New records after the restart go on from there: a second crash keeps both runs' changes.
    restored.publish(Message("sensors/later", b"after the first crash", 1))
    assert restored.recorder is not None
    await restored.recorder.all_committed()
    again, _ = await started(tmp_path)
    assert [d.message.payload for d in again.sessions["legacy-3"].pending] == [
        b"21.5",
        b"40",
        b"after the first crash",
    ]


async def test_sessions_adopted_from_another_journal_are_recorded_whole_in_this_one(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    for directory in ("gone", "here"):
        (tmp_path / directory).mkdir()
    gone, gone_keeper = await started(tmp_path / "gone")
    device = connect(
        gone, "device", 3600, Will("wills/device", b"bye", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 600})
    )
    gone.subscribe(device, SubscriptionEntry("device", "sensors/#", 2, subscription_id=4))
    gone.detach(device, publish_will=True)
    legacy = connect(gone, "legacy-3", NEVER_EXPIRES, version=4)
    gone.subscribe(legacy, SubscriptionEntry("legacy-3", "sensors/+", 1))
    gone.detach(legacy, publish_will=False)
    gone.publish(Message("sensors/temp", b"21.5", 2, False, dict(MESSAGE_PROPERTIES), loop.time() + 300, "p"))
    gone.publish(Message("sensors/humidity", b"40", 1, False, {}, None, "p"))
    device.inflight[7] = OutgoingFlight(device.pending.popleft(), 7, released=True)
    assert device.recorder is not None
    device.recorder.flight_started(device, 7, device.inflight[7].delivery)
    device.recorder.flight_released(device, 7)
    device.incoming_qos2.add(9)
    device.recorder.incoming_qos2_added(device, 9)
    await gone_keeper.flush()
    expected = comparable(gone)["sessions"]

    # A running broker with sessions of its own, "legacy-3" among them, adopts those.
    core, keeper = await started(tmp_path / "here")
    own = connect(core, "legacy-3", 60)
    core.subscribe(own, SubscriptionEntry("legacy-3", "own/#", 1))
    core.detach(own, publish_will=False)
    core.publish(Message("own/1", b"mine", 1))
    recovery = Recovery(time.time(), loop.time())
    await asyncio.to_thread(
        read_state,
        LocalStorage(SqliteStateStore(tmp_path / "gone" / STATE_FILE_NAME), tmp_path / "gone" / "journal"),
        recovery,
    )
    taken = recovery.adopt(core, core.recorder, time.time(), time.time())
    assert [session.client_id for session in taken] == ["device"]
    assert comparable(core)["sessions"]["device"] == expected["device"]
    assert [d.message.payload for d in core.sessions["legacy-3"].pending] == [b"mine"]
    adopted = core.sessions["device"]
    assert adopted.will_handle is not None and adopted.will_handle.when() - loop.time() == pytest.approx(
        600, abs=2
    )
    # Routed here from now on, and recorded under this journal's ids.
    core.publish(Message("sensors/pressure", b"1013", 1))
    await keeper.flush()
    before = comparable(core)

    again, _ = await started(tmp_path / "here")
    assert comparable(again) == before
    assert [d.message.payload for d in again.sessions["device"].pending] == [b"40", b"1013"]
    assert again.sessions["device"].inflight[7].released
