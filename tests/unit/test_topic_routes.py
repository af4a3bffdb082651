"""The broker core's routes through the topic rules when the rules or an identity change while it
runs: the rules put in force again reach every session, connected or not; wills and routed
messages are judged when they go out. (The routes as clients see them are in
tests/interop/test_topic_routes.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

from certmq.auth.identity import Identity
from certmq.auth.ownership import session_owner
from certmq.auth.topics import TopicRule, TopicRules
from certmq.broker.core import BrokerCore
from certmq.broker.messages import Delivery, Message
from certmq.broker.session import Session
from certmq.broker.subscriptions import SubscriptionEntry
from certmq.config import MqttSection
from certmq.mqtt.packets import Will
from certmq.mqtt.properties import PropertyId


def rules(*entries: tuple[str, str, str], default_allow: bool = True) -> TopicRules:
    """(permission, action, topic) triples."""
    return TopicRules(
        [
            TopicRule(
                allow=permission == "allow",
                publish=action in ("publish", "all"),
                subscribe=action in ("subscribe", "all"),
                topic=topic,
            )
            for permission, action, topic in entries
        ],
        default_allow,
    )


class _Client:
    """Stands in for a connection: what the core calls on the one carrying a session."""

    protocol_version = 5

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []

    def deliver(self, delivery: Delivery, cache: Any = None) -> None:
        self.delivered.append(delivery)

    def take_over(self, clean_start: bool) -> None:
        raise AssertionError("no take-over expected")


def connect(core: BrokerCore, client_id: str, expiry: int = 3600) -> tuple[Session, _Client]:
    client = _Client()
    identity = Identity(cn=client_id)
    session, _ = core.attach(
        client,  # type: ignore[arg-type]
        client_id,
        True,
        expiry,
        protocol_version=5,
        owner=session_owner(identity),
        identity=identity,
        permissions=core.permissions_for(client_id, None, identity),
    )
    return session, client


def topics(client: _Client) -> list[str]:
    return [delivery.message.topic for delivery in client.delivered]


async def test_rules_put_in_force_again_reach_every_session_and_subscription() -> None:
    core = BrokerCore(MqttSection(), topic_rules=rules())
    online, online_client = connect(core, "online")
    offline, _ = connect(core, "offline")
    for session in (online, offline):
        core.subscribe(session, SubscriptionEntry(session.client_id, "plant/#", 1))
    core.detach(offline, publish_will=False)
    core.publish(Message("plant/secrets/key", b"before", 1))
    assert topics(online_client) == ["plant/secrets/key"]

    core.reload_topic_rules(rules(("deny", "all", "plant/secrets/#")))
    # The subscriptions stay; each message is now checked for them, and only for them.
    assert online.subscriptions["plant/#"].filtered and offline.subscriptions["plant/#"].filtered
    core.publish(Message("plant/secrets/key", b"after", 1))
    core.publish(Message("plant/line-1/speed", b"42", 1))
    assert topics(online_client) == ["plant/secrets/key", "plant/line-1/speed"]
    assert [delivery.message.payload for delivery in offline.pending] == [b"before", b"42"]

    core.reload_topic_rules(None)  # no rules at all: every subscription is whole again
    assert not online.subscriptions["plant/#"].filtered
    assert online.permissions is None


async def test_a_filtered_subscription_among_several_matching_ones() -> None:
    core = BrokerCore(MqttSection(), topic_rules=rules())
    session, client = connect(core, "reader")
    core.subscribe(session, SubscriptionEntry("reader", "plant/#", 1))
    core.subscribe(session, SubscriptionEntry("reader", "plant/+/key", 1))
    other, other_client = connect(core, "other")
    core.subscribe(other, SubscriptionEntry("other", "plant/+/key", 1))
    core.reload_topic_rules(rules(("deny", "subscribe", "plant/secrets/#"), ("allow", "all", "#")))
    core.publish(Message("plant/secrets/key", b"x", 1))
    core.publish(Message("plant/open/key", b"y", 1))
    assert topics(client) == ["plant/open/key"]
    assert topics(other_client) == ["plant/open/key"]


async def test_a_will_is_judged_by_the_rules_in_force_when_it_goes_out() -> None:
    core = BrokerCore(MqttSection(), topic_rules=rules())
    watcher, watcher_client = connect(core, "watcher")
    core.subscribe(watcher, SubscriptionEntry("watcher", "status/#", 1))
    for name in ("kept", "dropped"):
        device, _ = connect(core, name)
        device.will = Will(f"status/{name}", b"gone", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 1})
        core.detach(device, publish_will=True)
    core.reload_topic_rules(rules(("deny", "publish", "status/dropped")))
    await asyncio.sleep(1.2)
    assert topics(watcher_client) == ["status/kept"]
    assert core.stats.wills_dropped == 1


async def test_a_will_goes_out_only_while_the_identity_is_valid() -> None:
    core = BrokerCore(MqttSection())
    revoked: set[str] = set()
    core.identity_valid = lambda session: session.identity.cn not in revoked
    watcher, watcher_client = connect(core, "watcher")
    core.subscribe(watcher, SubscriptionEntry("watcher", "status/#", 1))
    for name in ("valid", "revoked"):
        device, _ = connect(core, name, expiry=0)
        device.will = Will(f"status/{name}", b"gone", 1, False, {})
        revoked.add("revoked")
        core.detach(device, publish_will=True)  # at once: no delay, the session ends with it
    assert topics(watcher_client) == ["status/valid"]
    assert core.stats.wills_dropped == 1


async def test_a_point_to_point_message_reaches_only_a_client_that_may_receive_it() -> None:
    core = BrokerCore(MqttSection(), topic_rules=rules(("deny", "subscribe", "secret/#")))
    _, client = connect(core, "GID_a@@@target")
    assert core.publish(Message("secret/p2p/GID_a@@@target", b"x", 1)) == 0
    assert core.publish(Message("open/p2p/GID_a@@@target", b"y", 1)) == 1
    assert topics(client) == ["open/p2p/GID_a@@@target"]


async def test_a_restored_session_gets_the_rules_of_the_new_start() -> None:
    core = BrokerCore(MqttSection(), topic_rules=rules(("deny", "subscribe", "plant/secrets/#")))
    session = Session("saved", 5, 3600, owner="cert:1:2", identity=Identity(cn="saved"))
    session.subscriptions["plant/#"] = SubscriptionEntry("saved", "plant/#", 1)
    core.restore_session(session, None, None)
    assert session.permissions is not None and session.subscriptions["plant/#"].filtered
    core.publish(Message("plant/secrets/key", b"x", 1))
    core.publish(Message("plant/line/speed", b"y", 1))
    assert [delivery.message.topic for delivery in session.pending] == ["plant/line/speed"]
