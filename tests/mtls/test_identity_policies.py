"""Policies on the certificate identity: client id binding (``auth.bind_client_id``) and topic
rules with certificate variables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openssl_pki import make_ca, make_device

from conftest import Instance, start_instance

RULES = """
[[rule]]
permission = "allow"
action = "publish"
topic = "devices/${cert.cn}/#"

[[rule]]
permission = "allow"
action = "subscribe"
topic = "devices/#"
"""


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One instance for the module's tests, each with devices of its own."""
    rules = tmp_path_factory.mktemp("rules") / "acl.toml"
    rules.write_text(RULES)
    broker, work = start_instance(
        tmp_path_factory,
        CERTMQ_INSTANCE_AUTH_MODE="mutual",
        CERTMQ_AUTH_BIND_CLIENT_ID="cn",
        CERTMQ_AUTH_ACL_FILE=str(rules),
        CERTMQ_AUTH_ACL_DEFAULT="deny",
    )
    instance = Instance(broker, work)
    instance.fleet_ca = make_ca(work / "ca", "strict-ca")
    instance.fleet_sn = instance.register_ca(instance.fleet_ca, "strict")
    yield instance
    instance.close()
    assert broker.stop() == 0, broker.log_tail()


def test_client_id_must_equal_the_certificate_cn(strict: Instance, tmp_path: Path) -> None:
    assert strict.fleet_ca is not None
    device = make_device(tmp_path, strict.fleet_ca, "meter-7")
    strict.device_client(device, client_id="meter-7").connect()
    refused = strict.device_client(device, client_id="meter-8").connect(expect_success=False)
    assert refused.reason_code == 0x85
    assert strict.decisions(reason="client-id-not-bound")[0]["cn"] == "meter-7"


def test_a_device_publishes_only_under_its_certificate_name(strict: Instance, tmp_path: Path) -> None:
    assert strict.fleet_ca is not None
    meter = make_device(tmp_path / "m", strict.fleet_ca, "meter-1")
    monitor_certificate = make_device(tmp_path / "w", strict.fleet_ca, "monitor")
    monitor = strict.device_client(monitor_certificate, client_id="monitor")
    monitor.connect()
    assert monitor.subscribe("devices/#", qos=1) == [1]
    assert monitor.subscribe("other/#", qos=1) == [0x87]

    device = strict.device_client(meter, client_id="meter-1")
    device.connect()
    device.publish("devices/meter-2/reading", b"forged", qos=1)
    device.publish("devices/meter-1/reading", b"42", qos=1)
    received = monitor.expect_message()
    assert (received.topic, received.payload) == ("devices/meter-1/reading", b"42")
    assert monitor.drain() == []
