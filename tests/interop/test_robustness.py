"""A misbehaving client affects only its own connection: malformed packets, no CONNECT in time,
keep alive not kept."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import raw_mqtt
from broker_process import RunningBroker, expect_failure_on_mosquitto, start_broker
from paho_client import V5, V311


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker that waits 1 s for a CONNECT, for the module's tests of that timeout."""
    running = start_broker(tmp_path_factory.mktemp("quick"), {"CERTMQ_MQTT_CONNECT_TIMEOUT": 1})
    yield running
    assert running.stop() == 0, running.log_tail()


def _assert_others_unaffected(clients, topic, subscriber):
    clients.connected(V5).publish(topic, b"still-working", qos=1)
    assert subscriber.expect_message().payload == b"still-working", "other clients were affected"


def test_malformed_packet_closes_only_that_connection_with_0x81(clients, topic):
    subscriber = clients.connected(V5)
    subscriber.subscribe(topic, qos=1)
    bad = clients.raw()
    bad.connect(clients.client_id("malformed"))
    # PUBLISH whose topic length (0x0100) runs past the end of the packet.
    bad.send_raw(bytes([0x30, 0x05, 0x01, 0x00, ord("a"), ord("b"), 0x00]))

    packets = bad.wait_closed(5)
    disconnects = [packet for packet in packets if packet.kind == raw_mqtt.DISCONNECT]
    assert disconnects, f"connection closed without DISCONNECT; read {packets}"
    assert disconnects[0].reason_code == 0x81, f"expected Malformed Packet (0x81), got {disconnects[0]!r}"
    subscriber.assert_connected()
    _assert_others_unaffected(clients, topic, subscriber)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(bytes([0x00, 0x00]), id="reserved-packet-type-0"),
        pytest.param(bytes([0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]), id="subscribe-without-filters"),
        pytest.param(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), id="remaining-length-over-4-bytes"),
        pytest.param(bytes([0x10, 0x02, 0x00, 0x00]), id="second-connect"),
    ],
)
@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_protocol_violation_closes_only_that_connection(clients, topic, garbage, version):
    subscriber = clients.connected(V311)
    subscriber.subscribe(topic, qos=1)
    bad = clients.raw(version=version)
    bad.connect(clients.client_id("garbage"))
    bad.send_raw(garbage)
    packets = bad.wait_closed(5)
    assert all(packet.kind == raw_mqtt.DISCONNECT for packet in packets), f"unexpected reply {packets}"
    if version == 5 and packets:
        assert packets[0].reason_code is not None and packets[0].reason_code >= 0x80
    subscriber.assert_connected()
    clients.connected(V311).publish(topic, b"still-working", qos=1)
    assert subscriber.expect_message().payload == b"still-working"


def test_garbage_instead_of_connect_is_closed(clients, topic):
    subscriber = clients.connected(V5)
    subscriber.subscribe(topic, qos=1)
    bad = clients.raw()
    bad.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    bad.wait_closed(5)
    _assert_others_unaffected(clients, topic, subscriber)


@expect_failure_on_mosquitto("has no setting for the CONNECT timeout")
def test_connection_without_connect_is_closed_after_the_timeout(quick, clients, topic):
    on_quick = clients.for_broker(quick)
    silent = on_quick.raw()
    opened = time.monotonic()
    silent.wait_closed(5)
    assert time.monotonic() - opened >= 0.5, "closed before the CONNECT timeout"


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_keep_alive_timeout_disconnects_and_publishes_the_will(clients, topic, version):
    watcher = clients.connected(V5)
    watcher.subscribe(f"{topic}/#", qos=1)
    quiet = clients.raw(version=version)
    connack = quiet.connect(
        clients.client_id("quiet"), keep_alive=1, will=(f"{topic}/will", b"timed-out", 1, False)
    )
    assert connack.reason_code == 0
    connected = time.monotonic()

    # Send nothing more: the broker must give up after 1.5 x keep alive. (mosquitto checks keep
    # alive only every few seconds, hence the generous upper bound.)
    packets = quiet.wait_closed(10)
    closed_after = time.monotonic() - connected
    assert closed_after >= 1.0, f"disconnected after {closed_after:.1f}s, before 1.5 x keep alive"
    if version == 5 and packets:
        assert packets[-1].kind == raw_mqtt.DISCONNECT and packets[-1].reason_code == 0x8D
    message = watcher.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/will", b"timed-out")


