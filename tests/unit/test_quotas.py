"""The topic limits: length in UTF-8 bytes and levels, and the length below which a topic
needs no look."""

from __future__ import annotations

import pytest

from certmq.broker.quotas import longest_unchecked_topic, topic_within_limits
from certmq.config import MqttSection

SETTINGS = MqttSection(max_topic_length=40, max_topic_levels=4)


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("a/b/c/d", True),
        ("a/b/c/d/e", False),
        ("a/b/c/", True),
        ("///", True),
        ("////", False),
        ("$share/g/a/b", True),
        ("$share/g/a/b/c", False),
        ("x" * 40, True),
        ("x" * 41, False),
        ("é" * 20, True),  # 40 bytes in UTF-8
        ("é" * 21, False),
        ("+/+/#", True),
    ],
)
def test_topics_within_length_and_levels(topic: str, allowed: bool) -> None:
    assert topic_within_limits(topic, SETTINGS) is allowed


@pytest.mark.parametrize(
    ("length", "levels", "unchecked"),
    [(40, 4, 3), (40, 128, 10), (1024, 128, 127), (1024, 1, 0)],
)
def test_short_topics_need_no_look(length: int, levels: int, unchecked: int) -> None:
    settings = MqttSection(max_topic_length=length, max_topic_levels=levels)
    assert longest_unchecked_topic(settings) == unchecked
    # The longest topic that goes unchecked is within both limits however it is made.
    for worst in ("/" * unchecked, "\U0001f600" * unchecked):
        assert topic_within_limits(worst, settings)
