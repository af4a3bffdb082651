"""What the two Python samples share: their options, the Signature credentials of ApsaraMQ's
conventions, and one round trip (connect, subscribe, publish, wait for the message to come back).

one_way.py and mutual.py differ only in the TLS context they hand to run().
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
# paho-mqtt 2 reports an MQTT 3.1.1 CONNACK return code as the MQTT 5 reason code that means the same.
RETURN_CODE_OF_REASON = {132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


@dataclass
class Options:
    host: str
    port: int
    ca_file: str
    chain_file: str | None
    key_file: str | None
    access_key_id: str | None
    access_key_secret: str | None
    instance_id: str | None
    client_id: str
    topic: str
    timeout: float


class SampleError(Exception):
    """A failure to report in one line, with what to do about it."""


def parse_options(program: str, *, mutual: bool) -> Options:
    """Every option is a flag or an environment variable (the flag wins), as in every certmq sample."""
    parser = argparse.ArgumentParser(
        prog=program,
        description=(
            "Connect to certmq over TLS, subscribe to a topic, publish one message to it "
            "and wait for it to come back."
        ),
    )

    def option(flag: str, variable: str, help: str, default: str | None = None) -> None:
        value = os.environ.get(variable) or default
        shown = f" (default: {default})" if default else ""
        parser.add_argument(flag, default=value, metavar=variable, help=f"{help}{shown}")

    option("--host", "MQTT_HOST", "broker host name, as written in its certificate", "localhost")
    option("--port", "MQTT_PORT", "MQTT over TLS port", "8883")
    option("--ca-file", "MQTT_CA_FILE", "CA certificate that signed the broker's certificate (PEM)")
    if mutual:
        option("--chain-file", "MQTT_CHAIN_FILE", "device certificate followed by its CA certificate (PEM)")
        option("--key-file", "MQTT_KEY_FILE", "the device certificate's private key (PEM)")
    option("--access-key-id", "MQTT_ACCESS_KEY_ID", "AccessKeyId for Signature credentials")
    option("--access-key-secret", "MQTT_ACCESS_KEY_SECRET", "AccessKeySecret for Signature credentials")
    option("--instance-id", "MQTT_INSTANCE_ID", "instance id for Signature credentials")
    option("--client-id", "MQTT_CLIENT_ID", "MQTT client id, GroupID@@@DeviceID", "GID_demo@@@device-0001")
    option("--topic", "MQTT_TOPIC", "topic to subscribe and publish to", "demo/hello")
    option("--timeout", "MQTT_TIMEOUT", "seconds to wait for the whole round trip", "10")
    arguments = parser.parse_args()

    required = [("--ca-file", "MQTT_CA_FILE", arguments.ca_file)]
    if mutual:
        required += [
            ("--chain-file", "MQTT_CHAIN_FILE", arguments.chain_file),
            ("--key-file", "MQTT_KEY_FILE", arguments.key_file),
        ]
    for flag, variable, value in required:
        if not value:
            usage_error(f"{flag} (or {variable}) is required")
    credentials = [arguments.access_key_id, arguments.access_key_secret, arguments.instance_id]
    if any(credentials) and not all(credentials):
        usage_error("--access-key-id, --access-key-secret and --instance-id go together")
    try:
        port, timeout = int(arguments.port), float(arguments.timeout)
    except ValueError:
        usage_error("--port and --timeout are numbers")
    return Options(
        host=arguments.host,
        port=port,
        ca_file=arguments.ca_file,
        chain_file=getattr(arguments, "chain_file", None),
        key_file=getattr(arguments, "key_file", None),
        access_key_id=arguments.access_key_id,
        access_key_secret=arguments.access_key_secret,
        instance_id=arguments.instance_id,
        client_id=arguments.client_id,
        topic=arguments.topic,
        timeout=timeout,
    )


def usage_error(message: str) -> None:
    print(f"error: {message} (--help lists the options)", file=sys.stderr)
    sys.exit(2)


def signature_password(access_key_secret: str, client_id: str) -> str:
    """ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId))."""
    digest = hmac.new(access_key_secret.encode(), client_id.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def run(options: Options, make_context: Callable[[], ssl.SSLContext], mode: str) -> None:
    """Run the round trip and exit: 0 when the message came back, 1 with a one-line error otherwise."""
    try:
        round_trip(options, make_context, mode)
    except SampleError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def round_trip(options: Options, make_context: Callable[[], ssl.SSLContext], mode: str) -> None:
    try:
        context = make_context()
    except (OSError, ssl.SSLError) as error:
        raise SampleError(f"cannot load the TLS files: {error}") from None

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=options.client_id, protocol=mqtt.MQTTv311
    )
    client.tls_set_context(context)  # verifies the broker's chain and its name (context.check_hostname)
    if options.access_key_id and options.access_key_secret and options.instance_id:
        client.username_pw_set(
            f"Signature|{options.access_key_id}|{options.instance_id}",
            signature_password(options.access_key_secret, options.client_id),
        )
    payload = f"hello from the Python sample ({mode})"
    state: dict[str, str | bool] = {"connected": False, "received": False}

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, properties: object
    ) -> None:
        if reason.is_failure:
            state["error"] = refusal(RETURN_CODE_OF_REASON.get(reason.value, reason.value))
            return
        state["connected"] = True
        print(f"connected to {options.host}:{options.port} as {options.client_id} ({mode})")
        client.subscribe(options.topic, qos=1)

    def on_subscribe(
        client: mqtt.Client, userdata: object, mid: int, reasons: list, properties: object
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            state["error"] = f"the broker refused the subscription to {options.topic}"
            return
        print(f"subscribed to {options.topic}")
        client.publish(options.topic, payload, qos=1)
        print(f"published to {options.topic}: {payload}")

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        text = message.payload.decode(errors="replace")
        print(f"received on {message.topic}: {text}")
        if text == payload:
            state["received"] = True

    def on_disconnect(
        client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object
    ) -> None:
        if "error" in state or state["received"]:
            return
        if state["connected"]:
            state["error"] = f"the broker closed the connection ({reason})"
        else:
            state["error"] = closed_before_connack(mode)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect

    deadline = time.monotonic() + options.timeout
    client.connect_timeout = options.timeout
    address = f"{options.host}:{options.port}"
    try:
        client.connect(options.host, options.port, keepalive=30)
    except ssl.SSLCertVerificationError as error:
        raise SampleError(
            f"TLS handshake with {address} failed: {error.verify_message}{verify_hint(error)}"
        ) from None
    except ssl.SSLError as error:
        raise SampleError(
            f"TLS handshake with {address} failed: {error.reason or error}{handshake_hint(mode)}"
        ) from None
    except ConnectionRefusedError:
        raise SampleError(f"cannot connect to {address}: connection refused (is certmq running?)") from None
    except TimeoutError:
        raise SampleError(
            f"timed out after {options.timeout:g} s waiting for the broker to accept the connection"
        ) from None
    except OSError as error:
        raise SampleError(f"cannot connect to {address}: {error.strerror or error}") from None

    try:
        while not state["received"] and "error" not in state:
            if time.monotonic() > deadline:
                waiting = (
                    "the message to come back"
                    if state["connected"]
                    else "the broker to accept the connection"
                )
                raise SampleError(f"timed out after {options.timeout:g} s waiting for {waiting}")
            code = client.loop(timeout=0.2)
            if code not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
                state.setdefault("error", f"connection failed: {mqtt.error_string(code)}")
            elif code != mqtt.MQTT_ERR_SUCCESS and "error" not in state and not state["received"]:
                state["error"] = (
                    f"the broker closed the connection ({mqtt.error_string(code)})"
                    if state["connected"]
                    else closed_before_connack(mode)
                )
        if "error" in state:
            raise SampleError(str(state["error"]))
    finally:
        if client.is_connected():
            client.disconnect()


def refusal(code: int) -> str:
    text = CONNACK_REFUSALS.get(code, "unknown reason")
    hint = {
        4: ": check the AccessKey pair and the instance id",
        5: ": `certmq decisions --limit 5` on the broker says why",
    }.get(code, "")
    return f"the broker refused the connection: {text} (CONNACK return code {code}){hint}"


def closed_before_connack(mode: str) -> str:
    if mode == "mutual TLS":
        return (
            "the broker closed the connection before accepting it: it did not accept the device "
            "certificate (is its CA registered?); `certmq decisions --limit 5` on the broker says why"
        )
    return (
        "the broker closed the connection before accepting it: "
        "if it is in mutual mode, it wants a device certificate (use mutual.py)"
    )


def verify_hint(error: ssl.SSLCertVerificationError) -> str:
    if "mismatch" in (error.verify_message or ""):
        return " (connect with a --host the broker's certificate names, e.g. localhost)"
    return " (is --ca-file the CA that signed the broker's certificate, data/server-ca/ca.pem?)"


def handshake_hint(mode: str) -> str:
    if mode == "mutual TLS":
        return " (the broker may have refused the device certificate: is its CA registered?)"
    return ""
