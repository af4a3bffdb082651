"""SIGHUP reloads what can change without dropping a session (the topic rules file, the server
certificate files, the log settings) and says what changed; the topic rules file is also read
again when it changes on disk. A real `certmq serve`, real paho-mqtt clients, real TLS."""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server_certificate_and_mode import new_server_pair, presented_serial

import raw_mqtt
from conftest import Instance, running_instance
from paho_client import PahoClient
from raw_mqtt import RawClient

NOT_AUTHORIZED = 0x87
RELOAD_WAIT = 10.0

ALLOW_TEMPERATURE = """
[[rule]]
permission = "allow"
topic = "plant/temperature/#"
"""
ALLOW_PRESSURE = """
[[rule]]
permission = "allow"
topic = "plant/pressure/#"
"""


class Watched:
    """The instance's log from a point on, and the waits on what it says."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.offset = len(instance.broker.log_file.read_text())

    def text(self) -> str:
        return self.instance.broker.log_file.read_text()[self.offset :]

    def wait_for(self, pattern: str, timeout: float = RELOAD_WAIT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(pattern, text):
                return text
            assert self.instance.broker.process.poll() is None, f"the broker exited\n{text}"
            time.sleep(0.05)
        raise AssertionError(f"the log did not say {pattern!r} within {timeout}s:\n{self.text()}")


def hangup(instance: Instance) -> str:
    """Send SIGHUP and wait for the reload to end; what the log said meanwhile."""
    watched = Watched(instance)
    instance.broker.process.send_signal(signal.SIGHUP)
    return watched.wait_for(r"SIGHUP: reload done|SIGHUP: the configuration was not reloaded")


def set_config(instance: Instance, section: str, key: str, value: str) -> None:
    """Set ``key`` of ``[section]`` in the instance's certmq.toml (written by init with every key)."""
    path = instance.broker.data_dir / "certmq.toml"
    text = path.read_text()
    start = text.index(f"[{section}]")
    end = text.find("\n[", start + 1)
    end = len(text) if end == -1 else end
    body, count = re.subn(rf"(?m)^{key} = .*?(?=\s+#|$)", f"{key} = {value}", text[start:end], count=1)
    assert count == 1, f"{section}.{key} is not in {path}"
    path.write_text(text[:start] + body + text[end:])


def publish_outcome(client: RawClient, topic: str) -> int:
    """Publish at QoS 1 and return the PUBACK's reason code (0: accepted)."""
    client.publish(topic, b"21.5", qos=1)
    return client.read_until(raw_mqtt.PUBACK).reason_code or 0


@pytest.fixture
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    with running_instance(tmp_path_factory) as running:
        yield running


def device(instance: Instance) -> RawClient:
    client = RawClient(instance.broker.host, instance.broker.tcp_port, version=5)
    client.connect(f"device-{uuid.uuid4().hex[:8]}")
    return client


def connected(instance: Instance) -> PahoClient:
    client = PahoClient(
        instance.broker.host, instance.broker.tcp_port, client_id=f"paho-{uuid.uuid4().hex[:8]}"
    )
    instance._clients.append(client)
    client.connect()
    return client


def monitor(instance: Instance) -> PahoClient:
    client = connected(instance)
    assert client.subscribe("plant/#", qos=1) == [1]
    return client


def test_sighup_reloads_the_configuration_and_keeps_every_session(instance: Instance) -> None:
    watcher = monitor(instance)
    sensor = device(instance)
    assert publish_outcome(sensor, "plant/pressure/1") == 0
    assert watcher.expect_message().topic == "plant/pressure/1"

    # Topic rules switched on, the log made more talkative, and a key that needs a restart.
    (instance.broker.data_dir / "rules.toml").write_text(ALLOW_TEMPERATURE)
    set_config(instance, "auth", "acl_file", '"rules.toml"')
    set_config(instance, "auth", "acl_default", '"deny"')
    set_config(instance, "log", "level", '"debug"')
    set_config(instance, "mqtt", "max_packet_size", "4096")
    said = hangup(instance)

    assert re.search(r"topic rules reloaded from \S+rules\.toml: 1 rules \(before: none\), default deny; "
                     r"applied to \d+ live connections", said), said  # fmt: skip
    assert "log level debug, format text (before: info, text)" in said
    assert (
        "mqtt.max_packet_size changed in the configuration but is not reloaded: it takes effect at the next start"
        in said
    )
    assert re.search(r"server certificate in \S+server\.pem: unchanged", said), said
    # Every session is still there, and the rules apply to them at once.
    watcher.assert_connected()
    assert publish_outcome(sensor, "plant/pressure/2") == NOT_AUTHORIZED
    assert publish_outcome(sensor, "plant/temperature/1") == 0
    assert watcher.expect_message().topic == "plant/temperature/1"
    assert watcher.drain() == []
    # The debug level is in force: a new connection is logged at debug level.
    watched = Watched(instance)
    late = connected(instance)
    watched.wait_for(rf"DEBUG\s+certmq\.connection: connected {late.client._client_id.decode()} ")

    sensor.close()
    assert instance.broker.stop() == 0, instance.broker.log_tail()


