"""The asyncio side of a connection from CONNECT to DISCONNECT, over a stand-in transport:
authentication decided at once or awaited, and the one timer that serves the protocol's deadlines.
(The deadlines themselves are the protocol's: tests/unit/test_server_connection.py; on a real
broker: tests/interop/test_robustness.py.)"""

from __future__ import annotations

import asyncio

from certmq.auth.connect import ALLOW, AuthOutcome, ConnectAttempt
from certmq.broker.connection import (
    AUTHENTICATING,
    CLOSED,
    CONNECTED,
    PACKETS_PER_TURN,
    Listener,
    MQTTConnection,
)
from certmq.broker.core import BrokerCore
from certmq.config import MqttSection

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


def connect_packet(client_id: str, keep_alive: int = 60) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session."""
    identifier = client_id.encode()
    variable = (
        b"\x00\x04MQTT\x04\x02"
        + keep_alive.to_bytes(2, "big")
        + len(identifier).to_bytes(2, "big")
        + identifier
    )
    return bytes((0x10, len(variable))) + variable


class StandInTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0


class Authenticator:
    """Decides at once, or, with ``wait``, only once ``wait`` is set."""

    def __init__(self, wait: asyncio.Event | None = None, error: Exception | None = None) -> None:
        self.wait = wait
        self.error = error
        self.attempts: list[ConnectAttempt] = []

    def authenticate(self, attempt: ConnectAttempt) -> AuthOutcome | asyncio.Future[AuthOutcome]:
        self.attempts.append(attempt)
        if self.error is not None:
            raise self.error
        if self.wait is None:
            return ALLOW
        return asyncio.ensure_future(self._later(self.wait))

    @staticmethod
    async def _later(wait: asyncio.Event) -> AuthOutcome:
        await wait.wait()
        return ALLOW


def connection_on(core: BrokerCore) -> tuple[MQTTConnection, StandInTransport]:
    transport = StandInTransport()
    connection = MQTTConnection(core, Listener("tcp"))
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def test_a_connect_decided_at_once_is_answered_within_the_same_read() -> None:
    authenticator = Authenticator()
    core = BrokerCore(MqttSection(), authenticator=authenticator)
    connection, transport = connection_on(core)
    connection.data_received(connect_packet("device-1") + PINGREQ)
    assert transport.writes == [CONNACK_ACCEPTED + PINGRESP]
    assert connection.state == CONNECTED and transport.reading
    assert authenticator.attempts[0].client_id == "device-1"
    assert authenticator.attempts[0].peer == "127.0.0.1:50000"
    assert core.sessions["device-1"].connection is connection and core.stats.clients_connected == 1

    connection.data_received(DISCONNECT)
    connection.connection_lost(None)
    assert transport.closed and connection.state == CLOSED
    assert not core.sessions and not core.connections and core.stats.clients_connected == 0


async def test_an_awaited_decision_holds_the_next_packets_until_it_is_made() -> None:
    decided = asyncio.Event()
    core = BrokerCore(MqttSection(), authenticator=Authenticator(wait=decided))
    connection, transport = connection_on(core)
    connection.data_received(connect_packet("device-2") + PINGREQ)
    assert connection.state == AUTHENTICATING and not transport.reading and transport.writes == []
    decided.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert connection.state == CONNECTED and transport.reading
    assert transport.writes == [CONNACK_ACCEPTED + PINGRESP]


async def test_an_authenticator_error_refuses_the_connect() -> None:
    core = BrokerCore(MqttSection(), authenticator=Authenticator(error=RuntimeError("broken")))
    connection, transport = connection_on(core)
    connection.data_received(connect_packet("device-3"))
    # MQTT 3.1.1 has no "unspecified error": CONNACK 3, server unavailable.
    assert transport.writes == [b"\x20\x02\x00\x03"]
    assert transport.closed and connection.state == CLOSED and not core.sessions


async def test_the_connect_deadline_timer_is_the_first_keep_alive_check() -> None:
    core = BrokerCore(MqttSection(connect_timeout=0.1), authenticator=Authenticator())
    connection, transport = connection_on(core)
    deadline = connection._timer
    assert deadline is not None
    connection.data_received(connect_packet("device-4", keep_alive=1))
    assert connection._timer is deadline, "a timer due before the keep-alive limit is kept"
    # When it fires, the connection is not idle yet: the timer is armed for the keep-alive limit.
    deadline.cancel()
    connection._timer_fired()
    timer = connection._timer
    assert timer is not None and not transport.closed
    assert timer.when() == connection.protocol.last_activity + 1.5


async def test_a_keep_alive_shorter_than_the_connect_deadline_gets_its_own_timer() -> None:
    core = BrokerCore(MqttSection(connect_timeout=10), authenticator=Authenticator())
    connection, transport = connection_on(core)
    deadline = connection._timer
    connection.data_received(connect_packet("device-5", keep_alive=2))
    timer = connection._timer
    assert deadline is not None and timer is not None and timer is not deadline
    assert timer.when() - asyncio.get_running_loop().time() <= 3.0
    connection.data_received(DISCONNECT)
    assert connection._timer is None and transport.closed


def publish_qos1(packet_id: int) -> bytes:
    variable = b"\x00\x01t" + packet_id.to_bytes(2, "big") + b"payload"
    return bytes((0x32, len(variable))) + variable


def pubacks(first: int, last: int) -> bytes:
    return b"".join(b"\x40\x02" + packet_id.to_bytes(2, "big") for packet_id in range(first, last + 1))


async def test_a_read_of_many_packets_is_handled_over_several_turns_letting_others_in() -> None:
    core = BrokerCore(MqttSection(), authenticator=Authenticator())
    busy, busy_transport = connection_on(core)
    other, other_transport = connection_on(core)
    busy.data_received(connect_packet("busy"))
    other.data_received(connect_packet("other"))
    busy_transport.writes.clear()
    other_transport.writes.clear()

    many = 2 * PACKETS_PER_TURN + 10
    busy.data_received(b"".join(publish_qos1(packet_id) for packet_id in range(1, many + 1)))
    # One turn's worth answered; the rest waits, and nothing more is read meanwhile.
    assert b"".join(busy_transport.writes) == pubacks(1, PACKETS_PER_TURN)
    assert not busy_transport.reading
    # Another client's packet is answered before the busy client's next turn.
    other.data_received(publish_qos1(7))
    assert other_transport.writes == [pubacks(7, 7)]
    assert b"".join(busy_transport.writes) == pubacks(1, PACKETS_PER_TURN)
    # Data that still comes (read before reading paused) joins the queue, answered in order.
    busy.data_received(publish_qos1(many + 1))
    for _ in range(4):
        await asyncio.sleep(0)
    assert b"".join(busy_transport.writes) == pubacks(1, many + 1)
    assert busy_transport.reading, "reading resumes once every packet is handled"
