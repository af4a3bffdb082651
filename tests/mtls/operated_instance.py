"""A running certmq and the ways an operator and its devices talk to it: the CLI, the REST API,
paho-mqtt devices presenting certificates made by the openssl command line."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from openssl_pki import Issued, make_verification

from broker_process import RunningBroker
from certmq.auth.credentials import signature_password, signature_username
from certmq.pki import generate_key, issue_server_certificate, load_certified_key, serial_hex
from paho_client import V5, PahoClient
from raw_mqtt import RawClient


class Instance:
    """A running certmq and the ways an operator talks to it: the CLI and the REST API."""

    def __init__(self, broker: RunningBroker, work: Path) -> None:
        self.broker = broker
        self.work = work
        self.token = broker.init_info["admin_token"]
        self.url = f"http://{broker.host}:{broker.http_port}"
        # The CA registered by the `mutual` fixture.
        self.fleet_ca: Issued | None = None
        self.fleet_sn = ""
        self.api = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        self._clients: list[PahoClient] = []

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a `certmq` command against this instance, as an operator would."""
        command = [sys.executable, "-m", "certmq", *args, "--url", self.url, "--token", self.token]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"certmq {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def console_text(self, path: str) -> str:
        """A console page as its text, after logging in with the admin token as a browser does."""
        with httpx.Client(base_url=self.url, timeout=10) as browser:
            login = browser.post("/console/login", data={"token": self.token, "next": "/console"})
            assert login.status_code == 303, login.text
            page = browser.get(path)
            page.raise_for_status()
            return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())

    def register_ca(self, ca: Issued, name: str) -> str:
        """The registration code flow with certmq's commands and an openssl verification certificate."""
        code = self.cli_json("ca", "code")["code"]
        verification = make_verification(self.work, ca, code)
        registered = self.cli_json("ca", "register", "--cert", str(ca.cert), "--verification", str(verification),
                                   "--name", name)  # fmt: skip
        return str(registered["sn"])

    def decisions(self, **query: str) -> list[dict[str, Any]]:
        response = self.api.get("/decisions", params=query)
        response.raise_for_status()
        return list(response.json()["items"])

    def device_client(
        self, device: Issued | None, *, client_id: str | None = None, version: int = V5, **tls: Any
    ) -> PahoClient:
        """A paho-mqtt device on the TLS listener presenting ``device``'s chain and key."""
        client = PahoClient(
            "localhost",
            self.broker.tls_port,
            client_id=client_id or f"device-{uuid.uuid4().hex[:8]}",
            version=version,
            ca_file=self.broker.ca_file,
            client_certificate=None if device is None else (device.chain, device.key),
            **tls,
        )
        self._clients.append(client)
        return client

    def listener_client(
        self,
        listener: str,
        *,
        client_id: str | None = None,
        version: int = V5,
        signed: bool = True,
        secret: str | None = None,
        device: Issued | None = None,
    ) -> PahoClient:
        """A paho-mqtt client on an MQTT listener (tcp, tls, ws or wss; WebSocket on /mqtt) that
        signs its CONNECT with the AccessKey of `certmq init` (Signature credentials) unless not
        ``signed``; ``secret`` signs with another secret, ``device`` presents a certificate too."""
        broker = self.broker
        secure = listener in ("tls", "wss")
        client_id = client_id or f"GID_Test@@@{uuid.uuid4().hex[:8]}"
        client = PahoClient(
            "localhost" if secure else broker.host,
            {"tcp": broker.tcp_port, "tls": broker.tls_port, "ws": broker.ws_port, "wss": broker.wss_port}[
                listener
            ],
            client_id=client_id,
            version=version,
            transport="websockets" if listener in ("ws", "wss") else "tcp",
            ca_file=broker.ca_file if secure else None,
            client_certificate=None if device is None else (device.chain, device.key),
        )
        if signed:
            info = broker.init_info
            client.client.username_pw_set(
                signature_username(info["access_key_id"], info["instance_id"]),
                signature_password(secret or info["access_key_secret"], client_id),
            )
        self._clients.append(client)
        return client

    def tls_context(self, device: Issued | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.broker.ca_file))
        if device is not None:
            context.load_cert_chain(str(device.chain), str(device.key))
        return context

    def close(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:
                pass
        self.api.close()


def refused_at_connect(instance: Instance, device: Issued, version: int = V5) -> int:
    """Connect and return the code of the refusal as it is on the wire (CONNACK)."""
    client = RawClient(
        "127.0.0.1",
        instance.broker.tls_port,
        version=5 if version == V5 else 4,
        tls=instance.tls_context(device),
    )
    try:
        connack = client.connect(f"refused-{uuid.uuid4().hex[:6]}")
    finally:
        client.close()
    assert connack.reason_code, "the device was accepted"
    return int(connack.reason_code)


def device_sn_of(instance: Instance, device: Issued) -> str:
    explanation = instance.api.post("/explain", json={"certificate_pem": device.pem}).json()
    return str(explanation["device_sn"])


def presented_serial(instance: Instance, device: Issued | None = None) -> str:
    """The serial of the certificate the broker presents to a new handshake."""
    context = instance.tls_context(device)
    with (
        socket.create_connection(("127.0.0.1", instance.broker.tls_port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_hex(x509.load_der_x509_certificate(der))


def new_server_pair(instance: Instance, directory: Path) -> tuple[Path, Path, str]:
    """A new localhost certificate from the instance's own server CA, as files."""
    server_ca_dir = instance.broker.data_dir / "server-ca"
    (ca_certificate, *_), ca_key = load_certified_key(server_ca_dir / "ca.pem", server_ca_dir / "ca.key")
    key = generate_key("ec")
    certificate = issue_server_certificate(
        ca_certificate, ca_key, "localhost", ["localhost", "127.0.0.1"], key.public_key()
    )
    directory.mkdir(parents=True, exist_ok=True)
    chain = directory / "server.pem"
    chain.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + ca_certificate.public_bytes(serialization.Encoding.PEM)
    )
    key_file = directory / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return chain, key_file, serial_hex(certificate)
