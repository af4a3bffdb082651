"""Shared subscriptions ($share/group/filter): each message goes to exactly one member of a group,
the load is spread across the members, and ordinary subscribers still get every message."""

from __future__ import annotations

import time

import pytest

from paho_client import V5, V311, WAIT

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def _collect(members, expected_total, timeout=WAIT):
    """Poll all members until ``expected_total`` messages have arrived between them."""
    received = {index: [] for index in range(len(members))}
    deadline = time.monotonic() + timeout
    while sum(len(payloads) for payloads in received.values()) < expected_total:
        assert time.monotonic() < deadline, f"only {received} of {expected_total} messages arrived"
        for index, member in enumerate(members):
            received[index] += [message.payload for message in member.drain()]
        time.sleep(0.01)
    return received


@pytest.mark.parametrize("version", VERSIONS)
def test_each_message_goes_to_exactly_one_member(clients, topic, version):
    members = [clients.connected(version) for _ in range(3)]
    for member in members:
        member.subscribe(f"$share/workers/{topic}/jobs/+", qos=1)
    observer = clients.connected(version)
    observer.subscribe(f"{topic}/jobs/+", qos=1)
    publisher = clients.connected(version)

    sent = [f"job-{n:02d}".encode() for n in range(30)]
    for payload in sent:
        publisher.publish(f"{topic}/jobs/new", payload, qos=1)

    observed = [message.payload for message in observer.expect_messages(len(sent))]
    assert observed == sent, "an ordinary subscriber must still get every message"
    received = _collect(members, len(sent))
    everything = [payload for payloads in received.values() for payload in payloads]
    assert sorted(everything) == sent, "a message was lost or delivered to more than one member"
    counts = [len(payloads) for payloads in received.values()]
    assert all(count >= 1 for count in counts), f"load not spread across the members: {counts}"
    assert max(counts) < len(sent) * 0.8, f"one member took nearly everything: {counts}"

    # Nothing more arrives afterwards (no late duplicates).
    publisher.publish(f"{topic}/jobs/new", b"last", qos=1)
    last = _collect(members, 1)
    assert [payload for payloads in last.values() for payload in payloads] == [b"last"]


def test_two_groups_each_get_every_message(clients, topic):
    group_a = [clients.connected(V5) for _ in range(2)]
    group_b = [clients.connected(V5) for _ in range(2)]
    for member in group_a:
        member.subscribe(f"$share/a/{topic}", qos=1)
    for member in group_b:
        member.subscribe(f"$share/b/{topic}", qos=1)
    publisher = clients.connected(V5)
    sent = [f"m{n}".encode() for n in range(10)]
    for payload in sent:
        publisher.publish(topic, payload, qos=1)

    for group in (group_a, group_b):
        received = _collect(group, len(sent))
        assert sorted(payload for payloads in received.values() for payload in payloads) == sent


def test_member_leaving_the_group_stops_receiving(clients, topic):
    staying = clients.connected(V5)
    leaving = clients.connected(V5)
    staying.subscribe(f"$share/g/{topic}", qos=1)
    leaving.subscribe(f"$share/g/{topic}", qos=1)
    leaving.unsubscribe(f"$share/g/{topic}")
    publisher = clients.connected(V5)
    for n in range(6):
        publisher.publish(topic, f"m{n}".encode(), qos=1)
    assert [message.payload for message in staying.expect_messages(6)] == [f"m{n}".encode() for n in range(6)]
    assert leaving.drain() == []
