"""``certmq serve`` for real, driven by the registry commands over its REST API, with a device
that connects over mutual TLS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from certmq.cli.main import main

LISTENING = re.compile(r"listening (\w+) on \w+://127\.0\.0\.1:(\d+)")


class Served:
    def __init__(self, data_dir: Path, ports: dict[str, int], init: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.init = init

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"


@pytest.fixture
def served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    assert main(["init", "--data-dir", str(data_dir), "--instance-id", "mqtt-serve-1", "--json"]) == 0
    init = json.loads(capsys.readouterr().out)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CERTMQ_")}
    environment |= {
        "CERTMQ_LISTENERS_TCP": "127.0.0.1:0",
        "CERTMQ_LISTENERS_TLS": "127.0.0.1:0",
        "CERTMQ_LISTENERS_WS": "",
        "CERTMQ_LISTENERS_WSS": "",
        "CERTMQ_LISTENERS_HTTP": "127.0.0.1:0",
    }
    log_file = tmp_path / "serve.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "certmq", "serve", "--data-dir", str(data_dir), "--log-format", "json"],
            env=environment, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    try:
        ports: dict[str, int] = {}
        ready = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ready:
            assert process.poll() is None, log_file.read_text()
            for line in log_file.read_text().splitlines():
                message = json.loads(line)["message"]
                match = LISTENING.search(message)
                if match:
                    ports[match[1]] = int(match[2])
                ready = ready or message == "ready"
            time.sleep(0.1)
        assert {"tls", "http"} <= set(ports), log_file.read_text()
        yield Served(data_dir, ports, init)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_file.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def certmq(capsys: pytest.CaptureFixture[str], served: Served, *args: str | Path) -> str:
    capsys.readouterr()
    status = main([*(str(arg) for arg in args), "--url", served.url, "--token", served.init["admin_token"]])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


def certmq_json(capsys: pytest.CaptureFixture[str], served: Served, *args: str | Path) -> Any:
    return json.loads(certmq(capsys, served, *args, "--json"))


def pki(capsys: pytest.CaptureFixture[str], *args: str | Path) -> None:
    assert main(["pki", *(str(arg) for arg in args)]) == 0
    capsys.readouterr()


def signature_connect(served: Served, access_key_id: str, secret: str) -> int:
    """The CONNACK reason code of an MQTT 5 CONNECT over TCP with Signature credentials."""
    client_id = "GID_test@@@api-1"
    password = base64.b64encode(hmac.new(secret.encode(), client_id.encode(), hashlib.sha1).digest()).decode()
    result: list[int] = []
    done = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        result.append(reason_code.value)
        done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(f"Signature|{access_key_id}|mqtt-serve-1", password)
    client.on_connect = on_connect
    client.connect("127.0.0.1", served.ports["tcp"])
    client.loop_start()
    try:
        assert done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


class Device:
    """A paho-mqtt client over mutual TLS that remembers how its connection went."""

    def __init__(self, served: Served, directory: Path, client_id: str) -> None:
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason_code: Any = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set(
            ca_certs=served.init["server_ca_file"],
            certfile=str(directory / "chain.pem"),
            keyfile=str(directory / "device.key"),
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", served.ports["tls"])
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.reason_code = reason_code
        self.connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.reason_code = reason_code
        self.disconnected.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_registry_commands_against_a_running_instance(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert certmq(capsys, served, "mode", "show").splitlines() == [
        "one-way",
        "listeners: tcp, tls: clients with Signature credentials; ws, wss: disabled",
    ]
    assert certmq_json(capsys, served, "access-key", "list")[0]["id"] == served.init["access_key_id"]

    # A pair created through the API signs CONNECT credentials at once, and stops when deleted.
    key = certmq_json(capsys, served, "access-key", "create")
    assert signature_connect(served, key["id"], key["secret"]) == 0
    certmq(capsys, served, "access-key", "delete", key["id"])
    assert signature_connect(served, key["id"], key["secret"]) == 0x86  # bad user name or password

    # Register a CA with the code flow.
    pki(capsys, "ca", "--cn", "Factory CA", "--out", tmp_path / "factory-ca")
    code = certmq(capsys, served, "ca", "code").splitlines()[0]
    pki(capsys, "verification", "--ca-dir", tmp_path / "factory-ca", "--code", code, "--out", tmp_path / "v")
    ca = certmq_json(
        capsys, served, "ca", "register", "--cert", tmp_path / "factory-ca" / "ca.pem",
        "--verification", tmp_path / "v" / "verification.pem",
    )  # fmt: skip
    assert ca["status"] == "active" and ca["name"] == "Factory CA"

    # Mutual TLS: a device of that CA connects and is registered by its first connection.
    assert certmq(capsys, served, "mode", "set", "mutual").splitlines() == [
        "auth mode is mutual",
        "listeners: tls: devices with certificates of registered CAs; tcp: closed; ws, wss: disabled",
    ]
    pki(
        capsys,
        "device",
        "--ca-dir",
        tmp_path / "factory-ca",
        "--cn",
        "sensor-1",
        "--out",
        tmp_path / "sensor-1",
    )
    explanation = certmq_json(capsys, served, "explain", tmp_path / "sensor-1" / "device.pem")
    assert (explanation["allowed"], explanation["reason"]) == (True, "new-device")

    device = Device(served, tmp_path / "sensor-1", "sensor-1")
    try:
        assert device.connected.wait(10) and not device.reason_code.is_failure, device.reason_code
        listed = certmq_json(capsys, served, "device", "list", "--ca", ca["sn"])
        assert [(entry["name"], entry["status"]) for entry in listed] == [("sensor-1", "active")]
        device_sn = listed[0]["device_sn"]
        connections = certmq_json(capsys, served, "connections")
        assert [connection["client_id"] for connection in connections] == ["sensor-1"]
        assert connections[0]["identity"]["cert.sn"] == device_sn
        explanation = certmq_json(capsys, served, "explain", tmp_path / "sensor-1" / "chain.pem")
        assert (explanation["allowed"], explanation["reason"]) == (True, "registered-device")
        decisions = certmq_json(capsys, served, "decisions", "--device", device_sn)
        assert [(entry["result"], entry["reason"]) for entry in decisions] == [("allow", "new-device")]

        # Inactivating the device disconnects it.
        certmq(capsys, served, "device", "inactivate", ca["sn"], device_sn)
        assert device.disconnected.wait(5)
    finally:
        device.close()
    assert certmq_json(capsys, served, "connections") == []

    assert "subject      CN=localhost" in certmq(capsys, served, "server-cert", "show")
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'certmq_device_certificates{status="inactive"} 1.0' in metrics
    assert 'certmq_connections{listener="tls"} 0.0' in metrics
    assert 'certmq_decisions_total{reason="new-device",result="allow"} 1.0' in metrics
