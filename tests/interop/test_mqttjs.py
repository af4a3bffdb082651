"""MQTT.js (npm package ``mqtt`` 5.x, installed in tests/js by ``make test``) over TLS, WebSocket
and secure WebSocket, MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from broker_process import write_test_ca

SCRIPT = "pubsub_check.mjs"


def run_mqttjs(js_dir, *args):
    node = shutil.which("node")
    assert node, "node not found: install Node.js 18 or later"
    assert (js_dir / "node_modules" / "mqtt").is_dir(), f"MQTT.js not installed: run `npm ci` in {js_dir}"
    return subprocess.run([node, SCRIPT, *args], cwd=js_dir, capture_output=True, text=True, timeout=30)


def urls(broker):
    return {
        "mqtts": (f"mqtts://localhost:{broker.tls_port}", True),
        "ws": (f"ws://{broker.host}:{broker.ws_port}/mqtt", False),
        "wss": (f"wss://localhost:{broker.wss_port}/mqtt", True),
        "mqtt": (f"mqtt://{broker.host}:{broker.tcp_port}", False),
    }


@pytest.mark.parametrize("protocol_version", ["4", "5"], ids=["v311", "v5"])
@pytest.mark.parametrize("scheme", ["mqtts", "ws", "wss", "mqtt"])
def test_mqttjs_publish_and_receive(broker, js_dir, topic, scheme, protocol_version):
    url, needs_ca = urls(broker)[scheme]
    args = ["--url", url, "--topic", topic, "--protocol-version", protocol_version]
    if needs_ca:
        args += ["--ca", str(broker.ca_file)]
    result = run_mqttjs(js_dir, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert lines[0] == f"connected url={url} protocol={protocol_version}", output
    assert lines[1] == f"subscribed {topic}/# qos=2", output
    received = sorted(line for line in lines if line.startswith("received "))
    assert received == [
        f"received {topic}/qos{qos} qos={qos} payload=hello from MQTT.js at qos {qos}" for qos in (0, 1, 2)
    ]
    version_name = "5.0" if protocol_version == "5" else "3.1.1"
    assert lines[-1] == f"ok 3 messages over {scheme} with MQTT {version_name}", output


@pytest.mark.parametrize("scheme", ["mqtts", "wss"])
def test_mqttjs_refuses_a_server_not_signed_by_its_ca(broker, js_dir, tmp_path, topic, scheme):
    wrong_ca, _ = write_test_ca(tmp_path, "a CA that did not sign the broker")
    url, _ = urls(broker)[scheme]
    result = run_mqttjs(js_dir, "--url", url, "--topic", topic, "--ca", str(wrong_ca), "--timeout", "10")
    assert result.returncode == 1
    last = result.stdout.splitlines()[-1]
    assert last.startswith("FAIL "), result.stdout
    assert "certificate" in last.lower() or "UNABLE_TO_VERIFY" in last or "SELF_SIGNED" in last, last
