"""$SYS statistics topics: published periodically, and never matched by a `#` subscription."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from broker_process import RunningBroker, start_broker
from paho_client import V5, V311


@pytest.fixture(scope="module")
def sys_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker publishing $SYS every second, for the module's tests."""
    running = start_broker(tmp_path_factory.mktemp("sys"), {"CERTMQ_MQTT_SYS_INTERVAL": 1})
    yield running
    assert running.stop() == 0, running.log_tail()


def test_sys_topics_published_periodically_and_not_matched_by_hash(sys_broker, clients):
    on_sys = clients.for_broker(sys_broker)
    everything = on_sys.connected(V311)
    everything.subscribe("#", qos=0)
    monitor = on_sys.connected(V5)
    monitor.subscribe("$SYS/#", qos=0)

    # Wait for repeated updates of the connected-clients count, until one counts these clients
    # (the first may be a retained value from before they connected).
    counts = []
    deadline = time.monotonic() + 8
    while len(counts) < 2 or counts[-1] < 2:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"fewer than two $SYS/broker/clients/connected updates; got {monitor.history}"
        message = monitor.expect_message(timeout=remaining)
        assert message.topic.startswith("$SYS/")
        if message.topic == "$SYS/broker/clients/connected":
            counts.append(int(message.payload))

    leaked = [message.topic for message in everything.drain() if message.topic.startswith("$")]
    assert leaked == [], f"'#' matched $SYS topics: {leaked[:5]}"


def test_plus_at_the_start_does_not_match_sys(sys_broker, clients):
    on_sys = clients.for_broker(sys_broker)
    wildcard = on_sys.connected(V5)
    wildcard.subscribe("+/broker/#", qos=0)
    monitor = on_sys.connected(V5)
    monitor.subscribe("$SYS/broker/#", qos=0)
    # Wait until $SYS traffic has been flowing for more than one interval.
    first = monitor.expect_message(timeout=5).arrived
    while monitor.expect_message(timeout=5).arrived - first < 1.0:
        pass
    assert [message.topic for message in wildcard.drain()] == []
