"""paho-mqtt 2.x (callback API version 2) wrapped so that a test reads like what a user sees:
connect, subscribe, publish, and wait (with a timeout) for what arrives."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 5.0  # seconds a test waits for something the broker should do promptly

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


def properties(packet_type: int, **values: Any) -> Properties:
    """Build paho Properties, e.g. ``properties(PacketTypes.PUBLISH, MessageExpiryInterval=5)``."""
    props = Properties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def reason(packet_type: int, code: int) -> ReasonCode:
    return ReasonCode(packet_type, identifier=code)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any  # paho Properties on 5.0, None on 3.1.1
    arrived: float

    def property(self, name: str, default: Any = None) -> Any:
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


@dataclass
class ConnectResult:
    reason_code: int
    session_present: bool
    properties: Any

    def property(self, name: str, default: Any = None) -> Any:
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


class PahoClient:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        version: int = V5,
        transport: str = "tcp",
        ca_file: Path | None = None,
        clean: bool = True,
        client_certificate: tuple[Path, Path] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.version = version
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=version,
            transport=transport,  # type: ignore[arg-type]
            clean_session=clean if version != V5 else None,
            reconnect_on_failure=False,
        )
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if ca_file is not None and tls_context is None:
            # The certificate is verified against ``host``: pass "localhost" for TLS.
            tls_context = ssl.create_default_context(cafile=str(ca_file))
            if client_certificate is not None:
                # Mutual TLS: the device presents its chain (certificate + CA) and key.
                chain, key = client_certificate
                tls_context.load_cert_chain(str(chain), str(key))
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.history: list[Received] = []
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._lock = threading.Lock()
        self.connect_result: ConnectResult | None = None
        self.disconnect_reason: ReasonCode | None = None
        self.disconnect_properties: Any = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._suback_event = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe

    # ---- callbacks -----------------------------------------------------------------------

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: ReasonCode, props: Any
    ) -> None:
        self.connect_result = ConnectResult(reason_code.value, bool(flags.session_present), props)
        self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: ReasonCode, props: Any
    ) -> None:
        self.disconnect_reason = reason_code
        self.disconnect_properties = props
        self._disconnected.set()
        with self._suback_event:  # an acknowledgement awaited now will not come
            self._suback_event.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = Received(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            properties=getattr(message, "properties", None) if self.version == V5 else None,
            arrived=time.monotonic(),
        )
        with self._lock:
            self.history.append(received)
        self.messages.put(received)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: list[ReasonCode], props: Any
    ) -> None:
        with self._suback_event:
            self._subacks[mid] = list(reason_codes)
            self._suback_event.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, props: Any) -> None:
        with self._suback_event:
            self._subacks[mid] = list(reason_codes) if isinstance(reason_codes, list) else []
            self._suback_event.notify_all()

    def _wait_ack(self, mid: int, what: str) -> list[int]:
        deadline = time.monotonic() + WAIT
        with self._suback_event:
            while mid not in self._subacks:
                if self._disconnected.is_set():
                    raise AssertionError(f"disconnected (reason: {self.disconnect_reason}) before the {what}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {WAIT}s")
                self._suback_event.wait(remaining)
            return [code.value for code in self._subacks.pop(mid)]

    # ---- actions -------------------------------------------------------------------------

    def will_set(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, props: Properties | None = None
    ) -> None:
        self.client.will_set(topic, payload, qos, retain, props)

    def connect(
        self,
        keepalive: int = 30,
        clean_start: bool = True,
        props: Properties | None = None,
        expect_success: bool = True,
    ) -> ConnectResult:
        self._connected.clear()
        self._disconnected.clear()
        self.client.connect_async(
            self.host,
            self.port,
            keepalive=keepalive,
            clean_start=clean_start if self.version == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self.client.loop_start()
        if not self._connected.wait(WAIT):
            raise AssertionError(f"no CONNACK within {WAIT}s (disconnect reason: {self.disconnect_reason})")
        assert self.connect_result is not None
        if expect_success:
            assert self.connect_result.reason_code == 0, f"connection refused: {self.connect_result}"
        return self.connect_result

    def subscribe(
        self,
        topic: str,
        qos: int = 1,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        props: Properties | None = None,
    ) -> list[int]:
        """Subscribe and wait for SUBACK; returns the granted QoS / reason codes."""
        if self.version == V5:
            options = SubscribeOptions(
                qos=qos,
                noLocal=no_local,
                retainAsPublished=retain_as_published,
                retainHandling=retain_handling,
            )
            result, mid = self.client.subscribe(topic, options=options, properties=props)
        else:
            result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {result}"
        return self._wait_ack(mid, f"SUBACK for {topic!r}")

    def unsubscribe(self, topic: str) -> list[int]:
        """Unsubscribe and wait for UNSUBACK; returns its reason codes (empty on 3.1.1)."""
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {result}"
        return self._wait_ack(mid, f"UNSUBACK for {topic!r}")

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        props: Properties | None = None,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos, retain, props)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait and qos > 0:
            info.wait_for_publish(WAIT)
            assert info.is_published(), f"QoS {qos} publish to {topic!r} not acknowledged within {WAIT}s"
        return info

    def expect_message(self, timeout: float = WAIT, topic: str | None = None) -> Received:
        """The next message (on ``topic`` if given, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self.messages.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(
                    f"no message{' on ' + repr(topic) if topic else ''} within {timeout}s; "
                    f"received so far: {[(m.topic, m.payload) for m in self.history]}"
                ) from None
            if topic is None or message.topic == topic:
                return message

    def expect_messages(self, count: int, timeout: float = WAIT) -> list[Received]:
        return [self.expect_message(timeout) for _ in range(count)]

    def drain(self) -> list[Received]:
        """Messages that have arrived and not been read yet."""
        found = []
        while True:
            try:
                found.append(self.messages.get_nowait())
            except queue.Empty:
                return found

    def disconnect(self, reason_code: int | None = None, props: Properties | None = None) -> None:
        """A normal DISCONNECT (with a reason code on 5.0 if given)."""
        code = reason(PacketTypes.DISCONNECT, reason_code) if reason_code is not None else None
        self.client.disconnect(reasoncode=code, properties=props)
        self._disconnected.wait(WAIT)
        self.client.loop_stop()

    def drop_connection(self) -> None:
        """Close the network connection without DISCONNECT, as a crashed device would."""
        sock = self.client.socket()
        assert sock is not None, "not connected"
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._disconnected.wait(WAIT)
        self.client.loop_stop()

    def wait_disconnected(self, timeout: float = WAIT) -> ReasonCode | None:
        if not self._disconnected.wait(timeout):
            raise AssertionError(f"still connected after {timeout}s")
        return self.disconnect_reason

    def assert_connected(self) -> None:
        """The session is alive now, as the broker sees it: it answers a request on this connection.

        Sampling ``is_connected`` would only say that no DISCONNECT has been read yet. The request
        is an UNSUBSCRIBE of a filter never subscribed: it changes nothing and needs no permission,
        and an UNSUBACK comes back only if the broker still serves the connection."""
        self.unsubscribe(f"certmq-tests/never-subscribed/{uuid.uuid4().hex}")

    def close(self) -> None:
        """Best-effort cleanup at the end of a test."""
        try:
            if self.client.is_connected():
                self.client.disconnect()
                self._disconnected.wait(1.0)
        finally:
            self.client.loop_stop()
