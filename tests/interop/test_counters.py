"""The broker's counters count what real clients did: PUBLISH packets in (paho-mqtt over TLS,
mosquitto_pub over TCP) and out (to paho subscribers on both protocol versions), and TLS
handshakes that failed, read where an operator reads them: /metrics and the $SYS topics."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import pytest

from broker_process import RunningBroker, expect_failure_on_mosquitto, start_broker
from paho_client import V5, V311, PahoClient

FROM_PAHO = 7  # messages paho publishes
FROM_MOSQUITTO_PUB = 5  # messages mosquitto_pub publishes
PUBLISHED = FROM_PAHO + FROM_MOSQUITTO_PUB
SUBSCRIBERS = 2
SYS_INTERVAL = 1  # seconds between $SYS updates
SYS_WAIT = 5 * SYS_INTERVAL

RECEIVED = "certmq_messages_received_total"
SENT = "certmq_messages_sent_total"
HANDSHAKE_FAILURES = "certmq_tls_handshake_failures_total"

pytestmark = expect_failure_on_mosquitto(
    "has no /metrics, and its $SYS/broker/messages/* count packets of every kind"
)


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker of this module's own, so that no other test's traffic is counted."""
    running = start_broker(tmp_path_factory.mktemp("counted"), {"CERTMQ_MQTT_SYS_INTERVAL": SYS_INTERVAL})
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture
def on_counted(clients, counted: RunningBroker):
    return clients.for_broker(counted)


def publish_with_mosquitto_pub(broker: RunningBroker, topic: str, count: int) -> None:
    """``count`` QoS 1 messages, one per line of standard input."""
    lines = "".join(f"mosquitto-{n}\n" for n in range(count))
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.tcp_port), "-t", topic, "-q", "1", "-l"],
        input=lines.encode(),
        capture_output=True,
        timeout=30,
        check=True,
    )


def sys_values_until(monitor: PahoClient, topic: str, expected: int, *, own_deliveries: bool) -> list[int]:
    """The values of ``topic`` that ``monitor`` receives (subscribed to it alone), until one is
    ``expected``. With ``own_deliveries``, each value is taken less the $SYS messages the monitor
    had received before it: those are messages sent too."""
    assert monitor.subscribe(topic, qos=0) == [0]
    seen: list[int] = []
    deadline = time.monotonic() + SYS_WAIT
    while not seen or seen[-1] != expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{topic} never showed {expected} within {SYS_WAIT} s: {seen}")
        value = int(monitor.expect_message(timeout=remaining, topic=topic).payload)
        seen.append(value - len(seen) if own_deliveries else value)
    return seen


def test_messages_in_and_out_are_counted_in_metrics_and_sys(
    counted: RunningBroker,
    on_counted,
    topic: str,  # type: ignore[no-untyped-def]
) -> None:
    before = counted.metrics()
    subscribers = [on_counted.connected(V5), on_counted.connected(V311)]
    for subscriber in subscribers:
        assert subscriber.subscribe(f"{topic}/#", qos=1) == [1]
    over_tls = on_counted.paho(tls=True)
    over_tls.connect()
    for n in range(FROM_PAHO):
        over_tls.publish(f"{topic}/paho", f"paho-{n}".encode(), qos=1)
    publish_with_mosquitto_pub(counted, f"{topic}/mosquitto", FROM_MOSQUITTO_PUB)
    for subscriber in subscribers:
        assert len(subscriber.expect_messages(PUBLISHED)) == PUBLISHED

    after = counted.metrics()
    assert after[RECEIVED] - before[RECEIVED] == PUBLISHED
    assert after[SENT] - before[SENT] == SUBSCRIBERS * PUBLISHED

    # $SYS shows the same counters: nothing else was published or sent since.
    monitor = on_counted.connected(V5)
    sent = sys_values_until(monitor, "$SYS/broker/messages/sent", int(after[SENT]), own_deliveries=True)
    assert max(sent) == after[SENT], f"$SYS/broker/messages/sent counted more than was sent: {sent}"
    received = sys_values_until(
        monitor, "$SYS/broker/messages/received", int(after[RECEIVED]), own_deliveries=False
    )
    assert max(received) == after[RECEIVED], f"$SYS/broker/messages/received overcounted: {received}"
    assert counted.metrics()[RECEIVED] == after[RECEIVED], "a $SYS message was counted as received"


def plain_bytes_on_the_tls_port(broker: RunningBroker) -> None:
    """A client that speaks MQTT without TLS to the TLS listener, until the broker hangs up."""
    with socket.create_connection((broker.host, broker.tls_port), timeout=5) as plain:
        plain.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        while plain.recv(4096):
            pass


def test_failed_tls_handshakes_are_counted(counted: RunningBroker) -> None:
    before = counted.metrics()[HANDSHAKE_FAILURES]
    plain_bytes_on_the_tls_port(counted)
    # A client that does not trust the broker's certificate gives up in the handshake.
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((counted.host, counted.tls_port), timeout=5) as raw,
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
    failed = 2
    deadline = time.monotonic() + 5
    while counted.metrics()[HANDSHAKE_FAILURES] - before < failed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counted.metrics()[HANDSHAKE_FAILURES] - before == failed
