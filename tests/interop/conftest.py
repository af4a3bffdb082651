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
from mqtt_clients import Clients

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


@pytest.fixture
def clients(broker: RunningBroker, request: pytest.FixtureRequest) -> Iterator[Clients]:
    made = Clients(broker, request)
    yield made
    made.close_all()


@pytest.fixture(scope="session")
def js_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "js"
