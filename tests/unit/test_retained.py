from certmq.broker.messages import Message
from certmq.broker.quotas import retained_fits
from certmq.broker.retained import NODE_OVERHEAD, MemoryRetainedStore
from certmq.config import MqttSection


def topics(store: MemoryRetainedStore, topic_filter: str) -> set[str]:
    return {message.topic for message in store.matching(topic_filter)}


def make_store(*names: str) -> MemoryRetainedStore:
    store = MemoryRetainedStore()
    for name in names:
        store.set(Message(name, b"x", retain=True))
    return store


def test_filters_find_the_retained_topics_they_match() -> None:
    store = make_store("a", "a/b", "a/b/c", "a/c", "b", "/lead", "$SYS/uptime")
    assert topics(store, "a") == {"a"}
    assert topics(store, "a/+") == {"a/b", "a/c"}
    assert topics(store, "a/#") == {"a", "a/b", "a/b/c", "a/c"}
    assert topics(store, "+/b/#") == {"a/b", "a/b/c"}
    assert topics(store, "#") == {"a", "a/b", "a/b/c", "a/c", "b", "/lead"}
    assert topics(store, "+") == {"a", "b"}
    assert topics(store, "+/lead") == {"/lead"}
    assert topics(store, "$SYS/#") == {"$SYS/uptime"}
    assert topics(store, "x/#") == set()


def test_replace_and_clear_keep_the_count_and_prune() -> None:
    store = make_store("a/b/c", "a/b")
    store.set(Message("a/b", b"new", retain=True))
    assert len(store) == 2
    assert [m.payload for m in store.matching("a/b")] == [b"new"]
    store.clear("a/b/c")
    store.clear("a/b/c")
    store.clear("never/set")
    assert len(store) == 1
    assert topics(store, "#") == {"a/b"}
    store.clear("a/b")
    assert len(store) == 0
    assert store._root.children == {}


def test_the_store_counts_its_messages_and_tree_nodes_in_bytes() -> None:
    store = MemoryRetainedStore()
    first = Message("a/bc", b"12345", retain=True)
    assert store.growth(first) == (9 + 2 * NODE_OVERHEAD + 3, True)
    store.set(first)
    assert store.size == 9 + 2 * NODE_OVERHEAD + 3
    sibling = Message("a/d", b"1", retain=True)
    assert store.growth(sibling) == (4 + NODE_OVERHEAD + 1, True)
    store.set(sibling)
    smaller = Message("a/bc", b"1", retain=True)
    assert store.growth(smaller) == (-4, False)
    store.set(smaller)
    assert store.size == 5 + 4 + 3 * NODE_OVERHEAD + 4
    store.clear("a/bc")
    assert store.size == 4 + 2 * NODE_OVERHEAD + 2
    store.clear("a/d")
    assert (store.size, len(store)) == (0, 0)


def test_retained_messages_fit_within_their_count_and_bytes() -> None:
    settings = MqttSection(max_retained_messages=2, max_retained_bytes=2 * (NODE_OVERHEAD + 1) + 2 * 101)
    store = MemoryRetainedStore()
    for name in ("a", "b"):
        message = Message(name, b"x" * 100, retain=True, sender="c")
        assert retained_fits(store, message, settings)
        store.set(message)
    assert not retained_fits(store, Message("c", b"x", retain=True), settings), "a third topic"
    assert not retained_fits(store, Message("a", b"x" * 101, retain=True), settings), "one byte more"
    assert retained_fits(store, Message("a", b"x" * 100, retain=True), settings), "as large as before"
    assert retained_fits(store, Message("a", b"x", retain=True), settings)
    store.set(Message("a", b"x", retain=True))
    assert retained_fits(store, Message("b", b"x" * 199, retain=True), settings), "room freed by replacing"
    assert not retained_fits(store, Message("b", b"x" * 200, retain=True), settings)
