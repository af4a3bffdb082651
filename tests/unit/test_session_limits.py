"""The limits on sessions: the core counts its sessions in all and per owner wherever they come
and go (a CONNECT, a resumption, a clean start, an expiry, a restart), and refuses a new one
beyond a limit; resuming a session of one's own never counts as new."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from certmq.auth.ownership import ANONYMOUS_OWNER, UNKNOWN_OWNER, SessionOwnerPolicy
from certmq.broker.core import BrokerCore
from certmq.broker.messages import Delivery
from certmq.broker.recovery import restore_snapshot
from certmq.broker.session import Session
from certmq.broker.session_limits import (
    BROKER_SESSION_LIMIT,
    IDENTITY_SESSION_LIMIT,
    SessionCounts,
    SessionRefusal,
    identity_session_limit,
)
from certmq.broker.state_keeper import snapshot_to_state, take_snapshot
from certmq.config import MqttSection

DEVICE = "cert:77:0a1b"
OTHER_DEVICE = "cert:77:0a1c"
ACCESS_KEY = "access-key:LTAI5"
PERSISTENT = 3600


class _Connection:
    """Stands in for a connection: what the core calls on the one carrying a session."""

    def __init__(self, core: BrokerCore) -> None:
        self.core = core
        self.protocol_version = 5
        self.session: Session | None = None

    def deliver(self, delivery: Delivery, cache: Any = None) -> None:
        pass

    def take_over(self, clean_start: bool) -> None:
        assert self.session is not None
        self.core.detach(self.session, publish_will=False)


def connect(
    core: BrokerCore, client_id: str, owner: str, *, clean_start: bool = False, expiry: int = PERSISTENT
) -> Session | SessionRefusal:
    """A CONNECT as the connection makes it: the limits asked first, then the session attached."""
    refusal = core.session_refusal(client_id, owner, clean_start)
    if refusal is not None:
        return refusal
    connection = _Connection(core)
    session, _ = core.attach(connection, client_id, clean_start, expiry, protocol_version=5, owner=owner)  # type: ignore[arg-type]
    connection.session = session
    return session


def leave(core: BrokerCore, session: Session | SessionRefusal) -> None:
    assert isinstance(session, Session)
    core.detach(session, publish_will=False)


def assert_counts_match(core: BrokerCore) -> None:
    """The counts are those of the sessions the core holds."""
    owners = Counter(session.owner for session in core.sessions.values())
    assert core.session_counts.total == len(core.sessions) == core.holdings()["sessions"]
    assert {owner: core.session_counts.of(owner) for owner in owners} == dict(owners)


def limited(**limits: int) -> BrokerCore:
    return BrokerCore(MqttSection(**limits))


def refusal_reason(outcome: Session | SessionRefusal) -> str:
    assert isinstance(outcome, SessionRefusal), f"{outcome} was accepted"
    return outcome.reason


async def test_an_identity_gets_no_more_sessions_than_its_limit_and_others_are_not_affected() -> None:
    core = limited(max_sessions_per_certificate=3)
    for n in range(3):
        leave(core, connect(core, f"meter-{n}", DEVICE))
    outcome = connect(core, "meter-3", DEVICE)
    assert refusal_reason(outcome) == IDENTITY_SESSION_LIMIT
    assert isinstance(outcome, SessionRefusal)
    assert "mqtt.max_sessions_per_certificate" in outcome.detail
    assert "meter-3" not in core.sessions
    # Online sessions count too: a clean one, while it lasts.
    assert (
        refusal_reason(connect(core, "meter-clean", DEVICE, clean_start=True, expiry=0))
        == IDENTITY_SESSION_LIMIT
    )
    assert isinstance(connect(core, "other-0", OTHER_DEVICE), Session)
    assert (core.session_counts.of(DEVICE), core.session_counts.of(OTHER_DEVICE)) == (3, 1)
    assert_counts_match(core)


async def test_resuming_or_starting_afresh_a_session_of_ones_own_never_counts_as_new() -> None:
    core = limited(max_sessions_per_certificate=2, max_sessions=2)
    first = connect(core, "meter-0", DEVICE)
    leave(core, connect(core, "meter-1", DEVICE))
    # At both limits: the owner comes back to either session, offline or still connected.
    assert isinstance(connect(core, "meter-1", DEVICE), Session)
    assert isinstance(connect(core, "meter-0", DEVICE), Session)  # takes over the live connection
    assert first is core.sessions["meter-0"]
    replaced = connect(core, "meter-0", DEVICE, clean_start=True)
    assert isinstance(replaced, Session) and replaced is not first
    assert core.session_counts.of(DEVICE) == 2
    assert refusal_reason(connect(core, "meter-2", DEVICE)) == IDENTITY_SESSION_LIMIT
    assert_counts_match(core)


async def test_a_session_that_ends_frees_its_place() -> None:
    core = limited(max_sessions_per_certificate=2)
    clean = connect(core, "clean", DEVICE, clean_start=True, expiry=0)
    persistent = connect(core, "persistent", DEVICE)
    assert refusal_reason(connect(core, "third", DEVICE)) == IDENTITY_SESSION_LIMIT

    leave(core, clean)  # a clean session ends with its connection
    assert isinstance(connect(core, "third", DEVICE, expiry=1), Session)
    assert refusal_reason(connect(core, "fourth", DEVICE)) == IDENTITY_SESSION_LIMIT
    leave(core, core.sessions["third"])
    await asyncio.sleep(1.2)  # its expiry
    assert "third" not in core.sessions
    assert_counts_match(core)
    assert isinstance(connect(core, "fourth", DEVICE), Session)

    assert isinstance(persistent, Session)
    core.end_session(persistent)  # as a 5.0 clean start or an operator would end it
    assert core.session_counts.of(DEVICE) == 1
    assert isinstance(connect(core, "fifth", DEVICE), Session)
    assert_counts_match(core)


async def test_the_broker_holds_no_more_than_max_sessions_whoever_asks() -> None:
    core = limited(max_sessions=4, max_anonymous_sessions=0, max_sessions_per_access_key=0)
    for n, owner in enumerate((DEVICE, ACCESS_KEY, ANONYMOUS_OWNER, ANONYMOUS_OWNER)):
        leave(core, connect(core, f"client-{n}", owner))
    for owner in (OTHER_DEVICE, ACCESS_KEY, ANONYMOUS_OWNER):
        outcome = connect(core, "one-more", owner)
        assert refusal_reason(outcome) == BROKER_SESSION_LIMIT
        assert isinstance(outcome, SessionRefusal) and "mqtt.max_sessions" in outcome.detail
    # Resuming is not refused, and an ending session makes room for anyone.
    assert isinstance(connect(core, "client-2", ANONYMOUS_OWNER), Session)
    core.end_session(core.sessions["client-1"])
    assert isinstance(connect(core, "one-more", OTHER_DEVICE), Session)
    assert_counts_match(core)


@pytest.mark.parametrize(
    ("owner", "setting"),
    [
        (DEVICE, "max_sessions_per_certificate"),
        (ACCESS_KEY, "max_sessions_per_access_key"),
        (ANONYMOUS_OWNER, "max_anonymous_sessions"),
    ],
)
async def test_each_kind_of_identity_has_its_own_limit(owner: str, setting: str) -> None:
    core = limited(**{setting: 2})
    assert identity_session_limit(owner, core.settings) == (2, setting)
    leave(core, connect(core, "a", owner))
    leave(core, connect(core, "b", owner))
    assert refusal_reason(connect(core, "c", owner)) == IDENTITY_SESSION_LIMIT
    # The other kinds are not bound by it.
    for other in {DEVICE, ACCESS_KEY, ANONYMOUS_OWNER} - {owner}:
        assert isinstance(connect(core, f"c-{other}", other), Session)


def test_the_defaults_and_zero_meaning_no_limit_of_its_own() -> None:
    defaults = MqttSection()
    assert identity_session_limit(DEVICE, defaults) == (10, "max_sessions_per_certificate")
    assert identity_session_limit(ACCESS_KEY, defaults) == (0, "max_sessions_per_access_key")
    assert identity_session_limit(ANONYMOUS_OWNER, defaults) == (1000, "max_anonymous_sessions")
    assert identity_session_limit(UNKNOWN_OWNER, defaults) == (0, "")
    counts = SessionCounts(MqttSection(max_sessions=3, max_sessions_per_access_key=0))
    for _ in range(3):
        assert counts.refusal(ACCESS_KEY, creates_session=True) is None
        counts.added(ACCESS_KEY)
    refusal = counts.refusal(ACCESS_KEY, creates_session=True)
    assert refusal is not None and refusal.reason == BROKER_SESSION_LIMIT
    # Taking a session the broker holds already needs no room in the broker.
    assert counts.refusal(ACCESS_KEY, creates_session=False) is None


async def test_restored_sessions_count_as_they_did_before_the_restart() -> None:
    loop = asyncio.get_running_loop()
    core = limited(max_sessions_per_certificate=2)
    for client_id, owner in (("a", DEVICE), ("b", DEVICE), ("c", OTHER_DEVICE), ("d", ACCESS_KEY)):
        leave(core, connect(core, client_id, owner))
    connect(core, "online-clean", ANONYMOUS_OWNER, expiry=0)  # ends with the broker: not saved
    state = snapshot_to_state(take_snapshot(core, 1_800_000_000.0, loop.time()))

    restored = limited(max_sessions_per_certificate=2)
    restore_snapshot(restored, state, 1_800_000_000.0, loop.time())
    assert (restored.session_counts.total, restored.session_counts.of(DEVICE)) == (4, 2)
    assert_counts_match(restored)
    assert refusal_reason(connect(restored, "e", DEVICE)) == IDENTITY_SESSION_LIMIT
    assert isinstance(connect(restored, "a", DEVICE), Session)
    assert isinstance(connect(restored, "e", OTHER_DEVICE), Session)
    assert_counts_match(restored)


async def test_a_session_saved_without_an_owner_counts_for_the_identity_that_adopts_it() -> None:
    core = limited(max_sessions_per_certificate=1)
    for client_id in ("legacy-1", "legacy-2"):
        session = Session(client_id, 4, expiry_interval=PERSISTENT, owner=UNKNOWN_OWNER)
        core.restore_session(session, PERSISTENT, None)
    assert core.session_counts.of(UNKNOWN_OWNER) == 2
    assert isinstance(connect(core, "legacy-1", DEVICE), Session)
    assert (core.session_counts.of(UNKNOWN_OWNER), core.session_counts.of(DEVICE)) == (1, 1)
    # Adopting a second one would give the device two sessions.
    assert refusal_reason(connect(core, "legacy-2", DEVICE)) == IDENTITY_SESSION_LIMIT
    assert refusal_reason(connect(core, "legacy-2", DEVICE, clean_start=True)) == IDENTITY_SESSION_LIMIT
    assert core.sessions["legacy-2"].owner == UNKNOWN_OWNER
    assert_counts_match(core)


async def test_with_session_owner_any_taking_anothers_session_counts_only_when_it_becomes_ones_own() -> None:
    core = limited(max_sessions_per_certificate=1)
    core.session_owner = SessionOwnerPolicy.ANY
    leave(core, connect(core, "shared", DEVICE))
    leave(core, connect(core, "mine", OTHER_DEVICE))
    # Resumed, it stays the device's: nothing changes hands.
    leave(core, connect(core, "shared", OTHER_DEVICE))
    assert core.sessions["shared"].owner == DEVICE
    # A clean start would make a new session of the other device's: beyond its limit.
    assert refusal_reason(connect(core, "shared", OTHER_DEVICE, clean_start=True)) == IDENTITY_SESSION_LIMIT
    core.end_session(core.sessions["mine"])
    assert isinstance(connect(core, "shared", OTHER_DEVICE, clean_start=True), Session)
    assert core.sessions["shared"].owner == OTHER_DEVICE
    assert (core.session_counts.of(DEVICE), core.session_counts.of(OTHER_DEVICE)) == (0, 1)
    assert_counts_match(core)


async def test_the_counts_stay_exact_through_any_sequence_of_connects_and_ends() -> None:
    """Thousands of random CONNECTs (clean or not, persistent or not, of a few identities and
    client ids, taking over each other's sessions), disconnects and ends: the counts are always
    the sessions' own, and within the limits."""
    core = limited(max_sessions=12, max_sessions_per_certificate=3, max_anonymous_sessions=5)
    core.session_owner = SessionOwnerPolicy.ANY
    for n in range(3):  # saved by a certmq that did not record owners: adopted along the way
        core.restore_session(Session(f"client-{n}", 4, PERSISTENT, owner=UNKNOWN_OWNER), PERSISTENT, None)
    pick = random.Random(12)
    owners = [DEVICE, OTHER_DEVICE, ACCESS_KEY, ANONYMOUS_OWNER]
    for _ in range(5000):
        client_id = f"client-{pick.randrange(20)}"
        action = pick.random()
        session = core.sessions.get(client_id)
        if action < 0.6:
            outcome = connect(
                core,
                client_id,
                pick.choice(owners),
                clean_start=pick.random() < 0.3,
                expiry=pick.choice([0, PERSISTENT]),
            )
            if isinstance(outcome, SessionRefusal):
                assert outcome.reason in (IDENTITY_SESSION_LIMIT, BROKER_SESSION_LIMIT)
        elif session is not None and action < 0.85:
            core.detach(session, publish_will=False)
        elif session is not None:
            core.end_session(session)
        assert_counts_match(core)
        assert core.session_counts.total <= 12
        assert core.session_counts.of(DEVICE) <= 3 and core.session_counts.of(ANONYMOUS_OWNER) <= 5
