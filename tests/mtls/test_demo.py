"""`make run`'s demo: a fresh instance registers a device CA and issues a device certificate
that connects over mutual TLS at once."""

from __future__ import annotations

import pytest
from openssl_pki import Issued

from conftest import Instance, start_instance


def test_the_demo_device_connects_with_its_certificate(tmp_path_factory: pytest.TempPathFactory) -> None:
    broker, work = start_instance(tmp_path_factory, CERTMQ_DEMO="true", CERTMQ_INSTANCE_AUTH_MODE="mutual")
    instance = Instance(broker, work)
    try:
        demo = broker.data_dir / "demo" / "device-0001"
        device = Issued(demo / "device.pem", demo / "device.key", demo / "chain.pem")
        instance.device_client(device, client_id="device-0001").connect()
        (ca,) = instance.cli_json("ca", "list")
        assert ca["name"] == "demo" and ca["status"] == "active"
        assert instance.decisions(ca_sn=ca["sn"])[0]["reason"] == "new-device"

        broker.restart()
        assert len(instance.cli_json("ca", "list")) == 1, "the demo CA was registered again"
    finally:
        instance.close()
        assert broker.stop() == 0, broker.log_tail()


def test_serve_without_demo_registers_nothing(mutual: Instance) -> None:
    assert not (mutual.broker.data_dir / "demo").exists()
    assert "demo" not in {ca["name"] for ca in mutual.cli_json("ca", "list")}
