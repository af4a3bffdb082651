"""The number of sessions is bounded (docs/configuration.md, "Limits"): one identity cannot make the
broker hold more sessions than its limit by sending ever new client ids, and nobody can make it hold
more than mqtt.max_sessions. A real broker process; anonymous clients share one identity, and an
AccessKey (Signature credentials) is another. Certificate identities: tests/mtls/test_sessions_per_certificate.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes

import raw_mqtt
from broker_process import RunningBroker, expect_failure_on_mosquitto, start_broker
from paho_client import PahoClient, properties
from test_limits import MIB, metric, resident_bytes, subscribe_many

QUOTA_EXCEEDED = 0x97
SERVER_UNAVAILABLE = 3  # MQTT 3.1.1's nearest return code
PERSISTENT = {raw_mqtt.SESSION_EXPIRY_INTERVAL: 3600}
PERSISTENT_V5 = properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)
ANONYMOUS_LIMIT = 20
CLIENT_IDS = 1000
FILTERS = 100  # what each session subscribes to: the default max_subscriptions_per_client


def persistent_session(
    broker: RunningBroker, client_id: str, filters: list[str], version: int = 5
) -> raw_mqtt.Packet:
    """An anonymous client makes a persistent session subscribed to ``filters`` and leaves; its
    CONNACK."""
    client = raw_mqtt.RawClient(broker.host, broker.tcp_port, version=version, timeout=30)
    try:
        connack = client.connect(client_id, clean=False, properties=PERSISTENT if version == 5 else None)
        if connack.reason_code == 0:
            if filters:
                assert subscribe_many(client, filters) == [1] * len(filters)
            client.disconnect()
        return connack
    finally:
        client.close()


def signature_client(clients: Any, broker: RunningBroker, client_id: str) -> PahoClient:
    """A paho client with Signature credentials of the instance's first AccessKey."""
    info = broker.init_info
    secret = info["access_key_secret"].encode()
    password = base64.b64encode(hmac.new(secret, client_id.encode(), hashlib.sha1).digest()).decode()
    client = clients.paho(client_id=client_id)
    client.client.username_pw_set(f"Signature|{info['access_key_id']}|{info['instance_id']}", password)
    return client


@expect_failure_on_mosquitto("has no limit on the sessions of one identity")
def test_one_identity_cannot_multiply_its_sessions_and_memory_stays_bounded(broker_factory, clients, topic):
    """Anonymous clients (one identity) create persistent sessions of 100 subscriptions each under
    1000 client ids: 20 are kept, the others refused with 0x97, and the broker grows by what 20
    hold. Without the limit the 1000 sessions take some 50 MB."""
    broker = broker_factory(CERTMQ_MQTT_MAX_ANONYMOUS_SESSIONS=ANONYMOUS_LIMIT, CERTMQ_MQTT_SYS_INTERVAL=0)
    clients = clients.for_broker(broker)
    persistent_session(broker, f"{topic}-warm-up", [f"{topic}/warm-up/{n}" for n in range(FILTERS)])
    before = resident_bytes(broker)

    connacks = [
        persistent_session(broker, f"{topic}-{n}", [f"{topic}/{n}/{k}" for k in range(FILTERS)])
        for n in range(1, CLIENT_IDS)
    ]
    codes = [connack.reason_code for connack in connacks]
    kept = ANONYMOUS_LIMIT - 1  # the warm-up session holds a place too
    assert codes == [0] * kept + [QUOTA_EXCEEDED] * (CLIENT_IDS - 1 - kept)
    assert "mqtt.max_anonymous_sessions" in connacks[-1].properties[raw_mqtt.REASON_STRING]
    grown = resident_bytes(broker) - before
    assert grown < 16 * MIB, f"the broker grew by {grown / MIB:.0f} MiB for {kept} sessions"
    assert metric(broker, "certmq_sessions") == ANONYMOUS_LIMIT
    assert metric(broker, "certmq_sessions_over_limit_total") == CLIENT_IDS - 1 - kept
    assert metric(broker, "certmq_subscriptions") == ANONYMOUS_LIMIT * FILTERS

    # Another identity is not affected: an AccessKey has no limit of its own by default.
    other = signature_client(clients, broker, f"{topic}-access-key")
    assert other.connect(clean_start=False, props=PERSISTENT_V5).reason_code == 0
    other.disconnect()

    # The identity comes back to its sessions; MQTT 3.1.1 is refused a new one with return code 3.
    assert persistent_session(broker, f"{topic}-1", []).session_present
    assert persistent_session(broker, f"{topic}-1", [], version=4).session_present
    assert persistent_session(broker, f"{topic}-new", [], version=4).reason_code == SERVER_UNAVAILABLE

    # A session that ends frees its place: a clean start with no expiry ends it at disconnect.
    ending = raw_mqtt.RawClient(broker.host, broker.tcp_port)
    assert ending.connect(f"{topic}-1", clean=True).reason_code == 0
    ending.disconnect()
    ending.close()
    assert persistent_session(broker, f"{topic}-new", []).reason_code == 0
    assert persistent_session(broker, f"{topic}-newer", []).reason_code == QUOTA_EXCEEDED
    assert metric(broker, "certmq_sessions") == ANONYMOUS_LIMIT + 1  # and the AccessKey's


