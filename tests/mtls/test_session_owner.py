"""A session belongs to the identity that created it (``auth.session_owner``, docs/configuration.md):
a device with a valid certificate of its own cannot resume another device's session by sending its
client id, nor knock it off; the audit log says why. And a device's delayed will goes out only if
its identity is still valid by then."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openssl_pki import Issued, make_ca, make_device
from paho.mqtt.packettypes import PacketTypes
from test_decision_procedure import device_sn_of

from conftest import Instance, start_instance
from paho_client import V5, V311, PahoClient, properties

CLIENT_IDENTIFIER_NOT_VALID = 0x85
OWNED_ELSEWHERE = "session-owned-by-another-identity"
PERSISTENT = properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)


def owned_session_with_queued_messages(
    instance: Instance, owner: Issued, publisher: Issued, client_id: str, version: int = V5
) -> list[bytes]:
    """``owner`` makes a persistent session for ``client_id`` and goes away; three QoS 1 messages
    are queued for it. Returns their payloads."""
    device = instance.device_client(owner, client_id=client_id, version=version, clean=version == V5)
    device.connect(props=PERSISTENT if version == V5 else None)
    assert device.subscribe(f"owned/{client_id}/#", qos=1) == [1]
    device.disconnect()
    sender = instance.device_client(publisher)
    sender.connect()
    payloads = [f"for the owner {n}".encode() for n in range(3)]
    for payload in payloads:
        sender.publish(f"owned/{client_id}/inbox", payload, qos=1)
    sender.disconnect()
    return payloads


def claim(instance: Instance, claimant: Issued, client_id: str, version: int = V5) -> PahoClient:
    """``claimant`` connects with ``client_id``, asking to resume its session."""
    client = instance.device_client(claimant, client_id=client_id, version=version, clean=version == V5)
    client.connect(clean_start=False, props=PERSISTENT if version == V5 else None, expect_success=False)
    return client


def payloads(client: PahoClient, count: int) -> list[bytes]:
    return [message.payload for message in client.expect_messages(count)]


@pytest.fixture
def devices(mutual: Instance, tmp_path: Path) -> tuple[Issued, Issued, Issued]:
    """Three devices of the fleet CA: the owner, another device, a publisher."""
    assert mutual.fleet_ca is not None
    return tuple(  # type: ignore[return-value]
        make_device(tmp_path / role, mutual.fleet_ca, f"{role}-{uuid.uuid4().hex[:6]}")
        for role in ("owner", "other", "publisher")
    )


def test_another_device_is_refused_and_the_owner_keeps_its_session(
    mutual: Instance, devices: tuple[Issued, Issued, Issued]
) -> None:
    owner, other, publisher = devices
    client_id = f"meter-{uuid.uuid4().hex[:6]}"
    queued = owned_session_with_queued_messages(mutual, owner, publisher, client_id)

    refused = claim(mutual, other, client_id).connect_result
    assert refused is not None and refused.reason_code == CLIENT_IDENTIFIER_NOT_VALID
    assert "another identity" in refused.property("ReasonString", "")
    # A clean start, which would discard the session, is refused just the same.
    wiper = mutual.device_client(other, client_id=client_id)
    assert wiper.connect(clean_start=True, expect_success=False).reason_code == CLIENT_IDENTIFIER_NOT_VALID

    resumed = mutual.device_client(owner, client_id=client_id)
    assert resumed.connect(clean_start=False, props=PERSISTENT).session_present
    assert payloads(resumed, 3) == queued

    # While the owner is connected, the other device's claim does not knock it off.
    assert claim(mutual, other, client_id).connect_result.reason_code == CLIENT_IDENTIFIER_NOT_VALID  # type: ignore[union-attr]
    sender = mutual.device_client(publisher)
    sender.connect()
    sender.publish(f"owned/{client_id}/inbox", b"still yours", qos=1)
    assert resumed.expect_message().payload == b"still yours"
    resumed.assert_connected()

    other_sn = device_sn_of(mutual, other)
    rows = mutual.decisions(reason=OWNED_ELSEWHERE, client_id=client_id)
    assert len(rows) == 3
    assert {(row["result"], row["device_sn"], row["ca_sn"]) for row in rows} == {
        ("deny", other_sn, mutual.fleet_sn)
    }
    listed = mutual.cli_json("decisions", "--reason", OWNED_ELSEWHERE, "--client-id", client_id)
    assert [row["device_sn"] for row in listed] == [other_sn] * 3


def test_mqtt311_clients_get_identifier_rejected(
    mutual: Instance, devices: tuple[Issued, Issued, Issued]
) -> None:
    owner, other, publisher = devices
    client_id = f"meter-{uuid.uuid4().hex[:6]}"
    queued = owned_session_with_queued_messages(mutual, owner, publisher, client_id, version=V311)
    mosquitto_sub = shutil.which("mosquitto_sub")
    assert mosquitto_sub, "mosquitto_sub not found: install Debian's mosquitto-clients package"
    refused = subprocess.run(
        [
            mosquitto_sub, "-h", "localhost", "-p", str(mutual.broker.tls_port), "--cafile", str(mutual.broker.ca_file),
            "--cert", str(other.chain), "--key", str(other.key), "-V", "mqttv311", "-i", client_id, "-c",
            "-t", f"owned/{client_id}/#", "-q", "1", "-C", "1", "-W", "5",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "identifier rejected" in refused.stderr.lower(), refused.stderr  # CONNACK return code 2
    assert refused.stdout == ""

    resumed = mutual.device_client(owner, client_id=client_id, version=V311, clean=False)
    assert resumed.connect().session_present
    assert payloads(resumed, 3) == queued


@pytest.fixture
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from instance_with(tmp_path_factory)


@pytest.fixture
def relaxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from instance_with(tmp_path_factory, CERTMQ_AUTH_SESSION_OWNER="any")


def instance_with(tmp_path_factory: pytest.TempPathFactory, **settings: str) -> Iterator[Instance]:
    broker, work = start_instance(
        tmp_path_factory,
        **{"CERTMQ_INSTANCE_AUTH_MODE": "mutual", "CERTMQ_AUTH_ANONYMOUS": "false", **settings},
    )
    instance = Instance(broker, work)
    instance.fleet_ca = make_ca(work / "ca", "owners-ca")
    instance.fleet_sn = instance.register_ca(instance.fleet_ca, "owners")
    yield instance
    instance.close()
    assert broker.stop() == 0, broker.log_tail()


def three_devices(instance: Instance, directory: Path) -> tuple[Issued, Issued, Issued]:
    assert instance.fleet_ca is not None
    return tuple(  # type: ignore[return-value]
        make_device(directory / role, instance.fleet_ca, role) for role in ("owner", "other", "publisher")
    )


def test_the_ownership_survives_a_restart(restartable: Instance, tmp_path: Path) -> None:
    owner, other, publisher = three_devices(restartable, tmp_path)
    queued = owned_session_with_queued_messages(restartable, owner, publisher, "meter-1")
    restartable.broker.restart()

    assert claim(restartable, other, "meter-1").connect_result.reason_code == CLIENT_IDENTIFIER_NOT_VALID  # type: ignore[union-attr]
    resumed = restartable.device_client(owner, client_id="meter-1")
    assert resumed.connect(clean_start=False, props=PERSISTENT).session_present
    assert payloads(resumed, 3) == queued


def test_the_relaxed_setting_lets_any_device_resume(relaxed: Instance, tmp_path: Path) -> None:
    owner, other, publisher = three_devices(relaxed, tmp_path)
    queued = owned_session_with_queued_messages(relaxed, owner, publisher, "meter-1")
    taker = claim(relaxed, other, "meter-1")
    assert taker.connect_result is not None and taker.connect_result.reason_code == 0
    assert taker.connect_result.session_present
    assert payloads(taker, 3) == queued


def test_a_delayed_will_goes_out_only_if_the_identity_is_still_valid(
    mutual: Instance, tmp_path: Path
) -> None:
    """Inactivated, or expired, during its will delay: the will is dropped (and counted)."""
    assert mutual.fleet_ca is not None
    topic = f"wills/{uuid.uuid4().hex[:8]}"
    watcher = mutual.device_client(make_device(tmp_path / "w", mutual.fleet_ca, "will-watcher"))
    watcher.connect()
    assert watcher.subscribe(f"{topic}/#", qos=1) == [1]
    # Expired before the wills' delay is over, and not before the device has connected.
    soon = (datetime.now(UTC) + timedelta(seconds=4)).strftime("%Y%m%d%H%M%SZ")
    devices = {
        "kept": make_device(tmp_path / "k", mutual.fleet_ca, "will-kept"),
        "inactivated": make_device(tmp_path / "i", mutual.fleet_ca, "will-inactivated"),
        "expired": make_device(tmp_path / "e", mutual.fleet_ca, "will-expired", not_after=soon),
    }
    dropped_before = wills_dropped(mutual)
    delayed = properties(PacketTypes.WILLMESSAGE, WillDelayInterval=5)
    for name, certificate in devices.items():
        device = mutual.device_client(certificate)
        device.will_set(f"{topic}/{name}", b"gone", qos=1, props=delayed)
        device.connect(props=PERSISTENT)
        device.drop_connection()
    inactivated_sn = device_sn_of(mutual, devices["inactivated"])
    mutual.api.post(f"/device-certificates/{mutual.fleet_sn}/{inactivated_sn}/inactivate").raise_for_status()

    will = watcher.expect_message(timeout=20)
    assert (will.topic, will.payload) == (f"{topic}/kept", b"gone")
    time.sleep(1)
    assert watcher.drain() == []
    assert wills_dropped(mutual) - dropped_before == 2


def wills_dropped(instance: Instance) -> float:
    return instance.broker.metrics()["certmq_wills_dropped_total"]


@pytest.fixture
def anonymous_beside_devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """Mutual mode with plain TCP kept open to anonymous clients, folding refusals per second."""
    yield from instance_with(
        tmp_path_factory,
        CERTMQ_AUTH_ANONYMOUS="true",
        CERTMQ_LISTENERS_TCP_IN_MUTUAL_MODE="true",
        CERTMQ_AUDIT_FOLD_WINDOW="1",
    )


def test_anonymous_claims_of_a_device_session_are_refused_and_folded(
    anonymous_beside_devices: Instance, tmp_path: Path
) -> None:
    """An anonymous client proves no identity: it cannot take a device's session, and its
    repeated claims cost the audit log a few counted rows, not one row each."""
    instance = anonymous_beside_devices
    assert instance.fleet_ca is not None
    owner = make_device(tmp_path / "owner", instance.fleet_ca, f"owner-{uuid.uuid4().hex[:6]}")
    client_id = f"meter-{uuid.uuid4().hex[:6]}"
    device = instance.device_client(owner, client_id=client_id)
    device.connect(props=PERSISTENT)
    device.disconnect()

    claims = 200
    for _ in range(claims):
        stranger = PahoClient(
            "127.0.0.1", instance.broker.tcp_port, client_id=client_id, version=V5, clean=False
        )
        result = stranger.connect(props=PERSISTENT, expect_success=False)
        assert result.reason_code == CLIENT_IDENTIFIER_NOT_VALID
    instance.broker.restart()
    rows = instance.decisions(reason=OWNED_ELSEWHERE, limit="1000")
    assert sum(row["count"] for row in rows) == claims
    assert len(rows) < claims / 10
    assert all(not row["identity_known"] and row["listener"] == "tcp" for row in rows)
    # The owner still has its session.
    assert (
        instance.device_client(owner, client_id=client_id)
        .connect(clean_start=False, props=PERSISTENT)
        .session_present
    )
