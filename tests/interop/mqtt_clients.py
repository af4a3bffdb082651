"""Clients of a running broker, made for a test and closed at its end: paho-mqtt clients and raw
MQTT connections."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from broker_process import RunningBroker
from paho_client import V5, PahoClient
from raw_mqtt import RawClient


class Clients:
    """Makes clients connected to a broker and closes them at the end of the test."""

    def __init__(self, broker: RunningBroker, request: pytest.FixtureRequest) -> None:
        self.broker = broker
        self._opened: list[Any] = []
        self._prefix = re.sub(r"[^A-Za-z0-9]+", "", request.node.name)[:20]

    def client_id(self, label: str = "c") -> str:
        return f"{self._prefix}-{label}-{uuid.uuid4().hex[:8]}"

    def for_broker(self, broker: RunningBroker) -> Clients:
        other = Clients.__new__(Clients)
        other.broker = broker
        other._opened = self._opened
        other._prefix = self._prefix
        return other

    def paho(
        self,
        client_id: str | None = None,
        version: int = V5,
        transport: str = "tcp",
        tls: bool = False,
        clean: bool = True,
    ) -> PahoClient:
        """A paho client, not yet connected (call ``.connect()``)."""
        if transport == "websockets":
            port = self.broker.wss_port if tls else self.broker.ws_port
        else:
            port = self.broker.tls_port if tls else self.broker.tcp_port
        client = PahoClient(
            "localhost" if tls else self.broker.host,
            port,
            client_id=self.client_id() if client_id is None else client_id,
            version=version,
            transport=transport,
            ca_file=self.broker.ca_file if tls else None,
            clean=clean,
        )
        self._opened.append(client)
        return client

    def connected(self, version: int = V5, client_id: str | None = None, **connect: Any) -> PahoClient:
        client = self.paho(client_id=client_id, version=version)
        client.connect(**connect)
        return client

    def raw(self, version: int = 5, timeout: float = 5.0) -> RawClient:
        client = RawClient(self.broker.host, self.broker.tcp_port, version=version, timeout=timeout)
        self._opened.append(client)
        return client

    def close_all(self) -> None:
        for client in reversed(self._opened):
            try:
                client.close()
            except Exception:
                pass
