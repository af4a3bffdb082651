from certmq.broker.messages import Message
from certmq.broker.retained import MemoryRetainedStore


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
