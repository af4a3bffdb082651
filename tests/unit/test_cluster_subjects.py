"""MQTT topics and filters as NATS subjects: exact for every legal topic (docs/cluster.md).

The matching is compared with a model of NATS's subject matching written here; the same comparison
against a real nats-server is in test_cluster_subjects_nats.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certmq.cluster.subjects import (
    client_token,
    filter_subjects,
    level_token,
    queue_group,
    subject_topic,
    token_level,
    topic_subject,
)
from certmq.mqtt.topics import matches

PREFIX = "certmq.msg"

# What NATS and JetStream's key-value store accept in one token: non-empty, no whitespace, no '.',
# not a wildcard, and only the characters of a key-value key.
KEY_VALUE_TOKEN = re.compile(r"[-/_=a-zA-Z0-9]+")


def assert_valid_token(token: str) -> None:
    assert token, "an empty token"
    assert token not in ("*", ">"), f"{token!r} is a wildcard"
    assert "." not in token and not any(character.isspace() for character in token), token
    assert KEY_VALUE_TOKEN.fullmatch(token), f"{token!r} is not a key-value key token"


def tokens_under_prefix(subject: str) -> list[str]:
    assert subject.startswith(PREFIX + "."), subject
    return subject[len(PREFIX) + 1 :].split(".")


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS's rule: token by token, '*' is any one token, a last '>' is one or more tokens."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return index == len(pattern_tokens) - 1 and len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[index]:
            return False
    return len(pattern_tokens) == len(subject_tokens)


def starts_with_wildcard(topic_filter: str) -> bool:
    return topic_filter.split("/")[0] in ("+", "#")


# --- Examples ---------------------------------------------------------------------------------

TOPIC_SUBJECTS = [
    ("sensors/room.1/temp", "certmq.msg.sensors.room=2E1.temp"),
    ("a//b", "certmq.msg.a.=.b"),
    ("$SYS/x", "certmq.msg.=24SYS.x"),
    ("/", "certmq.msg.=.="),
    ("a/", "certmq.msg.a.="),
    ("plain_word-1/Two", "certmq.msg.plain_word-1.Two"),
    ("a b/c\td", "certmq.msg.a=20b.c=09d"),
    ("*/>/a*b", "certmq.msg.=2A.=3E.a=2Ab"),
    ("k=v/==", "certmq.msg.k=3Dv.=3D=3D"),
    ("=/=41", "certmq.msg.=3D.=3D41"),
    ("température/é", "certmq.msg.temp=C3=A9rature.=C3=A9"),
    ("设备/😀", "certmq.msg.=E8=AE=BE=E5=A4=87.=F0=9F=98=80"),
    ("...", "certmq.msg.=2E=2E=2E"),
    ("\u3000/\u00a0", "certmq.msg.=E3=80=80.=C2=A0"),
]


@pytest.mark.parametrize(("topic", "subject"), TOPIC_SUBJECTS)
def test_a_topic_has_one_subject_and_back(topic: str, subject: str) -> None:
    assert topic_subject(PREFIX, topic) == subject
    assert subject_topic(PREFIX, subject) == topic
    for token in tokens_under_prefix(subject):
        assert_valid_token(token)


FILTER_SUBJECTS = [
    ("#", ("certmq.msg.>",)),
    ("+", ("certmq.msg.*",)),
    ("a/#", ("certmq.msg.a", "certmq.msg.a.>")),
    ("+/#", ("certmq.msg.*", "certmq.msg.*.>")),
    ("a/+/c", ("certmq.msg.a.*.c",)),
    ("+/+", ("certmq.msg.*.*",)),
    ("/#", ("certmq.msg.=", "certmq.msg.=.>")),
    ("$SYS/#", ("certmq.msg.=24SYS", "certmq.msg.=24SYS.>")),
    ("room.1/+", ("certmq.msg.room=2E1.*",)),
    ("*/>", ("certmq.msg.=2A.=3E",)),
    ("k=v/+/==", ("certmq.msg.k=3Dv.*.=3D=3D",)),
    ("a//+", ("certmq.msg.a.=.*",)),
]


@pytest.mark.parametrize(("topic_filter", "subjects"), FILTER_SUBJECTS)
def test_a_filter_has_its_subjects(topic_filter: str, subjects: tuple[str, ...]) -> None:
    assert filter_subjects(PREFIX, topic_filter) == subjects


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("", "="),
        ("=", "=3D"),
        (".", "=2E"),
        ("*", "=2A"),
        (">", "=3E"),
        (" ", "=20"),
        ("/", "=2F"),
        ("é", "=C3=A9"),
        ("Az09_-", "Az09_-"),
    ],
)
def test_a_level_is_one_token(text: str, token: str) -> None:
    assert level_token(text) == token
    assert token_level(token) == text


@pytest.mark.parametrize(
    "token",
    [
        "",  # no token is empty
        "=41",  # 'A' is kept, never escaped
        "=2e",  # lower-case hex
        "=2",  # one hex digit
        "a=",  # an escape without its digits
        "==",
        "=C3",  # half of 'é'
        "=FF",  # not UTF-8
        "=ED=A0=80",  # a surrogate in UTF-8 form
        "a.b",
        "a b",
        "*",
        ">",
        "é",
    ],
)
def test_a_token_that_level_token_does_not_make_is_refused(token: str) -> None:
    with pytest.raises(ValueError):
        token_level(token)


@pytest.mark.parametrize(
    "subject",
    [
        "other.a.b",  # another prefix
        "certmq.msgs.a",
        "certmq.msg",
        "certmq.msg.",
        "certmq.msg.a..b",
        "certmq.msg.=",  # the empty topic
        "certmq.msg.a.*",
        "certmq.msg.>",
        "certmq.msg.=2B",  # '+' in a topic name
        "certmq.msg.a.=23",  # '#'
        "certmq.msg.=00",  # U+0000
        "certmq.msg.a=2Fb",  # '/' inside a level: the subject of no topic
        "certmq.msg.=41",
    ],
)
def test_a_subject_that_is_not_a_topics_is_refused(subject: str) -> None:
    with pytest.raises(ValueError):
        subject_topic(PREFIX, subject)


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "a#", "a+/b", "$share/g/a", "a/\x00"])
def test_an_ill_formed_or_shared_filter_is_refused(topic_filter: str) -> None:
    with pytest.raises(ValueError):
        filter_subjects(PREFIX, topic_filter)


def test_a_client_id_and_a_shared_group_are_one_token() -> None:
    assert client_token("GID_x@@@dev/1 é") == "GID_x=40=40=40dev=2F1=20=C3=A9"
    assert queue_group("g", "a/+") == "g=2Fa=2F=2B"
    # Two shared subscriptions of one group on two filters are two queue groups.
    assert queue_group("g", "a/+") != queue_group("g", "a/b")


# --- Every legal topic ------------------------------------------------------------------------

# Levels drawn from a few that collide often (so filters match), the characters NATS or the
# encoding treats specially, and any other text a topic level may hold.
SPECIAL_CHARACTERS = ". *>=$ \t\n\u00a0\u3000é设😀\x7f\U0010fffd_-aAz9"
LEVEL_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00+#/") | st.sampled_from(
    SPECIAL_CHARACTERS
)
FEW_LEVELS = ["", "a", "b", "$a", ".", "*", ">", "=", "=2E", "a b", "é"]
LEVELS = st.sampled_from(FEW_LEVELS) | st.text(LEVEL_CHARACTERS, max_size=6)
TOPICS = st.lists(LEVELS, min_size=1, max_size=5).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(LEVELS | st.just("+"), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    topic_filter = "/".join(levels)
    return topic_filter if topic_filter and not topic_filter.startswith("$share/") else "#"


FILTERS = topic_filters()


@st.composite
def filters_and_topics(draw: st.DrawFn, size: int = 10) -> tuple[list[str], list[str]]:
    """Up to ``size`` filters and twice as many topics: drawn at random, and one topic made from
    each filter (each wildcard filled with levels), so that many pairs match."""
    topic_filters = draw(st.lists(FILTERS, min_size=1, max_size=size, unique=True))
    topics = draw(st.lists(TOPICS, max_size=size))
    for topic_filter in topic_filters:
        levels = []
        for level in topic_filter.split("/"):
            if level == "+":
                levels.append(draw(LEVELS))
            elif level == "#":
                levels.extend(draw(st.lists(LEVELS, max_size=2)))
            else:
                levels.append(level)
        topic = "/".join(levels)
        if topic:
            topics.append(topic)
    return topic_filters, sorted(set(topics))


def model_pairs(topic_filters: list[str], topics: list[str]) -> set[tuple[str, str]]:
    """The (filter, topic) pairs that NATS, as modelled here, delivers."""
    pairs = set()
    for topic_filter in topic_filters:
        patterns = filter_subjects(PREFIX, topic_filter)
        for topic in topics:
            subject = topic_subject(PREFIX, topic)
            matching = [pattern for pattern in patterns if nats_matches(pattern, subject)]
            assert len(matching) <= 1, "a message reaches a subscription once"
            if matching:
                pairs.add((topic_filter, topic))
    return pairs


def mqtt_pairs(topic_filters: list[str], topics: list[str]) -> set[tuple[str, str]]:
    return {(f, t) for f in topic_filters for t in topics if matches(f, t)}


def dollar_exceptions(topic_filters: list[str], topics: list[str]) -> set[tuple[str, str]]:
    """The pairs that only MQTT's rule for '$' topics keeps apart, which NATS cannot say: the
    subjects match as if the topic began with any other character, and the receiving node's topic
    tree leaves the topic out."""
    return {
        (f, t)
        for f in topic_filters
        for t in topics
        if starts_with_wildcard(f) and t.startswith("$") and matches(f, "_" + t[1:])
    }


@given(TOPICS)
@settings(max_examples=1000)
def test_every_topic_comes_back_from_its_subject_whose_tokens_are_valid(topic: str) -> None:
    subject = topic_subject(PREFIX, topic)
    assert subject_topic(PREFIX, subject) == topic
    tokens = tokens_under_prefix(subject)
    assert len(tokens) == len(topic.split("/")), "one token per level"
    for token in tokens:
        assert_valid_token(token)
    # The fast path for plain topics and the escaping agree.
    assert tokens == [level_token(level) for level in topic.split("/")]


@given(st.lists(TOPICS, unique=True))
@settings(max_examples=300)
def test_two_topics_have_two_subjects(topics: list[str]) -> None:
    assert len({topic_subject(PREFIX, topic) for topic in topics}) == len(topics)


@given(st.text(LEVEL_CHARACTERS), st.text(LEVEL_CHARACTERS | st.just("/")))
def test_client_tokens_and_queue_groups_are_valid_and_distinct(text: str, other: str) -> None:
    assert_valid_token(client_token(text))
    assert token_level(client_token(other)) == other
    assert (client_token(text) == client_token(other)) == (text == other)
    group = text or "g"
    assert_valid_token(queue_group(group, other or "#"))
    assert queue_group(group, "a") != queue_group(group, "b")


@given(FILTERS)
def test_every_filter_token_is_valid_or_a_wildcard(topic_filter: str) -> None:
    for subject in filter_subjects(PREFIX, topic_filter):
        tokens = tokens_under_prefix(subject)
        assert ">" not in tokens[:-1]
        for token in tokens:
            if token not in ("*", ">"):
                assert_valid_token(token)


@given(filters_and_topics())
@settings(max_examples=300)
def test_a_filters_subjects_match_exactly_the_topics_it_matches(batch: tuple[list[str], list[str]]) -> None:
    topic_filters, topics = batch
    expected = mqtt_pairs(topic_filters, topics)
    exceptions = dollar_exceptions(topic_filters, topics)
    assert not expected & exceptions
    assert model_pairs(topic_filters, topics) == expected | exceptions


def test_the_model_of_nats_matching_is_nats() -> None:
    assert nats_matches("a.*.c", "a.b.c")
    assert not nats_matches("a.*", "a")
    assert not nats_matches("a.*", "a.b.c")
    assert nats_matches("a.>", "a.b.c")
    assert not nats_matches("a.>", "a")
    assert nats_matches(">", "a")
    assert not nats_matches("a.b", "a.b.c")
