"""Every route by which a client makes the broker publish, or receives from it, goes through the
topic rules (docs/configuration.md, "Topic authorization rules"), at the moment it takes effect.

One table lists the routes. Each row makes a client try its route on a topic the rules deny it,
with real clients (paho-mqtt, mosquitto_pub/sub) against `certmq serve` with an `auth.acl_file`,
and shows that nothing was delivered and nothing retained: a client allowed to read the topic
sees only a sentinel sent afterwards, and a client that subscribes afterwards gets no retained
message before the next sentinel. The rows that change the rules restart the broker on them.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes

from broker_process import RunningBroker, expect_failure_on_mosquitto, start_broker
from paho_client import V5, V311, PahoClient, properties

pytestmark = expect_failure_on_mosquitto("topic rules are certmq configuration")

NOT_AUTHORIZED = 0x87

RULES = """
# writer-*: may publish anywhere (but under $SYS/, where no client may)
[[rule]]
permission = "allow"
action = "publish"
topic = "#"
client_id = "writer-*"

# reader-*: may receive everything under routes/
[[rule]]
permission = "allow"
action = "subscribe"
topic = "routes/#"
client_id = "reader-*"

[[rule]]
permission = "allow"
action = "subscribe"
topic = "+/public/#"

[[rule]]
permission = "deny"
action = "all"
topic = "routes/denied/#"

[[rule]]
permission = "deny"
action = "subscribe"
topic = "$private/#"

[[rule]]
permission = "deny"
action = "all"
topic = "secret/#"

[[rule]]
permission = "deny"
action = "publish"
topic = "orders/#"
"""

# What readers watch: every topic a row's denied attempt could reach them on.
WATCHED = ("routes/#", "orders/#", "$SYS/forged/#")
SENTINEL = "routes/sentinel"


class Routes:
    """A broker with the rules above (``acl_default = "allow"``) and its clients by role."""

    def __init__(self, broker: RunningBroker, rules_file: Path) -> None:
        self.broker = broker
        self.rules_file = rules_file
        self.opened: list[PahoClient] = []

    def client(self, client_id: str, version: int = V5) -> PahoClient:
        client = PahoClient(self.broker.host, self.broker.tcp_port, client_id=client_id, version=version)
        self.opened.append(client)
        return client

    def connected(self, role: str, version: int = V5, client_id: str | None = None) -> PahoClient:
        client = self.client(client_id or new_id(role), version)
        client.connect()
        return client

    def reader(self) -> PahoClient:
        """A client allowed to read every watched topic, subscribed to them."""
        reader = self.connected("reader")
        for topic_filter in WATCHED:
            assert reader.subscribe(topic_filter, qos=2) == [2]
        return reader

    def received_before_sentinel(
        self, observer: PahoClient, topic: str = SENTINEL, sender: PahoClient | None = None
    ) -> list[str]:
        """Send a sentinel by an allowed route; the topics ``observer`` received before it.

        ``sender``: the client whose denied attempt it follows on the same connection, so that
        the broker has handled the attempt before it (a writer of its own otherwise)."""
        payload = f"sentinel-{uuid.uuid4().hex[:8]}".encode()
        (sender or self.connected("writer")).publish(topic, payload, qos=1)
        before = []
        while (message := observer.expect_message()).payload != payload:
            before.append(message.topic)
        assert message.topic == topic
        return before

    def sentinel(self, observer: PahoClient, topic: str = SENTINEL, sender: PahoClient | None = None) -> None:
        """The sentinel is the first thing ``observer`` receives: what was denied did not arrive."""
        assert self.received_before_sentinel(observer, topic, sender) == [], "a denied route delivered"

    def nothing_retained(self, but: tuple[str, ...] = ()) -> None:
        """A client that subscribes now gets no retained message on a watched topic (but ``but``)."""
        assert self.received_before_sentinel(self.reader()) == list(but), "a denied route retained"

    def decisions(self, reason: str) -> list[dict[str, Any]]:
        token = self.broker.init_info["admin_token"]
        response = httpx.get(
            f"http://{self.broker.host}:{self.broker.http_port}/api/v1/decisions",
            params={"reason": reason},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        response.raise_for_status()
        return list(response.json()["items"])

    def restart_with_rules(self, extra: str) -> None:
        """Put rules in force that deny more (``extra`` comes last), by a restart."""
        self.rules_file.write_text(RULES + extra)
        self.broker.restart()

    def close(self) -> None:
        for client in self.opened:
            try:
                client.close()
            except Exception:
                pass


def new_id(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:8]}"


def start_guarded(directory: Path) -> tuple[RunningBroker, Path]:
    rules_file = directory / "acl.toml"
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    rules_file.write_text(RULES)
    broker = start_broker(
        directory / "broker",
        {
            "CERTMQ_AUTH_ACL_FILE": str(rules_file),
            "CERTMQ_AUTH_ACL_DEFAULT": "allow",
            "CERTMQ_MQTT_SYS_INTERVAL": "0",
            # The clients here are anonymous: every refusal gets a row of its own, unfolded.
            "CERTMQ_AUDIT_FOLD_WINDOW": "0",
        },
    )
    return broker, rules_file


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, Path]]:
    broker, rules_file = start_guarded(tmp_path_factory.mktemp("routes"))
    yield broker, rules_file
    assert broker.stop() == 0, broker.log_tail()


# -- the routes --------------------------------------------------------------------------


def publish(qos: int, retain: bool = False) -> Callable[[Routes], None]:
    def attempt(routes: Routes) -> None:
        reader = routes.reader()
        device = routes.connected("device")
        # Not waiting for the acknowledgement: on MQTT 5 it says 0x87.
        device.publish(f"routes/denied/qos{qos}", b"forged", qos=qos, retain=retain, wait=False)
        routes.sentinel(reader, sender=device)
        routes.nothing_retained()

    return attempt


def mosquitto_client(
    routes: Routes, tool: str, client_id: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run Debian's mosquitto_pub or mosquitto_sub, MQTT 3.1.1, against the broker."""
    path = shutil.which(tool)
    assert path, f"{tool} not found: install Debian's mosquitto-clients package"
    command = [
        path,
        "-h",
        routes.broker.host,
        "-p",
        str(routes.broker.tcp_port),
        "-V",
        "mqttv311",
        "-i",
        client_id,
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, check=False)


