"""Mutual TLS for the connection benchmark: a device CA, device identities, and the two brokers
started so that they accept exactly the devices of that CA.

- certmq runs in mutual mode (``CERTMQ_INSTANCE_AUTH_MODE=mutual``) with its HTTP API on, and
  the device CA is registered the way an operator does it: a registration code from
  ``POST /api/v1/registration-codes``, a verification certificate signed by the CA's key whose
  CN is that code, then ``POST /api/v1/ca-certificates``.
- mosquitto gets the same CA as ``cafile`` of its TLS listener, with ``require_certificate true``.

Both keep the server certificates that bench/brokers.py gives them: certmq its own (made by
``certmq init``), mosquitto one of the same key type (bench/certificates.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

import brokers as broker_processes
import certificates
import processes
from brokers import RunningBroker
from certmq import pki

KEY_KIND: pki.KeyKind = "ec"  # EC P-256 for the device CA and every device, as for both server certificates
API_TIMEOUT = 30.0


@dataclass(frozen=True)
class DeviceCa:
    certificate: x509.Certificate
    key: pki.PrivateKey
    ca_file: Path

    @classmethod
    def create(cls, directory: Path, cn: str = "certmq benchmark device CA") -> DeviceCa:
        directory.mkdir(parents=True, exist_ok=True)
        key = pki.generate_key(KEY_KIND)
        certificate = pki.create_ca(cn, key)
        ca_file = directory / "device-ca.pem"
        ca_file.write_bytes(pki.certificates_pem(certificate))
        return cls(certificate, key, ca_file)


@dataclass(frozen=True)
class DeviceIdentities:
    """Device certificates and keys, written one after the other (certificate, then key) to one
    file for bench/loadgen/mqttconnect."""

    file: Path
    names: list[str]
    serials: list[str]  # DeviceSn


def issue_identities(ca: DeviceCa, names: list[str], file: Path) -> DeviceIdentities:
    """A new EC P-256 key and device certificate (clientAuth) for each name."""
    chunks, serials = [], []
    for name in names:
        key = pki.generate_key(KEY_KIND)
        certificate = pki.issue_device_certificate(ca.certificate, ca.key, name, key.public_key())
        chunks.append(pki.certificates_pem(certificate) + pki.private_key_pem(key))
        serials.append(pki.serial_hex(certificate))
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"".join(chunks))
    file.chmod(0o600)
    return DeviceIdentities(file, names, serials)


# ---- certmq ----


class CertmqApi:
    """The REST API of the certmq instance under test, with its admin token."""

    def __init__(self, port: int, data_dir: Path) -> None:
        token = json.loads((data_dir / "credentials.json").read_text())["admin_token"]
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=API_TIMEOUT,
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.client.post(path, json=body)
        if response.is_error:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
        return response.json()

    def register_ca(self, ca: DeviceCa, name: str) -> str:
        """The proof-of-possession flow; returns the CA's Sn."""
        code = self.post("/registration-codes")["code"]
        verification = pki.issue_verification_certificate(ca.certificate, ca.key, code)
        record = self.post(
            "/ca-certificates",
            {
                "name": name,
                "ca_pem": pki.certificates_pem(ca.certificate).decode(),
                "verification_pem": pki.certificates_pem(verification).decode(),
            },
        )
        return str(record["sn"])

    def device_total(self, ca_sn: str) -> int:
        return int(self.get("/device-certificates", ca_sn=ca_sn, page_size=1)["total"])

    def device(self, name: str) -> dict[str, Any] | None:
        items = self.get("/device-certificates", name=name, page_size=1)["items"]
        return items[0] if items else None

    def decisions(self, device_sn: str, limit: int = 1000) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get("/decisions", device_sn=device_sn, limit=limit)["items"]
        return found

    def close(self) -> None:
        self.client.close()


@dataclass
class MutualCertmq:
    broker: RunningBroker
    api: CertmqApi
    ca_sn: str


def start_certmq(
    workdir: Path,
    python: str,
    event_loop: str,
    cpus: set[int] | None,
    device_ca: DeviceCa,
    python_options: list[str] | None = None,
) -> MutualCertmq:
    """certmq in mutual mode, production settings otherwise, with the device CA registered."""
    http_port = processes.free_port()
    broker = broker_processes.start_certmq(
        workdir,
        python,
        event_loop,
        cpus,
        python_options=python_options,
        environment={
            "CERTMQ_INSTANCE_AUTH_MODE": "mutual",
            "CERTMQ_LISTENERS_HTTP": f"127.0.0.1:{http_port}",
            # bench/brokers.py waits for a plain TCP listener too; it stays idle here, as
            # mosquitto's does. Anonymous access is off: it plays no part on the mutual TLS
            # listener, but it is the default.
            "CERTMQ_LISTENERS_TCP_IN_MUTUAL_MODE": "true",
            "CERTMQ_AUTH_ANONYMOUS": "false",
        },
    )
    processes.wait_for_port(http_port, broker.process, broker_processes.START_TIMEOUT)
    api = CertmqApi(http_port, workdir / "certmq" / "data")
    ca_sn = api.register_ca(device_ca, "benchmark devices")
    broker.facts["auth_mode"] = "mutual"
    broker.facts["device_ca_sn"] = ca_sn
    return MutualCertmq(broker, api, ca_sn)


def start_mosquitto(
    workdir: Path, cpus: set[int] | None, device_ca: DeviceCa, key_kind: certificates.KeyKind
) -> RunningBroker:
    """mosquitto whose TLS listener requires a client certificate issued by the device CA."""
    certificate = certificates.make_server_certificate(workdir / "mosquitto-tls", key_kind)
    broker = broker_processes.start_mosquitto(
        workdir,
        certificate,
        cpus,
        tls_listener_settings=f"cafile {device_ca.ca_file}\nrequire_certificate true\n",
    )
    broker.facts["config"] += ", require_certificate true, cafile = the device CA"
    return broker


def wait_until(check: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())