def test_client_that_pings_stays_connected(clients, topic):
    client = clients.raw()
    client.connect(clients.client_id("pinging"), keep_alive=1)
    started = time.monotonic()
    while time.monotonic() - started < 3.5:
        client.send_packet(raw_mqtt.PINGREQ, 0, b"")
        assert client.read_packet().kind == raw_mqtt.PINGRESP
        time.sleep(0.5)
    client.subscribe([(topic, 1)])


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_a_packet_trickled_byte_by_byte_does_not_keep_the_connection_alive(clients, topic, version):
    """Only complete packets count for keep alive: a client that sends one byte of a PUBLISH it
    never finishes every 0.5 s is closed after 1.5 x its keep alive of 2 s, while a client that
    sends PINGREQ stays."""
    control = clients.raw(version=version)
    control.connect(clients.client_id("pinging"), keep_alive=2)
    trickler = clients.raw(version=version)
    trickler.connect(clients.client_id("trickling"), keep_alive=2)
    connected = time.monotonic()
    # A QoS 0 PUBLISH announcing 1000 bytes, never finished.
    unfinished = bytes([0x30]) + raw_mqtt.encode_varint(1000) + raw_mqtt.encode_string(topic) + bytes(1000)
    closed_after = None
    for index, byte in enumerate(unfinished):
        if time.monotonic() - connected > 8:
            break
        if index % 2 == 0:
            control.send_packet(raw_mqtt.PINGREQ, 0, b"")
            assert control.read_packet().kind == raw_mqtt.PINGRESP, "the pinging client was cut"
        try:
            trickler.send_raw(bytes([byte]))
            packet = trickler.read_packet(timeout=0.5)
        except TimeoutError:
            continue
        except (raw_mqtt.ConnectionClosed, OSError):
            closed_after = time.monotonic() - connected
            break
        assert (packet.kind, packet.reason_code) == (raw_mqtt.DISCONNECT, 0x8D), f"unexpected {packet!r}"
        closed_after = time.monotonic() - connected
        break
    assert closed_after is not None, (
        "a client trickling a packet it never finishes is still connected after 8 s"
    )
    # 1.5 x 2 s, and the timer's and the loop's margins.
    assert 2.5 <= closed_after < 4.5, f"closed after {closed_after:.1f} s"
    control.send_packet(raw_mqtt.PINGREQ, 0, b"")
    assert control.read_packet().kind == raw_mqtt.PINGRESP


@expect_failure_on_mosquitto("has no setting for the CONNECT timeout")
def test_a_connect_trickled_byte_by_byte_is_closed_after_the_connect_timeout(quick, clients):
    trickler = clients.for_broker(quick).raw()
    # A CONNECT announcing 1000 bytes, sent one byte every 0.2 s.
    unfinished = bytes([0x10]) + raw_mqtt.encode_varint(1000) + raw_mqtt.encode_string("MQTT") + bytes(1000)
    opened = time.monotonic()
    closed_after = None
    for byte in unfinished:
        if time.monotonic() - opened > 6:
            break
        try:
            trickler.send_raw(bytes([byte]))
            trickler.read_packet(timeout=0.2)
        except TimeoutError:
            continue
        except (raw_mqtt.ConnectionClosed, OSError):
            closed_after = time.monotonic() - opened
            break
    assert closed_after is not None, "a client trickling its CONNECT is still connected after 6 s"
    assert 0.8 <= closed_after < 3, f"closed after {closed_after:.1f} s"
