"""What happens on DISCONNECT from a client: the session keeps the expiry interval the client
set last (within the server's maximum; the protocol checked it), and the will goes out only
when the client asks for it (reason 0x04)."""

from __future__ import annotations

from certmq.broker.client_connection import ClientConnection
from certmq.mqtt.packets import Disconnect
from certmq.mqtt.reason_codes import ReasonCode


def handle_disconnect(connection: ClientConnection, packet: Disconnect) -> None:
    session = connection.session
    assert session is not None
    session.expiry_interval = connection.protocol.session_expiry_interval
    connection.close(None, publish_will=packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE)
