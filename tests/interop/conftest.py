"""Fixtures for the interoperability suite: a real broker on loopback and real clients.

``CERTMQ_TEST_BROKER=mosquitto`` runs the suite against Debian's mosquitto instead of certmq, to
prove the tests against a reference broker. Tests of behaviour that mosquitto 2.0 lacks use
``broker_process.expect_failure_on_mosquitto``; under certmq they must pass.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_process import RunningBroker, start_broker
from paho_client import V5, PahoClient
from raw_mqtt import RawClient

DEFAULT_TEST_TIMEOUT = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "interop" in item.nodeid and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))


def _stop_and_check(broker: RunningBroker) -> None:
    code = broker.stop()
    assert code == 0, f"{broker.kind} exited with code {code} after SIGTERM\n{broker.log_tail()}"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """The broker with default settings (anonymous access, every listener on a free port),
    shared by the whole test run. Tests keep apart by unique topics and client ids."""
    running = start_broker(tmp_path_factory.mktemp("broker"))
    yield running
    _stop_and_check(running)


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningBroker]]:
    """Start a broker of the test's own with other settings, given as ``CERTMQ_*`` variables:
    ``broker_factory(CERTMQ_MQTT_MAX_PACKET_SIZE=1024)``. Stopped at the end of the test."""
    started: list[RunningBroker] = []

    def start(**settings: Any) -> RunningBroker:
        running = start_broker(tmp_path_factory.mktemp("broker"), settings)
        started.append(running)
        return running

    yield start
    for running in started:
        _stop_and_check(running)


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test uses: ``interop/<test name>/<random>``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"interop/{name}/{uuid.uuid4().hex[:8]}"


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


@pytest.fixture
def clients(broker: RunningBroker, request: pytest.FixtureRequest) -> Iterator[Clients]:
    made = Clients(broker, request)
    yield made
    made.close_all()


@pytest.fixture(scope="session")
def js_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "js"
