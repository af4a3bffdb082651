"""Fixtures for the certificate tests: certmq in mutual mode, CAs registered through the code
flow with certmq's own commands, devices with certificates made by the openssl command line,
and paho-mqtt devices that present them over real TLS."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))

from openssl_pki import Issued, make_ca, make_device
from operated_instance import Instance

from broker_process import RunningBroker, start_broker


def start_instance(tmp_path_factory: pytest.TempPathFactory, **settings: str) -> tuple[RunningBroker, Path]:
    broker = start_broker(tmp_path_factory.mktemp("certmq"), settings)
    return broker, tmp_path_factory.mktemp("pki")


@contextlib.contextmanager
def running_instance(tmp_path_factory: pytest.TempPathFactory, **settings: str) -> Iterator[Instance]:
    """An instance of the test's own with these settings, stopped (cleanly) when it ends."""
    broker, work = start_instance(tmp_path_factory, **settings)
    instance = Instance(broker, work)
    try:
        yield instance
    finally:
        instance.close()
    assert broker.stop() == 0, broker.log_tail()


@pytest.fixture(scope="module")
def one_way(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """certmq in one-way mode: clients authenticate with Signature credentials. One per module: a
    test that switches the mode is the module's last to use it, and switches back."""
    with running_instance(tmp_path_factory, CERTMQ_AUTH_ANONYMOUS="false") as instance:
        yield instance


@pytest.fixture(scope="session")
def mutual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """certmq in mutual mode, no anonymous access, with the CA `fleet-ca` registered. Every
    decision is a row of its own (no folding): the tests find each attempt's row by its peer."""
    broker, work = start_instance(
        tmp_path_factory,
        CERTMQ_INSTANCE_AUTH_MODE="mutual",
        CERTMQ_AUTH_ANONYMOUS="false",
        CERTMQ_AUDIT_FOLD_WINDOW="0",
    )
    instance = Instance(broker, work)
    instance.fleet_ca = make_ca(work / "fleet", "fleet-ca")
    instance.fleet_sn = instance.register_ca(instance.fleet_ca, "fleet")
    yield instance
    instance.close()
    assert broker.stop() == 0, broker.log_tail()


@pytest.fixture
def fleet_device(mutual: Instance, tmp_path: Path) -> Issued:
    """A new device certificate of `fleet-ca`, not registered yet."""
    assert mutual.fleet_ca is not None
    return make_device(tmp_path, mutual.fleet_ca, f"sensor-{uuid.uuid4().hex[:8]}")