def publish_qos2_with_mosquitto_pub(routes: Routes) -> None:
    reader = routes.reader()
    sent = mosquitto_client(
        routes, "mosquitto_pub", new_id("device"), "-q", "2", "-r", "-t", "routes/denied/pub", "-m", "forged"
    )
    assert sent.returncode == 0, sent.stderr  # MQTT 3.1.1 cannot say no: an ordinary acknowledgement
    routes.sentinel(reader)
    routes.nothing_retained()


def will_refused_at_connect(version: int, delay: int = 0) -> Callable[[Routes], None]:
    def attempt(routes: Routes) -> None:
        reader = routes.reader()
        device_id = new_id("device")
        device = routes.client(device_id, version)
        will_properties = None
        connect_properties = None
        if delay:
            will_properties = properties(PacketTypes.WILLMESSAGE, WillDelayInterval=delay)
            connect_properties = properties(PacketTypes.CONNECT, SessionExpiryInterval=60)
        device.will_set("routes/denied/will", b"gone", qos=1, retain=True, props=will_properties)
        refused = device.connect(props=connect_properties, expect_success=False)
        assert refused.reason_code == NOT_AUTHORIZED
        if version == V5:
            assert "routes/denied/will" in refused.property("ReasonString", "")
        recorded = [row for row in routes.decisions("will-topic-denied") if row["client_id"] == device_id]
        assert [row["result"] for row in recorded] == ["deny"]
        routes.sentinel(reader)
        routes.nothing_retained()

    return attempt


def will_refused_to_mosquitto_sub(routes: Routes) -> None:
    """MQTT 3.1.1: CONNACK return code 5, as mosquitto_sub reports it."""
    reader = routes.reader()
    refused = mosquitto_client(
        routes, "mosquitto_sub", new_id("device"), "-t", "routes/open", "-C", "1", "-W", "5",
        "--will-topic", "routes/denied/will", "--will-payload", "gone", "--will-qos", "1", "--will-retain",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "not authori" in refused.stderr.lower(), refused.stderr  # "Connection Refused: not authorised."
    routes.sentinel(reader)
    routes.nothing_retained()


PERSISTENT = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)


def offline_subscriber(routes: Routes, role: str, topic_filter: str) -> str:
    """The client id of a client gone offline with a persistent session subscribed to ``topic_filter``."""
    client_id = new_id(role)
    client = routes.client(client_id)
    client.connect(props=PERSISTENT)
    assert client.subscribe(topic_filter, qos=1) == [1]
    client.disconnect()
    return client_id


def resumed(routes: Routes, client_id: str) -> PahoClient:
    client = routes.client(client_id)
    assert client.connect(clean_start=False, props=PERSISTENT).session_present
    return client


def deny(action: str, topic: str) -> str:
    return f'\n[[rule]]\npermission = "deny"\naction = "{action}"\ntopic = "{topic}"\n'


def will_after_the_rules_change(routes: Routes) -> None:
    """A will allowed at CONNECT, published after a restart that brought rules denying it."""
    reader_id = offline_subscriber(routes, "reader", "routes/#")
    delayed = properties(PacketTypes.WILLMESSAGE, WillDelayInterval=1)
    for topic in ("routes/changing/will", "routes/kept/will"):
        device = routes.client(new_id("device"))
        device.will_set(topic, b"gone", qos=1, retain=True, props=delayed)
        device.connect(props=PERSISTENT)
    # The broker stops with the devices connected: their wills wait for their delay, saved.
    routes.restart_with_rules(deny("publish", "routes/changing/#"))

    # The will the new rules still allow came (queued while the reader was away); the other not.
    assert routes.received_before_sentinel(resumed(routes, reader_id)) == ["routes/kept/will"]
    routes.nothing_retained(but=("routes/kept/will",))


