"""The demo that `make run` starts with: a device CA registered through the code flow and one
device certificate, so that mutual TLS can be tried at once.

Made on the first start of a demo instance that has no CA registered; kept under
``DATA_DIR/demo/`` (``ca/ca.pem``, ``ca/ca.key``, ``device-0001/device.pem``, ``device.key``,
``chain.pem``). The CA's key stays on disk here only because it is a demo: a real fleet's CA
key never needs to be near the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certmq import pki
from certmq.registry.service import RegistryService

log = logging.getLogger("certmq")

DEMO_DIR = "demo"
DEMO_CA_NAME = "certmq demo CA"
DEMO_DEVICE_NAME = "device-0001"


@dataclass(frozen=True, slots=True)
class DemoFiles:
    ca_sn: str
    ca_file: Path
    chain_file: Path
    key_file: Path


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode()


async def ensure_demo_ca(registry: RegistryService, data_dir: Path) -> DemoFiles | None:
    """Create and register the demo CA and device when the registry has no CA; None otherwise."""
    if registry.index.cas():
        return None
    directory = data_dir / DEMO_DIR
    ca_directory = directory / "ca"
    if (ca_directory / pki.CA_CERT_FILE).exists():
        ca = pki.load_ca_dir(ca_directory)
    else:
        key = pki.generate_key("ec")
        ca = pki.CertifiedKey(pki.create_ca(DEMO_CA_NAME, key), key)
        pki.write_ca_dir(ca_directory, ca, overwrite=True)
    # Proof of possession, exactly as an operator does it.
    code = await registry.issue_registration_code()
    verification = pki.issue_verification_certificate(ca.certificate, ca.key, code.code)
    record = await registry.register_ca("demo", _pem(ca.certificate), _pem(verification))

    device_directory = directory / DEMO_DEVICE_NAME
    device_key = pki.generate_key("ec")
    device = pki.issue_device_certificate(ca.certificate, ca.key, DEMO_DEVICE_NAME, device_key.public_key())
    pki.write_private_key(device_directory / "device.key", device_key)
    pki.write_certificates(device_directory / "device.pem", device)
    pki.write_certificates(device_directory / "chain.pem", device, ca.certificate)
    files = DemoFiles(
        record.sn,
        ca_directory / pki.CA_CERT_FILE,
        device_directory / "chain.pem",
        device_directory / "device.key",
    )
    log.info("demo: registered the device CA %s (Sn %s) from %s", DEMO_CA_NAME, record.sn, files.ca_file)
    log.info(
        "demo: a device certificate is in %s; in mutual mode (certmq mode set mutual) connect it with "
        "mosquitto_pub -h localhost -p 8883 --cafile %s --cert %s --key %s -i %s -t demo/hello -m hi",
        device_directory, data_dir / "server-ca" / "ca.pem", files.chain_file, files.key_file, DEMO_DEVICE_NAME,
    )  # fmt: skip
    return files
