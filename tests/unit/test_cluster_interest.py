"""certmq.cluster.interest: the NATS subscriptions of a filter are made for its first local
subscription and ended with its last, whatever happens while they are being made."""

from __future__ import annotations

from typing import Any

from certmq.cluster.interest import Interest

NATS_SUBSCRIPTIONS: list[Any] = ["nats subscription of a/+"]


def test_the_first_local_subscription_makes_them_and_the_last_ends_them() -> None:
    interest: Interest[str] = Interest()
    assert interest.add("a/+") is True
    assert interest.add("a/+") is False
    assert interest.needs_subscribing("a/+") and interest.missing() == ["a/+"]
    assert interest.subscribed("a/+", NATS_SUBSCRIPTIONS)
    assert not interest.needs_subscribing("a/+") and interest.missing() == [] and len(interest) == 1
    assert interest.remove("a/+") == []  # one local subscription is left
    assert interest.remove("a/+") == NATS_SUBSCRIPTIONS
    assert len(interest) == 0 and not interest.needs_subscribing("a/+")


def test_subscriptions_made_after_the_last_local_one_went_are_handed_back_to_be_ended() -> None:
    interest: Interest[tuple[str, str]] = Interest()
    interest.add(("g", "a/#"))
    assert interest.remove(("g", "a/#")) == []  # nothing made yet
    assert not interest.subscribed(("g", "a/#"), NATS_SUBSCRIPTIONS)
    assert len(interest) == 0 and interest.missing() == []


def test_a_key_removed_more_often_than_added_changes_nothing() -> None:
    interest: Interest[str] = Interest()
    assert interest.remove("never") == []
    assert interest.add("never") is True
