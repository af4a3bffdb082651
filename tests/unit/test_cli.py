"""The ``certmq`` command: ``pki`` subcommands in process, ``serve`` as a real process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from certmq import pki
from certmq.broker.checkpoint_store import STATE_FILE_NAME, BrokerState, SqliteStateStore
from certmq.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict[str, str]:
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    result: dict[str, str] = json.loads(out)
    return result


def test_pki_commands_make_a_working_hierarchy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = run_json(capsys, "pki", "ca", "--cn", "Root", "--out", tmp_path / "root")
    intermediate = run_json(
        capsys, "pki", "ca", "--cn", "Intermediate", "--out", tmp_path / "int", "--issuer-dir", tmp_path / "root",
        "--key", "rsa", "--key-size", "3072", "--path-length", "0",
    )  # fmt: skip
    device = run_json(
        capsys, "pki", "device", "--ca-dir", tmp_path / "int", "--cn", "dev-1", "--out", tmp_path / "d"
    )
    server = run_json(
        capsys, "pki", "server", "--ca-dir", tmp_path / "root", "--cn", "mqtt.example.com", "--san", "10.0.0.1",
        "--out", tmp_path / "s",
    )  # fmt: skip
    verification = run_json(
        capsys,
        "pki",
        "verification",
        "--ca-dir",
        tmp_path / "int",
        "--code",
        "code-123",
        "--out",
        tmp_path / "v",
    )

    assert root["cert_file"] == str(tmp_path / "root" / "ca.pem")
    assert root["key_file"] == str(tmp_path / "root" / "ca.key")
    assert intermediate["subject"] == "CN=Intermediate"
    assert set(device) >= {
        "cert_file",
        "key_file",
        "chain_file",
        "sn",
        "fingerprint_sha256",
        "subject",
        "not_after",
    }
    assert verification["subject"] == "CN=code-123"
    for result in (root, intermediate, device):
        assert stat.S_IMODE(Path(result["key_file"]).stat().st_mode) == 0o600

    ca = pki.load_certificate(tmp_path / "int" / "ca.pem")
    device_certificate = pki.load_certificate(Path(device["cert_file"]))
    assert device["sn"] == pki.serial_hex(device_certificate)
    assert pki.load_certificates(Path(device["chain_file"])) == [device_certificate, ca]
    server_chain = pki.load_certificates(Path(server["cert_file"]))
    assert server_chain[1] == pki.load_certificate(tmp_path / "root" / "ca.pem")

    if shutil.which("openssl"):
        for args in (
            [
                "-CAfile",
                tmp_path / "root" / "ca.pem",
                "-untrusted",
                tmp_path / "int" / "ca.pem",
                device["cert_file"],
            ],
            ["-partial_chain", "-CAfile", tmp_path / "int" / "ca.pem", verification["cert_file"]],
            ["-CAfile", tmp_path / "root" / "ca.pem", "-verify_ip", "10.0.0.1", server["cert_file"]],
        ):
            done = subprocess.run(
                ["openssl", "verify", *map(str, args)], capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, done.stdout + done.stderr

    p12 = run_json(
        capsys, "pki", "p12", "--cert", device["chain_file"], "--key", device["key_file"],
        "--out", tmp_path / "dev.p12", "--password", "pw",
    )  # fmt: skip
    assert stat.S_IMODE(Path(p12["p12_file"]).stat().st_mode) == 0o600
    bundle = pkcs12.load_pkcs12((tmp_path / "dev.p12").read_bytes(), b"pw")
    assert bundle.cert is not None and bundle.cert.certificate == device_certificate
    assert [c.certificate for c in bundle.additional_certs] == [ca]


def test_pki_device_with_a_chosen_serial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "pki", "ca", "--cn", "CA", "--out", tmp_path / "ca")
    device = run_json(
        capsys,
        "pki",
        "device",
        "--ca-dir",
        tmp_path / "ca",
        "--cn",
        "d",
        "--out",
        tmp_path / "d",
        "--serial",
        "f2:69",
    )
    assert device["sn"] == "00f269"


def test_pki_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "pki", "ca", "--cn", "CA", "--out", tmp_path / "ca")
    before = (tmp_path / "ca" / "ca.key").read_bytes()
    status, _, err = run(capsys, "pki", "ca", "--cn", "CA", "--out", tmp_path / "ca")
    assert status == 1 and "exists; use --force" in err
    assert (tmp_path / "ca" / "ca.key").read_bytes() == before
    status, _, _ = run(capsys, "pki", "ca", "--cn", "CA", "--out", tmp_path / "ca", "--force")
    assert status == 0 and (tmp_path / "ca" / "ca.key").read_bytes() != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pki", "device", "--ca-dir", "{tmp}/nowhere", "--cn", "d", "--out", "{tmp}/d"],
            "cannot read certificate",
        ),
        (
            ["pki", "device", "--ca-dir", "{tmp}/leaf", "--cn", "d", "--out", "{tmp}/d"],
            "not a CA certificate",
        ),
        (["pki", "ca", "--cn", "CA", "--out", "{tmp}/x", "--key", "rsa", "--key-size", "1024"], "too small"),
        (["pki", "ca", "--cn", "x" * 65, "--out", "{tmp}/x"], "1 to 64 characters"),
        (
            ["pki", "device", "--ca-dir", "{tmp}/ca", "--cn", "d", "--out", "{tmp}/d", "--serial", "xyz"],
            "hexadecimal",
        ),
    ],
)
def test_pki_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run_json(capsys, "pki", "ca", "--cn", "CA", "--out", tmp_path / "ca")
    leaf = run_json(
        capsys, "pki", "device", "--ca-dir", tmp_path / "ca", "--cn", "leaf", "--out", tmp_path / "leaf"
    )
    Path(leaf["cert_file"]).rename(tmp_path / "leaf" / "ca.pem")
    Path(leaf["key_file"]).rename(tmp_path / "leaf" / "ca.key")
    status, _, err = run(capsys, *[arg.replace("{tmp}", str(tmp_path)) for arg in args])
    assert status == 1
    assert err.startswith("certmq: error: ") and message in err and "Traceback" not in err


def test_a_group_without_its_command_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki"]) == 2
    assert "usage: certmq pki" in capsys.readouterr().err


# --- serve --------------------------------------------------------------------------------------


def mqtt_connect(port: int) -> bytes:
    """Send an MQTT 3.1.1 CONNECT (clean session, no credentials) and return the reply's first bytes."""
    client_id = b"cli-test"
    variable_header = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable_header + payload
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(bytes([0x10, len(body)]) + body)
        return connection.recv(4)


