"""A stand-in for the transport under an MQTTConnection, for measuring certmq's Python alone."""

from __future__ import annotations


class StandInTransport:
    """What MQTTConnection uses of a transport: keeps what it is given, sends nothing."""

    def __init__(self, peer_certificate: bytes | None = None) -> None:
        self.peer_certificate = peer_certificate
        self.closing = False
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return ("127.0.0.1", 50000)
        if name == "peer_certificate":
            return self.peer_certificate
        return default

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def take(self) -> bytes:
        """What was written since the last call."""
        data = b"".join(self.written)
        self.written.clear()
        return data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0
