"""A device certificate holds at most ``mqtt.max_sessions_per_certificate`` sessions (10 by
default, docs/configuration.md "Limits"), online and offline, whatever client ids it sends: one
more is refused with 0x97 Quota exceeded (MQTT 3.1.1: 3, server unavailable) and the refusal is in
the decision log; other devices are not affected, resuming never counts as new, a session that
ends frees its place, and the count survives a restart."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from openssl_pki import Issued, make_ca, make_device
from paho.mqtt.packettypes import PacketTypes
from test_decision_procedure import device_sn_of

from conftest import Instance, running_instance
from paho_client import properties

QUOTA_EXCEEDED = 0x97
DEFAULT_LIMIT = 10
IDENTITY_SESSION_LIMIT = "identity-session-limit"
PERSISTENT = properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)


def open_session(instance: Instance, device: Issued, client_id: str) -> int:
    """``device`` connects with ``client_id`` asking for a persistent session and leaves; the
    CONNACK's reason code."""
    client = instance.device_client(device, client_id=client_id)
    result = client.connect(clean_start=False, props=PERSISTENT, expect_success=False)
    if result.reason_code == 0:
        client.disconnect()
    return result.reason_code


def end_session(instance: Instance, device: Issued, client_id: str) -> None:
    """A clean start with no session expiry: the session ends when the client disconnects."""
    client = instance.device_client(device, client_id=client_id)
    client.connect(clean_start=True)
    client.disconnect()


def mosquitto_sub_connect(
    instance: Instance, device: Issued, client_id: str
) -> subprocess.CompletedProcess[str]:
    """mosquitto_sub, MQTT 3.1.1, clean session off: asks for a persistent session."""
    mosquitto_sub = shutil.which("mosquitto_sub")
    assert mosquitto_sub, "mosquitto_sub not found: install Debian's mosquitto-clients package"
    return subprocess.run(
        [
            mosquitto_sub, "-h", "localhost", "-p", str(instance.broker.tls_port),
            "--cafile", str(instance.broker.ca_file), "--cert", str(device.chain), "--key", str(device.key),
            "-V", "mqttv311", "-i", client_id, "-c", "-t", f"limits/{client_id}", "-q", "1", "-E",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_a_device_certificate_holds_at_most_ten_sessions(mutual: Instance, tmp_path: Path) -> None:
    assert mutual.fleet_ca is not None
    tag = uuid.uuid4().hex[:6]
    device = make_device(tmp_path / "device", mutual.fleet_ca, f"gateway-{tag}")
    other = make_device(tmp_path / "other", mutual.fleet_ca, f"meter-{tag}")
    client_ids = [f"gateway-{tag}-{n}" for n in range(DEFAULT_LIMIT + 5)]

    assert [open_session(mutual, device, client_id) for client_id in client_ids] == (
        [0] * DEFAULT_LIMIT + [QUOTA_EXCEEDED] * 5
    )
    refused = mutual.device_client(device, client_id=client_ids[-1])
    result = refused.connect(clean_start=False, props=PERSISTENT, expect_success=False)
    assert result.reason_code == QUOTA_EXCEEDED
    assert "mqtt.max_sessions_per_certificate" in result.property("ReasonString", "")
    # MQTT 3.1.1 (mosquitto_sub): return code 3, server unavailable.
    old = mosquitto_sub_connect(mutual, device, f"gateway-{tag}-v311")
    assert old.returncode != 0 and "unavailable" in old.stderr.lower(), old.stderr

    # Another device is not affected; the device comes back to its sessions.
    assert open_session(mutual, other, f"meter-{tag}") == 0
    back = mutual.device_client(device, client_id=client_ids[3])
    assert back.connect(clean_start=False, props=PERSISTENT).session_present
    back.disconnect()
    assert mosquitto_sub_connect(mutual, device, client_ids[4]).returncode == 0  # -E: connect and exit

    # A session that ends frees its place, for one session only.
    end_session(mutual, device, client_ids[0])
    assert open_session(mutual, device, client_ids[DEFAULT_LIMIT]) == 0
    assert open_session(mutual, device, client_ids[DEFAULT_LIMIT + 1]) == QUOTA_EXCEEDED

    device_sn = device_sn_of(mutual, device)
    rows = mutual.decisions(reason=IDENTITY_SESSION_LIMIT, device_sn=device_sn)
    assert len(rows) == 5 + 1 + 1 + 1
    assert {(row["result"], row["ca_sn"], row["device_sn"]) for row in rows} == {
        ("deny", mutual.fleet_sn, device_sn)
    }
    assert {row["client_id"] for row in rows} == {*client_ids[DEFAULT_LIMIT:], f"gateway-{tag}-v311"}


@pytest.fixture
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    with running_instance(
        tmp_path_factory, CERTMQ_INSTANCE_AUTH_MODE="mutual", CERTMQ_AUTH_ANONYMOUS="false"
    ) as instance:
        instance.fleet_ca = make_ca(instance.work / "ca", "limits-ca")
        instance.fleet_sn = instance.register_ca(instance.fleet_ca, "limits")
        yield instance


def test_the_sessions_restored_after_a_restart_count(restartable: Instance, tmp_path: Path) -> None:
    assert restartable.fleet_ca is not None
    device = make_device(tmp_path / "device", restartable.fleet_ca, "gateway")
    for n in range(DEFAULT_LIMIT):
        assert open_session(restartable, device, f"gateway-{n}") == 0
    restartable.broker.restart()

    assert open_session(restartable, device, "gateway-new") == QUOTA_EXCEEDED
    back = restartable.device_client(device, client_id="gateway-7")
    assert back.connect(clean_start=False, props=PERSISTENT).session_present
    back.disconnect()
    end_session(restartable, device, "gateway-7")
    assert open_session(restartable, device, "gateway-new") == 0
