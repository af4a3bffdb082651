"""MQTT over WebSocket as the transport (MQTT 5.0 section 6), with the `websockets` library's
client: the upgrade at /mqtt only, the `mqtt` subprotocol, MQTT packets split across frames and
fragments, pings, and text frames, which close the connection."""

from __future__ import annotations

import struct

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket_connect

from broker_process import RunningBroker, expect_failure_on_mosquitto
from raw_mqtt import encode_string

# CONNACK of MQTT 3.1.1: accepted, no session present.
CONNACK_ACCEPTED = bytes([0x20, 0x02, 0x00, 0x00])


def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and a 60 s keep-alive."""
    body = encode_string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + encode_string(client_id)
    return bytes([0x10, len(body)]) + body


def open_websocket(broker: RunningBroker, path: str = "/mqtt") -> ClientConnection:
    return websocket_connect(
        f"ws://{broker.host}:{broker.ws_port}{path}",
        subprotocols=["mqtt"],  # type: ignore[list-item]
        open_timeout=5,
        close_timeout=5,
    )


def test_the_upgrade_is_served_at_mqtt_with_the_mqtt_subprotocol(broker: RunningBroker) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_websocket(broker, "/elsewhere")
    assert refused.value.response.status_code == 404
    with open_websocket(broker) as websocket:
        assert websocket.subprotocol == "mqtt"


def test_packets_may_be_split_across_frames_and_fragments(broker: RunningBroker) -> None:
    packet = connect_packet("ws-fragments")
    with open_websocket(broker) as websocket:
        # One message in three fragments (a first frame and two continuation frames)...
        websocket.send([packet[:3], packet[3:9], packet[9:]])
        assert websocket.recv(timeout=5) == CONNACK_ACCEPTED
        # ...and a PINGREQ over two separate messages.
        websocket.send(b"\xc0")
        websocket.send(b"\x00")
        assert websocket.recv(timeout=5) == b"\xd0\x00"  # PINGRESP
        # WebSocket pings are answered too.
        assert websocket.ping(b"are you there").wait(5)


@expect_failure_on_mosquitto("its WebSocket bridge relays text frames")
def test_a_text_frame_closes_the_connection(broker: RunningBroker) -> None:
    with open_websocket(broker) as websocket:
        websocket.send(connect_packet("ws-text"))
        assert websocket.recv(timeout=5) == CONNACK_ACCEPTED
        websocket.send("\xc0\x00")
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CloseCode.UNSUPPORTED_DATA
