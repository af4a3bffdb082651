"""Topic names, topic filters, shared subscriptions and the subscription tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certmq.mqtt.errors import MalformedPacket
from certmq.mqtt.topics import (
    MATCH_CACHE,
    TopicTree,
    matches,
    parse_shared_subscription,
    validate_topic_filter,
    validate_topic_name,
)

MATCHING_TABLE = [
    # (filter, topic, expected)
    ("a/b/c", "a/b/c", True),
    ("a/b/c", "a/b", False),
    ("a/b", "a/b/c", False),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/d", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a", False),
    ("a/+", "a/", True),  # '+' matches an empty level
    ("+/+", "/x", True),
    ("+", "/x", False),
    ("/+", "/x", True),
    ("a/#", "a", True),  # '#' includes the parent level
    ("a/#", "a/b", True),
    ("a/#", "a/b/c/d", True),
    ("a/#", "ab", False),
    ("a/b/#", "a", False),
    ("#", "a", True),
    ("#", "a/b/c", True),
    ("#", "/", True),
    ("+/#", "a", True),
    ("+/#", "a/b", True),
    ("+/b/#", "a/b", True),
    ("#", "$SYS/broker/uptime", False),  # first-level wildcards skip '$' topics
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("+/#", "$SYS", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("a/$b/#", "a/$b/c", True),
    ("+/$b", "a/$b", True),
    ("A/b", "a/b", False),  # case sensitive
    ("a b/c", "a b/c", True),
    ("/", "/", True),
    ("//", "//", True),
    ("a//b", "a/b", False),
    ("a/+/b", "a//b", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHING_TABLE)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHING_TABLE)
def test_tree_agrees_with_matching_table(topic_filter: str, topic: str, expected: bool) -> None:
    tree: TopicTree[int] = TopicTree()
    tree.subscribe(topic_filter, "client", 1)
    assert (tree.match(topic) == [{"client": 1}]) is expected


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "a//b", "$SYS/x", " ", "é/ü", "a/b/c/d/e/f/g"])
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize("topic", ["", "a/+", "#", "a/#", "a+b", "a/b#", "a\x00b"])
def test_invalid_topic_names(topic: str) -> None:
    with pytest.raises(MalformedPacket):
        validate_topic_name(topic)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "a",
        "#",
        "+",
        "a/#",
        "+/+",
        "a/+/b",
        "/",
        "//",
        "/#",
        "+/#",
        "$SYS/#",
        "$share/g/a",
        "$share/g/#",
        "$share/g/+/b",
    ],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a#",
        "a/#/b",
        "#/a",
        "a/b#",
        "##",
        "a+",
        "a/+b",
        "+a/b",
        "++",
        "a\x00",
        "$share/",
        "$share//a",
        "$share/g",
        "$share/g/",
        "$share/g+/a",
        "$share/g#/a",
        "$share/+/a",
        "$share/g/a#",
        "$share/g/#/a",
    ],
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(MalformedPacket):
        validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("a/b", (None, "a/b")),
        ("$share/group/a/b", ("group", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/g//", ("g", "/")),
        ("$shared/g/a", (None, "$shared/g/a")),
        ("$share", (None, "$share")),
        ("$SHARE/g/a", (None, "$SHARE/g/a")),
    ],
)
def test_parse_shared_subscription(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared_subscription(topic_filter) == expected


def test_tree_subscribe_replace_and_count() -> None:
    tree: TopicTree[int] = TopicTree()
    assert tree.subscribe("a/b", "c1", 0) is True
    assert tree.subscribe("a/b", "c2", 1) is True
    assert tree.subscribe("a/b", "c1", 2) is False
    assert tree.subscribe("a/#", "c1", 1) is True
    assert len(tree) == 3
    assert tree.match("a/b") == [{"c1": 1}, {"c1": 2, "c2": 1}]


def test_tree_unsubscribe_prunes_empty_branches() -> None:
    tree: TopicTree[str] = TopicTree()
    tree.subscribe("a/b/c", "c1", "x")
    tree.subscribe("a", "c2", "y")
    assert tree.unsubscribe("a/b/c", "c9") is None
    assert tree.unsubscribe("a/b", "c1") is None
    assert tree.unsubscribe("a/b/c/d", "c1") is None
    assert tree.unsubscribe("a/b/c", "c1") == "x"
    assert tree.unsubscribe("a/b/c", "c1") is None
    assert len(tree) == 1
    assert tree.match("a/b/c") == []
    root = tree._root
    assert list(root.children) == ["a"]
    assert root.children["a"].children == {}
    assert tree.unsubscribe("a", "c2") == "y"
    assert root.children == {}
    assert len(tree) == 0


def test_tree_keeps_nodes_still_in_use() -> None:
    tree: TopicTree[int] = TopicTree()
    tree.subscribe("a/b", "c1", 1)
    tree.subscribe("a/b/c", "c1", 2)
    tree.unsubscribe("a/b", "c1")
    assert tree.match("a/b/c") == [{"c1": 2}]
    tree.unsubscribe("a/b/c", "c1")
    assert tree._root.children == {}


def test_tree_match_returns_the_live_dicts() -> None:
    tree: TopicTree[int] = TopicTree()
    tree.subscribe("a/+", "c1", 1)
    (subscribers,) = tree.match("a/b")
    tree.subscribe("a/+", "c2", 2)
    assert subscribers == {"c1": 1, "c2": 2}


def test_tree_dollar_topics() -> None:
    tree: TopicTree[int] = TopicTree()
    for index, topic_filter in enumerate(["#", "+/#", "+/broker", "$SYS/#", "$SYS/+", "$SYS/broker"]):
        tree.subscribe(topic_filter, index, index)
    found = sorted(str(key) for subscribers in tree.match("$SYS/broker") for key in subscribers)
    assert found == ["3", "4", "5"]


def test_tree_match_cost_ignores_unrelated_subscriptions() -> None:
    tree: TopicTree[int] = TopicTree()
    for index in range(10_000):
        tree.subscribe(f"devices/{index}/status", index, index)
    # The walk visits one child per level: an unrelated topic finds nothing without scanning.
    assert tree.match("devices/42/status") == [{42: 42}]
    assert tree.match("other/42/status") == []


# Small alphabets so that random filters and topics often match.
_levels = st.sampled_from(["a", "b", "", "$x", "$SYS"])
_topics = st.lists(_levels, min_size=1, max_size=4).map("/".join)
_filter_levels = st.sampled_from(["a", "b", "", "$x", "$SYS", "+"])


@st.composite
def _filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_filter_levels, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    topic_filter = "/".join(levels)
    return topic_filter or "#"


@settings(max_examples=300, deadline=None)
@given(st.lists(_filters(), max_size=12), st.lists(_topics, min_size=1, max_size=5))
def test_tree_match_agrees_with_matches(topic_filters: list[str], topics: list[str]) -> None:
    tree: TopicTree[str] = TopicTree()
    for topic_filter in topic_filters:
        validate_topic_filter(topic_filter)
        tree.subscribe(topic_filter, topic_filter, topic_filter)
    for topic in topics:
        found = sorted(str(key) for subscribers in tree.match(topic) for key in subscribers)
        expected = sorted({topic_filter for topic_filter in topic_filters if matches(topic_filter, topic)})
        assert found == expected
    # Unsubscribing everything leaves an empty tree.
    for topic_filter in set(topic_filters):
        assert tree.unsubscribe(topic_filter, topic_filter) == topic_filter
    assert len(tree) == 0
    assert tree._root.children == {}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["subscribe", "unsubscribe", "match"]), _filters(), _topics),
        max_size=40,
    )
)
def test_tree_match_sees_every_change_made_after_an_earlier_match(
    steps: list[tuple[str, str, str]],
) -> None:
    # A topic's matches are kept between changes: a change must never leave an answer stale.
    tree: TopicTree[str] = TopicTree()
    subscribed: set[str] = set()
    for action, topic_filter, topic in steps:
        if action == "subscribe":
            tree.subscribe(topic_filter, topic_filter, topic_filter)
            subscribed.add(topic_filter)
        elif action == "unsubscribe":
            tree.unsubscribe(topic_filter, topic_filter)
            subscribed.discard(topic_filter)
        found = sorted(str(key) for subscribers in tree.match(topic) for key in subscribers)
        assert found == sorted(f for f in subscribed if matches(f, topic))


def test_tree_keeps_the_matches_of_a_bounded_number_of_topics() -> None:
    tree: TopicTree[int] = TopicTree()
    tree.subscribe("devices/+/status", 1, 1)
    for index in range(MATCH_CACHE * 2 + 5):
        assert tree.match(f"devices/{index}/status") == [{1: 1}]
        assert len(tree._cache) <= MATCH_CACHE
    assert tree.match("devices/x/other") == []