def test_a_configuration_that_does_not_load_changes_nothing(instance: Instance) -> None:
    sensor = device(instance)
    set_config(instance, "mqtt", "max_packet_size", '"large"')
    said = hangup(instance)
    assert "SIGHUP: the configuration was not reloaded, nothing changed: mqtt.max_packet_size" in said
    assert publish_outcome(sensor, "plant/pressure/1") == 0
    sensor.close()


@pytest.fixture
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """Topic rules in a file named by the environment: only temperatures, nothing by default."""
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(ALLOW_TEMPERATURE)
    with running_instance(
        tmp_path_factory, CERTMQ_AUTH_ACL_FILE=str(rules), CERTMQ_AUTH_ACL_DEFAULT="deny"
    ) as running:
        yield running


def rules_file(instance: Instance) -> Path:
    return Path(instance.broker.settings["CERTMQ_AUTH_ACL_FILE"])


def test_a_rules_file_changed_on_disk_applies_to_live_connections_within_seconds(guarded: Instance) -> None:
    sensor = device(guarded)
    assert publish_outcome(sensor, "plant/pressure/1") == NOT_AUTHORIZED
    assert publish_outcome(sensor, "plant/temperature/1") == 0

    watched = Watched(guarded)
    rules_file(guarded).write_text(ALLOW_PRESSURE)
    said = watched.wait_for(r"topic rules reloaded from", timeout=5)
    assert "changed on disk" in said and "SIGHUP" not in said
    assert publish_outcome(sensor, "plant/pressure/2") == 0
    assert publish_outcome(sensor, "plant/temperature/2") == NOT_AUTHORIZED
    sensor.close()


def test_a_broken_rules_file_is_refused_and_the_rules_in_use_stay(guarded: Instance) -> None:
    sensor = device(guarded)
    watched = Watched(guarded)
    rules_file(guarded).write_text('[[rule]]\npermission = "allow"\ntopic = "plant/#/x"\n')
    said = watched.wait_for(r"topic rules not reloaded")
    assert re.search(r"topic rules not reloaded, the rules in use stay: \S+rules\.toml: rule 1: topic "
                     r"'plant/#/x' is not a valid filter", said), said  # fmt: skip
    assert publish_outcome(sensor, "plant/temperature/1") == 0
    assert publish_outcome(sensor, "plant/pressure/1") == NOT_AUTHORIZED

    # SIGHUP reads it again, refuses it again, and changes nothing else.
    said = hangup(guarded)
    assert "topic rules not reloaded, the rules in use stay" in said
    assert publish_outcome(sensor, "plant/temperature/2") == 0

    # Once fixed, it is read at once.
    watched = Watched(guarded)
    rules_file(guarded).write_text(ALLOW_PRESSURE)
    watched.wait_for(r"topic rules reloaded from")
    assert publish_outcome(sensor, "plant/pressure/2") == 0
    sensor.close()


def test_sighup_reads_the_server_certificate_the_configuration_names(
    instance: Instance, tmp_path: Path
) -> None:
    client = PahoClient(
        "localhost", instance.broker.tls_port, client_id="tls-kept", ca_file=instance.broker.ca_file
    )
    instance._clients.append(client)
    client.connect()
    chain, key, serial = new_server_pair(instance, tmp_path / "next")
    assert presented_serial(instance) != serial

    # A certificate with somebody else's key is refused: the one in use stays.
    _, other_key, _ = new_server_pair(instance, tmp_path / "other")
    set_config(instance, "tls", "cert_file", f'"{chain}"')
    set_config(instance, "tls", "key_file", f'"{other_key}"')
    said = hangup(instance)
    assert "server certificate not reloaded, the one in use stays" in said
    assert presented_serial(instance) != serial

    set_config(instance, "tls", "key_file", f'"{key}"')
    said = hangup(instance)
    assert re.search(
        rf"server certificate reloaded from {re.escape(str(chain))}: CN=localhost, Sn {serial}", said
    ), said
    assert presented_serial(instance) == serial
    client.assert_connected()
