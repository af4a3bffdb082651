"""A layer between a transport and a protocol: TLS over TCP, WebSocket over TCP or TLS.

To the transport below it a layer is the protocol; to the protocol above it, the transport.
Flow control passes straight through: the protocol above pauses reading on the transport
below, and is paused when that one's write buffer fills.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class StackedTransport(asyncio.Protocol, asyncio.Transport):
    """What every layer forwards unchanged; a layer says what is below it and above it."""

    _protocol: asyncio.Protocol | None
    # Called when the connection below is lost (certmq.broker.worker_balance counts connections).
    on_lost: Callable[[], None] | None = None

    def _below(self) -> asyncio.Transport | None:
        """The transport this layer runs on, None once it is gone."""
        raise NotImplementedError

    # --- the side below -------------------------------------------------------------------------

    def pause_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()

    # --- the side above -------------------------------------------------------------------------

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        below = self._below()
        if below is not None:
            below.pause_reading()

    def resume_reading(self) -> None:
        below = self._below()
        if below is not None:
            below.resume_reading()

    def is_reading(self) -> bool:
        below = self._below()
        return below is not None and below.is_reading()

    def get_write_buffer_size(self) -> int:
        below = self._below()
        return below.get_write_buffer_size() if below is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        below = self._below()
        if below is not None:
            below.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        below = self._below()
        return below.get_write_buffer_limits() if below is not None else (0, 0)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]