@pytest.mark.parametrize("event_loop", ["asyncio", "auto"])
def test_serve_initialises_listens_and_stops_on_sigterm(tmp_path: Path, event_loop: str) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CERTMQ_")}
    environment |= {
        "CERTMQ_LISTENERS_TCP": "127.0.0.1:0",
        "CERTMQ_LISTENERS_TLS": "127.0.0.1:0",
        "CERTMQ_LISTENERS_WS": "",
        "CERTMQ_LISTENERS_WSS": "",
        "CERTMQ_LISTENERS_HTTP": "",
        "CERTMQ_AUTH_ANONYMOUS": "true",
        "CERTMQ_EVENT_LOOP": event_loop,
    }
    log_file = tmp_path / "serve.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "certmq", "serve", "--log-format", "json"],
            cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    try:
        listening: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "tls" not in listening:
            assert process.poll() is None, log_file.read_text()
            for line in log_file.read_text().splitlines():
                match = re.search(r"listening (\w+) on \w+://127\.0\.0\.1:(\d+)", json.loads(line)["message"])
                if match:
                    listening[match[1]] = int(match[2])
            time.sleep(0.1)
        assert set(listening) == {"tcp", "tls"}, log_file.read_text()
        assert mqtt_connect(listening["tcp"]) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, log_file.read_text()
    # The default data directory ./data was initialised first, and the CA path printed.
    assert (tmp_path / "data" / "instance.key").exists()
    assert str(tmp_path / "data" / "server-ca" / "ca.pem") in out
    messages = [json.loads(line)["message"] for line in log_file.read_text().splitlines()]
    assert any("server CA" in message for message in messages)
    assert messages[-1] == "stopped"


def test_serve_refuses_a_saved_state_it_cannot_read_and_leaves_it_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CERTMQ_")}
    environment |= {
        "CERTMQ_LISTENERS_TCP": "127.0.0.1:0",
        "CERTMQ_LISTENERS_TLS": "",
        "CERTMQ_LISTENERS_WS": "",
        "CERTMQ_LISTENERS_WSS": "",
        "CERTMQ_LISTENERS_HTTP": "",
    }
    subprocess.run([sys.executable, "-m", "certmq", "init", "--data-dir", data_dir], env=environment, check=True,
                   capture_output=True)  # fmt: skip
    state_file = data_dir / STATE_FILE_NAME
    store = SqliteStateStore(state_file)
    store.save(BrokerState(1.0, [], []))
    store.close()
    with sqlite3.connect(state_file) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    finished = subprocess.run(
        [sys.executable, "-m", "certmq", "serve", "--data-dir", data_dir],
        env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode == 1, finished.stderr
    assert f"{state_file} is in broker state format 99" in finished.stderr
    assert "Traceback" not in finished.stderr
    with sqlite3.connect(state_file) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchone() == (99,)
        assert raw.execute("SELECT saved_at FROM snapshot").fetchone() == (1.0,)
