"""The client samples (samples/README.md) run against a live certmq: each delivers a message end to end in
mutual and in one-way mode, and each fails with one clear line and a non-zero status when the
broker refuses it, the TLS handshake fails, nothing listens, or nothing answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import free_port
from conftest import Brokers, Run, Sample, credentials, run_program, topic_for


def assert_delivered(run: Run, sample: Sample, mode: str, topic: str, client_id: str, port: int) -> None:
    payload = sample.payload(mode)
    assert run.returncode == 0, run
    assert run.stdout.splitlines() == [
        f"connected to localhost:{port} as {client_id} ({'one-way TLS' if mode == 'one-way' else 'mutual TLS'})",
        f"subscribed to {topic}",
        f"published to {topic}: {payload}",
        f"received on {topic}: {payload}",
    ], run
    assert run.stderr == "", run


def assert_failed(run: Run, *fragments: str) -> str:
    assert run.returncode == 1, run
    line = run.error
    assert line.startswith("error: "), run
    for fragment in fragments:
        assert fragment in line, run
    return line


def test_mutual_tls_delivers_a_message(sample: Sample, brokers: Brokers) -> None:
    device = brokers.device()
    topic = topic_for(sample, "mutual")
    client_id = f"GID_samples@@@{sample.language}-mutual"
    port = brokers.mutual.broker.tls_port
    run = run_program(sample, "mutual", "--port", str(port), "--ca-file", str(brokers.mutual.broker.ca_file),
                      "--chain-file", str(device.chain), "--key-file", str(device.key),
                      "--client-id", client_id, "--topic", topic)  # fmt: skip
    assert_delivered(run, sample, "mutual", topic, client_id, port)
    # The device was registered on that first connection (step 6).
    decision = brokers.mutual.decisions(client_id=client_id)[0]
    assert (decision["result"], decision["reason"], decision["cn"]) == (
        "allow",
        "new-device",
        device.cert.stem,
    )


def test_mutual_tls_with_signature_credentials_from_the_environment(sample: Sample, brokers: Brokers) -> None:
    """Every option can come from an MQTT_* variable; in mutual mode credentials are optional and,
    when given, checked."""
    device = brokers.device()
    topic = topic_for(sample, "mutual-signature")
    client_id = f"GID_samples@@@{sample.language}-mutual-signature"
    info = brokers.mutual.broker.init_info
    environment = {
        "MQTT_PORT": str(brokers.mutual.broker.tls_port),
        "MQTT_CA_FILE": str(brokers.mutual.broker.ca_file),
        "MQTT_CHAIN_FILE": str(device.chain),
        "MQTT_KEY_FILE": str(device.key),
        "MQTT_ACCESS_KEY_ID": info["access_key_id"],
        "MQTT_ACCESS_KEY_SECRET": info["access_key_secret"],
        "MQTT_INSTANCE_ID": info["instance_id"],
        "MQTT_CLIENT_ID": client_id,
        "MQTT_TOPIC": topic,
    }
    run = run_program(sample, "mutual", environment=environment)
    assert_delivered(run, sample, "mutual", topic, client_id, brokers.mutual.broker.tls_port)

    environment["MQTT_ACCESS_KEY_SECRET"] = "not-the-secret"
    refused = run_program(sample, "mutual", environment=environment)
    assert assert_failed(refused) == (
        "error: the broker refused the connection: bad user name or password (CONNACK return code 4): "
        "check the AccessKey pair and the instance id"
    )


def test_one_way_tls_delivers_a_message_with_signature_credentials(sample: Sample, brokers: Brokers) -> None:
    topic = topic_for(sample, "one-way")
    client_id = f"GID_samples@@@{sample.language}-one-way"
    port = brokers.one_way.broker.tls_port
    run = run_program(sample, "one-way", "--port", str(port), "--ca-file", str(brokers.one_way_server_ca),
                      *credentials(brokers.one_way), "--client-id", client_id, "--topic", topic)  # fmt: skip
    assert_delivered(run, sample, "one-way", topic, client_id, port)


def test_one_way_tls_with_a_wrong_secret_is_refused(sample: Sample, brokers: Brokers) -> None:
    info = brokers.one_way.broker.init_info
    run = run_program(sample, "one-way", "--port", str(brokers.one_way.broker.tls_port),
                      "--ca-file", str(brokers.one_way_server_ca), "--access-key-id", info["access_key_id"],
                      "--access-key-secret", "not-the-secret", "--instance-id", info["instance_id"],
                      "--client-id", f"GID_samples@@@{sample.language}-wrong-secret")  # fmt: skip
    assert assert_failed(run) == (
        "error: the broker refused the connection: bad user name or password (CONNACK return code 4): "
        "check the AccessKey pair and the instance id"
    )


def test_an_inactive_device_is_refused(sample: Sample, brokers: Brokers) -> None:
    device = brokers.device()
    brokers.mutual.device_client(device).connect()  # registers it
    explained = brokers.mutual.api.post("/explain", json={"certificate_pem": device.pem}).json()
    brokers.mutual.cli("device", "inactivate", brokers.mutual.fleet_sn, explained["device_sn"])
    run = run_program(sample, "mutual", "--port", str(brokers.mutual.broker.tls_port),
                      "--ca-file", str(brokers.mutual.broker.ca_file), "--chain-file", str(device.chain),
                      "--key-file", str(device.key), "--client-id", f"GID_samples@@@{sample.language}-inactive")  # fmt: skip
    assert assert_failed(run) == (
        "error: the broker refused the connection: not authorized (CONNACK return code 5): "
        "`certmq decisions --limit 5` on the broker says why"
    )
    decision = brokers.mutual.decisions(device_sn=explained["device_sn"])[0]
    assert (decision["result"], decision["reason"]) == ("deny", "device-inactive")


def test_a_device_of_an_unregistered_ca_is_refused(sample: Sample, brokers: Brokers) -> None:
    stranger = brokers.stranger()
    run = run_program(sample, "mutual", "--port", str(brokers.mutual.broker.tls_port),
                      "--ca-file", str(brokers.mutual.broker.ca_file), "--chain-file", str(stranger.chain),
                      "--key-file", str(stranger.key), "--client-id", f"GID_samples@@@{sample.language}-stranger")  # fmt: skip
    # With TLS 1.3 the handshake completes on the client's side before the broker refuses the
    # certificate, so most clients see a closed connection; an alert is as good.
    line = assert_failed(run, "device certificate", "is its CA registered?")
    assert line.startswith(
        ("error: the broker closed the connection before accepting it: ", "error: TLS handshake with ")
    ), run


def test_one_way_client_on_a_mutual_broker_is_told_to_present_a_certificate(
    sample: Sample, brokers: Brokers
) -> None:
    run = run_program(sample, "one-way", "--port", str(brokers.mutual.broker.tls_port),
                      "--ca-file", str(brokers.mutual.broker.ca_file), *credentials(brokers.mutual),
                      "--client-id", f"GID_samples@@@{sample.language}-no-certificate")  # fmt: skip
    line = assert_failed(run)
    assert line.startswith(
        "error: the broker closed the connection before accepting it: if it is in mutual mode, "
        "it wants a device certificate (use "
    ), run


@pytest.mark.parametrize("mode", ["one-way", "mutual"])
def test_a_server_not_signed_by_the_ca_file_fails_the_handshake(
    sample: Sample, brokers: Brokers, mode: str
) -> None:
    device = brokers.device()
    tls_files = ["--chain-file", str(device.chain), "--key-file", str(device.key)] if mode == "mutual" else []
    # The one-way broker's certificate is signed by another CA than the mutual broker's.
    run = run_program(sample, mode, "--port", str(brokers.one_way.broker.tls_port),
                      "--ca-file", str(brokers.mutual.broker.ca_file), *tls_files, *credentials(brokers.one_way),
                      "--client-id", f"GID_samples@@@{sample.language}-wrong-ca")  # fmt: skip
    assert_failed(run, f"TLS handshake with localhost:{brokers.one_way.broker.tls_port} failed", "--ca-file")


@pytest.mark.parametrize("mode", ["one-way", "mutual"])
def test_a_server_certificate_for_another_name_fails_the_handshake(
    sample: Sample, brokers: Brokers, mode: str
) -> None:
    device = brokers.device()
    tls_files = ["--chain-file", str(device.chain), "--key-file", str(device.key)] if mode == "mutual" else []
    # The one-way broker's certificate names localhost only, not 127.0.0.1.
    run = run_program(sample, mode, "--host", "127.0.0.1", "--port", str(brokers.one_way.broker.tls_port),
                      "--ca-file", str(brokers.one_way_server_ca), *tls_files, *credentials(brokers.one_way),
                      "--client-id", f"GID_samples@@@{sample.language}-wrong-name")  # fmt: skip
    assert_failed(run, f"TLS handshake with 127.0.0.1:{brokers.one_way.broker.tls_port} failed", "--host")


def test_nothing_listening_is_a_clear_error(sample: Sample, brokers: Brokers) -> None:
    port = free_port()
    run = run_program(sample, "one-way", "--port", str(port), "--ca-file", str(brokers.one_way_server_ca))
    assert (
        assert_failed(run)
        == f"error: cannot connect to localhost:{port}: connection refused (is certmq running?)"
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_broker_that_never_answers_times_out(sample: Sample, brokers: Brokers, silent_server: int) -> None:
    # It gives up by itself, after its --timeout of 2 s rather than a default of its library's.
    run = run_program(sample, "one-way", "--host", "127.0.0.1", "--port", str(silent_server),
                      "--ca-file", str(brokers.one_way_server_ca), "--timeout", "2", exits_within=15)  # fmt: skip
    assert assert_failed(run) == "error: timed out after 2 s waiting for the broker to accept the connection"


def test_a_missing_option_is_a_usage_error(sample: Sample, tmp_path: Path) -> None:
    run = run_program(sample, "mutual", "--ca-file", str(tmp_path / "ca.pem"))
    assert run.returncode == 2, run
    assert run.error == "error: --chain-file (or MQTT_CHAIN_FILE) is required (--help lists the options)"