def subscription_after_the_rules_change(routes: Routes) -> None:
    """A subscription granted under the old rules gets only what the new ones let its client receive."""
    device_id = offline_subscriber(routes, "device", "routes/changing/#")
    routes.restart_with_rules(deny("subscribe", "routes/changing/secret/#"))

    writer = routes.connected("writer")
    writer.publish("routes/changing/secret/key", b"forged", qos=1)
    writer.publish("routes/changing/open/speed", b"42", qos=1)
    received = routes.received_before_sentinel(resumed(routes, device_id), "routes/changing/sentinel")
    assert received == ["routes/changing/open/speed"]


def shared_subscription(routes: Routes) -> None:
    device = routes.connected("device")
    assert device.subscribe("$share/group/routes/denied/#", qos=1) == [NOT_AUTHORIZED]
    assert device.subscribe(f"$share/group/{SENTINEL}", qos=1) == [1]
    writer = routes.connected("writer")
    writer.publish("routes/denied/shared", b"forged", qos=1)
    routes.sentinel(device, sender=writer)


def retained_on_subscribe(routes: Routes) -> None:
    """A retained message is handed out only to a subscriber that may receive its topic."""
    writer = routes.connected("writer")
    writer.publish("routes/denied/retained", b"kept for readers", qos=1, retain=True)
    writer.publish("$private/public/status", b"kept for nobody", qos=1, retain=True)
    device = routes.connected("device")
    assert device.subscribe("routes/#", qos=1) == [NOT_AUTHORIZED]  # a wildcard over a denied branch
    # `+/public/#` allows the device to read public branches; a first-level wildcard matches no
    # `$` topic, so it does not allow `$private/public/...`, which a later rule denies.
    assert device.subscribe("$private/public/#", qos=1) == [NOT_AUTHORIZED]
    assert device.subscribe(SENTINEL, qos=1) == [1]
    routes.sentinel(device)
    for topic in ("routes/denied/retained", "$private/public/status"):  # other rows watch routes/#
        writer.publish(topic, b"", qos=1, retain=True)


def point_to_point_publish(routes: Routes) -> None:
    reader_id = new_id("reader")
    reader = routes.connected("reader", client_id=reader_id)  # no subscription needed
    device = routes.connected("device")
    device.publish(f"orders/p2p/{reader_id}", b"forged", qos=1, wait=False)
    routes.sentinel(reader, f"routes/p2p/{reader_id}", sender=device)


def point_to_point_receive(routes: Routes) -> None:
    target = new_id("device")
    device = routes.connected("device", client_id=target)
    writer = routes.connected("writer")
    writer.publish(f"secret/p2p/{target}", b"not for the device", qos=1)
    routes.sentinel(device, f"routes/p2p/{target}", sender=writer)


def system_topic(routes: Routes) -> None:
    """No client publishes under $SYS/, not even one the rules (and acl_default) allow everything."""
    reader = routes.reader()
    writer = routes.connected("writer")
    for qos in (0, 1, 2):
        writer.publish("$SYS/forged/uptime", b"forged", qos=qos, retain=True, wait=False)
    routes.sentinel(reader, sender=writer)
    routes.nothing_retained()


@dataclass(frozen=True)
class Route:
    name: str
    attempt: Callable[[Routes], None]
    changes_rules: bool = False


ROUTES = [
    Route("publish-qos0", publish(0)),
    Route("publish-qos1", publish(1)),
    Route("publish-qos2", publish(2)),
    Route("publish-qos2-mqtt311-mosquitto_pub", publish_qos2_with_mosquitto_pub),
    Route("retained-publish", publish(1, retain=True)),
    Route("will-immediate-mqtt5", will_refused_at_connect(V5)),
    Route("will-immediate-mqtt311", will_refused_at_connect(V311)),
    Route("will-immediate-mqtt311-mosquitto_sub", will_refused_to_mosquitto_sub),
    Route("will-delayed", will_refused_at_connect(V5, delay=1)),
    Route("will-after-rules-change", will_after_the_rules_change, changes_rules=True),
    Route("shared-subscribe", shared_subscription),
    Route("retained-on-subscribe", retained_on_subscribe),
    Route("subscription-after-rules-change", subscription_after_the_rules_change, changes_rules=True),
    Route("p2p-publish", point_to_point_publish),
    Route("p2p-receive", point_to_point_receive),
    Route("sys-publish", system_topic),
]


@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_a_denied_route_delivers_nothing_and_retains_nothing(
    route: Route, shared_broker: tuple[RunningBroker, Path], tmp_path: Path
) -> None:
    if route.changes_rules:
        broker, rules_file = start_guarded(tmp_path)
    else:
        broker, rules_file = shared_broker
    routes = Routes(broker, rules_file)
    try:
        route.attempt(routes)
    finally:
        routes.close()
        if route.changes_rules:
            assert broker.stop() == 0, broker.log_tail()
