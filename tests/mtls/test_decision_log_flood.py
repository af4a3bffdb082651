"""A stranger floods a real certmq with refused connections while known devices come and go:
the decision log keeps every decision of the known devices, one row each, and only a few counted
rows for the stranger (docs/registry.md, "Retention and folding")."""

from __future__ import annotations

import re
import socket
import ssl
import struct
import time
import uuid
from pathlib import Path

import httpx
import pytest
from openssl_pki import make_ca, make_device

from certmq.registry.folding import FOLDED_TEXT_LIMIT
from certmq.registry.pending import TEXT_LIMIT
from conftest import Instance, start_instance
from paho_client import PahoClient

FOLD_WINDOW = 2  # seconds, so that a flood of a few seconds spans several windows
NOT_AUTHORIZED_5 = 0x87
BAD_USER_NAME_OR_PASSWORD_5 = 0x86


def _string(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def bad_credentials_connect(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with Signature credentials of an AccessKey that does not exist."""
    body = (
        _string(b"MQTT")
        + bytes([4, 0xC2])  # username, password, clean session
        + struct.pack("!H", 60)
        + _string(client_id.encode())
        + _string(b"Signature|LTAI-no-such-key|mqtt-somewhere")
        + _string(b"bm90IGEgc2lnbmF0dXJl")
    )
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def flood_bad_credentials(port: int, attempts: int) -> int:
    """Connect, send a CONNECT with wrong credentials, read the refusal, hang up; ``attempts``
    times. Returns how many refusals (CONNACK return code 4 or 5) came back."""
    refused = 0
    for n in range(attempts):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(bad_credentials_connect(f"stranger-{n}"))
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    break
                connack += chunk
            refused += connack[:2] == b"\x20\x02" and connack[3] in (4, 5)
    return refused


def handshakes_without_certificate(instance: Instance, attempts: int) -> None:
    """TLS connections that present no client certificate, which mutual mode refuses."""
    context = instance.tls_context(None)
    for _ in range(attempts):
        try:
            with (
                socket.create_connection(("127.0.0.1", instance.broker.tls_port), timeout=5) as plain,
                context.wrap_socket(plain, server_hostname="localhost") as sock,
            ):
                sock.sendall(bad_credentials_connect("no-certificate"))
                sock.recv(4)
        except (ssl.SSLError, OSError):
            pass


def folded_metric(instance: Instance) -> dict[str, int]:
    text = httpx.get(f"{instance.url}/metrics", timeout=10).text
    return {
        reason: int(float(value))
        for reason, value in re.findall(
            r'^certmq_decisions_folded_total\{reason="([^"]+)"\} (\S+)$', text, re.M
        )
    }


@pytest.fixture
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    broker, work = start_instance(
        tmp_path_factory,
        CERTMQ_INSTANCE_AUTH_MODE="mutual",
        CERTMQ_AUTH_ANONYMOUS="false",
        CERTMQ_LISTENERS_TCP_IN_MUTUAL_MODE="true",
        CERTMQ_AUDIT_FOLD_WINDOW=str(FOLD_WINDOW),
    )
    instance = Instance(broker, work)
    yield instance
    instance.close()
    assert broker.stop() == 0, broker.log_tail()


def test_a_strangers_flood_costs_a_few_counted_rows_and_every_known_decision_is_kept(
    flooded: Instance, tmp_path: Path
) -> None:
    ca = make_ca(flooded.work / "fleet", "fleet-ca")
    ca_sn = flooded.register_ca(ca, "fleet")
    revoked = make_device(tmp_path / "revoked", ca, f"revoked-{uuid.uuid4().hex[:6]}")
    allowed = make_device(tmp_path / "allowed", ca, f"allowed-{uuid.uuid4().hex[:6]}")
    first = flooded.device_client(revoked, client_id="revoked")
    first.connect()
    first.disconnect()
    revoked_sn = flooded.decisions(client_id="revoked")[0]["device_sn"]
    flooded.cli("device", "inactivate", ca_sn, revoked_sn)

    rounds, per_round, handshakes = 3, 1000, 50
    started = time.monotonic()
    refused = 0
    for _ in range(rounds):
        refused += flood_bad_credentials(flooded.broker.tcp_port, per_round)
        handshakes_without_certificate(flooded, handshakes)
        # A known device refused, and one allowed, in the middle of the flood.
        result = flooded.device_client(revoked, client_id="revoked").connect(expect_success=False)
        assert result.reason_code == NOT_AUTHORIZED_5
        client = flooded.device_client(allowed, client_id="allowed")
        client.connect()
        client.disconnect()
    elapsed = time.monotonic() - started
    assert refused == rounds * per_round

    folded = folded_metric(flooded)
    # A clean stop writes the windows still open; the log is read back after the restart.
    flooded.broker.restart()
    log = flooded.decisions(limit="1000")

    strangers = [row for row in log if row["reason"] == "bad-credentials"]
    assert sum(row["count"] for row in strangers) == rounds * per_round
    windows = int(elapsed // FOLD_WINDOW) + 2
    assert len(strangers) <= 2 * windows, f"{len(strangers)} rows for {rounds * per_round} refusals"
    assert len(strangers) < rounds * per_round / 20
    # audit.fold_window reached the broker: windows closed during the flood, not only at the stop.
    assert elapsed < 2 * FOLD_WINDOW or len(strangers) > 2
    assert all(not row["identity_known"] and row["listener"] == "tcp" for row in strangers)
    folded_rows = [row for row in strangers if row["peer"] == "127.0.0.1"]
    assert folded_rows, "no folded row"
    assert all(row["first_seen"] <= row["last_seen"] == row["time"] for row in folded_rows)
    assert folded.get("bad-credentials") == sum(row["count"] for row in folded_rows)

    no_certificate = [row for row in log if row["reason"] == "no-client-certificate"]
    assert sum(row["count"] for row in no_certificate) == rounds * handshakes
    assert len(no_certificate) <= 2 * windows
    assert folded.get("no-client-certificate") == sum(
        row["count"] for row in no_certificate if row["peer"] == "127.0.0.1"
    )

    # The known devices: every decision a row of its own.
    assert [(row["result"], row["reason"], row["count"]) for row in log if row["client_id"] == "revoked"] == [
        ("deny", "device-inactive", 1)
    ] * rounds + [("allow", "new-device", 1)]
    assert [(row["result"], row["count"]) for row in log if row["client_id"] == "allowed"] == [
        ("allow", 1)
    ] * rounds
    assert all(row["identity_known"] for row in log if row["client_id"] in ("revoked", "allowed"))


def test_a_client_id_of_60_kb_is_kept_cut_with_a_marker_that_says_so(
    flooded: Instance, tmp_path: Path
) -> None:
    """MQTT allows a client id of 65,535 bytes, within the 1 MiB packets certmq takes: the log keeps
    its first characters and a marker with its length (docs/registry.md, "What a row holds")."""
    ca = make_ca(flooded.work / "long", "long-ca")
    flooded.register_ca(ca, "long")
    device = make_device(tmp_path / "device", ca, f"long-{uuid.uuid4().hex[:6]}")
    client = flooded.device_client(device, client_id="L" * 61_440)
    client.connect()
    client.disconnect()
    for _ in range(3):  # a stranger: the first refusal is written at once, the others folded
        stranger = PahoClient("127.0.0.1", flooded.broker.tcp_port, client_id="S" * 61_440)
        stranger.client.username_pw_set("Signature|LTAI-no-such-key|mqtt-somewhere", "bm90IGEgc2lnbmF0dXJl")
        assert stranger.connect(expect_success=False).reason_code == BAD_USER_NAME_OR_PASSWORD_5
        stranger.close()
    flooded.broker.restart()  # a clean stop writes the window still open

    log = flooded.decisions(limit="1000")
    (known,) = [row for row in log if row["client_id"].startswith("L")]
    assert (known["result"], known["identity_known"]) == ("allow", True)
    assert known["client_id"] == "L" * (TEXT_LIMIT - 28) + "…[cut from 61440 characters]"
    strangers = sorted((row for row in log if row["client_id"].startswith("S")), key=lambda row: row["count"])
    assert [(row["count"], len(row["client_id"])) for row in strangers] == [
        (1, TEXT_LIMIT),
        (2, FOLDED_TEXT_LIMIT),
    ]
    assert all(row["client_id"].endswith("…[cut from 61440 characters]") for row in strangers)