@expect_failure_on_mosquitto("has no limit on the number of sessions")
def test_the_broker_holds_no_more_than_max_sessions_of_all_identities(broker_factory, clients, topic):
    broker = broker_factory(
        CERTMQ_MQTT_MAX_SESSIONS=12, CERTMQ_MQTT_MAX_ANONYMOUS_SESSIONS=8, CERTMQ_MQTT_SYS_INTERVAL=0
    )
    clients = clients.for_broker(broker)
    for n in range(8):
        assert persistent_session(broker, f"{topic}-anonymous-{n}", []).reason_code == 0
    for n in range(4):
        client = signature_client(clients, broker, f"{topic}-key-{n}")
        assert client.connect(clean_start=False, props=PERSISTENT_V5).reason_code == 0
        client.disconnect()

    refused = signature_client(clients, broker, f"{topic}-key-4")
    result = refused.connect(clean_start=False, props=PERSISTENT_V5, expect_success=False)
    assert result.reason_code == QUOTA_EXCEEDED
    assert "mqtt.max_sessions" in result.property("ReasonString", "")
    assert persistent_session(broker, f"{topic}-anonymous-8", []).reason_code == QUOTA_EXCEEDED
    # Those that have a session come back to it.
    back = signature_client(clients, broker, f"{topic}-key-0")
    assert back.connect(clean_start=False, props=PERSISTENT_V5).session_present
    back.disconnect()

    # The refusal of the AccessKey is in the decision log, with its reason.
    rows = httpx.get(
        f"http://{broker.host}:{broker.http_port}/api/v1/decisions",
        params={"reason": "broker-session-limit", "client_id": f"{topic}-key-4"},
        headers={"Authorization": f"Bearer {broker.init_info['admin_token']}"},
        timeout=10,
    ).json()["items"]
    assert [(row["result"], row["client_id"]) for row in rows] == [("deny", f"{topic}-key-4")]
    assert metric(broker, "certmq_sessions") == 12
    assert metric(broker, "certmq_sessions_over_limit_total") == 2


# ---- every way a CONNECT makes a session ---------------------------------------------------------

FULL_LIMIT = 3


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker whose anonymous clients hold as many sessions as they may, ``full-0`` to ``full-2``:
    one persistent offline, one persistent online, one clean online."""
    running = start_broker(
        tmp_path_factory.mktemp("full"), {"CERTMQ_MQTT_MAX_ANONYMOUS_SESSIONS": FULL_LIMIT}
    )
    assert persistent_session(running, "full-0", []).reason_code == 0
    online = []
    for client_id, clean in (("full-1", False), ("full-2", True)):
        client = raw_mqtt.RawClient(running.host, running.tcp_port)
        assert (
            client.connect(client_id, clean=clean, properties=None if clean else PERSISTENT).reason_code == 0
        )
        online.append(client)
    yield running
    for client in online:
        client.close()
    assert running.stop() == 0, running.log_tail()


# version, client id ("" asks the broker to assign one), clean start / clean session, session expiry
NEW_SESSIONS = [
    pytest.param(5, "full-new", False, 3600, QUOTA_EXCEEDED, id="v5-persistent"),
    pytest.param(5, "full-new", True, 0, QUOTA_EXCEEDED, id="v5-clean-start-no-expiry"),
    pytest.param(5, "", True, 3600, QUOTA_EXCEEDED, id="v5-assigned-client-id"),
    pytest.param(4, "full-new", False, None, SERVER_UNAVAILABLE, id="v311-clean-session-off"),
    pytest.param(4, "full-new", True, None, SERVER_UNAVAILABLE, id="v311-clean-session-on"),
    pytest.param(4, "", True, None, SERVER_UNAVAILABLE, id="v311-empty-client-id"),
]


def connack_of(broker: RunningBroker, version: int, client_id: str, clean: bool, expiry: int | None) -> int:
    client = raw_mqtt.RawClient(broker.host, broker.tcp_port, version=version)
    try:
        properties = None if expiry is None else {raw_mqtt.SESSION_EXPIRY_INTERVAL: expiry}
        connack = client.connect(client_id, clean=clean, properties=properties)
        return connack.reason_code or 0
    finally:
        client.close()


@expect_failure_on_mosquitto("has no limit on the sessions of one identity")
@pytest.mark.parametrize(("version", "client_id", "clean", "expiry", "expected"), NEW_SESSIONS)
def test_every_way_of_making_a_new_session_is_refused_at_the_limit(
    full: RunningBroker, version: int, client_id: str, clean: bool, expiry: int | None, expected: int
) -> None:
    assert connack_of(full, version, client_id, clean, expiry) == expected


# Coming back to a session of one's own, offline or online (taken over), or starting it afresh.
RESUMED = [
    pytest.param(5, "full-0", False, 3600, id="v5-resume-offline"),
    pytest.param(4, "full-0", False, None, id="v311-resume-offline"),
    pytest.param(5, "full-1", False, 3600, id="v5-take-over-online"),
    pytest.param(5, "full-0", True, 3600, id="v5-clean-start-of-its-own"),
]


@pytest.mark.parametrize(("version", "client_id", "clean", "expiry"), RESUMED)
def test_a_session_of_ones_own_is_never_refused_at_the_limit(
    full: RunningBroker, version: int, client_id: str, clean: bool, expiry: int | None
) -> None:
    assert connack_of(full, version, client_id, clean, expiry) == 0
