"""The TLS handshake and `certmq explain` accept the same device certificates and refuse the others
for the same reason, at the same step of the decision procedure.

Each certificate below goes through both routes of a running `certmq serve` in mutual mode: a
real TLS connection and CONNECT (whose decision is read back from the decision log), and
`certmq explain` on the same file. Where the TLS route refuses (during the handshake or at
CONNECT) is part of what the table says."""

from __future__ import annotations

import datetime
import socket
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID
from odd_certificates import (
    NETSCAPE_CERTIFICATE_TYPE,
    Shape,
    issue,
    issue_ca,
    key_usage,
    unknown_extension,
)
from OpenSSL import SSL
from openssl_pki import Issued, make_ca, make_device
from test_revocation import _mqtt_connect

from conftest import Instance

HANDSHAKE = "refused in the TLS handshake"
CONNACK_REFUSED = "refused at CONNECT"  # CONNACK 0x05 (3.1.1)
CONNACK_ACCEPTED = "accepted"
DAY = datetime.timedelta(days=1)


def fleet(shape: Shape) -> Callable[[Instance, Path], Issued]:
    """A certificate of ``shape`` issued by the registered `fleet-ca`."""

    def make(instance: Instance, directory: Path) -> Issued:
        assert instance.fleet_ca is not None
        return issue(directory, instance.fleet_ca, f"odd-{uuid.uuid4().hex[:8]}", shape)

    return make


def sha1_signed(instance: Instance, directory: Path) -> Issued:
    assert instance.fleet_ca is not None
    return make_device(directory, instance.fleet_ca, f"sha1-{uuid.uuid4().hex[:8]}", digest="sha1")


def from_a_stranger(instance: Instance, directory: Path) -> Issued:
    stranger = make_ca(directory / "stranger", "stranger-ca")
    return make_device(directory, stranger, f"stranger-{uuid.uuid4().hex[:8]}")


def via_an_unregistered_intermediate(instance: Instance, directory: Path) -> Issued:
    """Issued by an intermediate CA of `fleet-ca` that is not registered itself; the device
    sends the intermediate along, so the handshake verifies the chain up to `fleet-ca`."""
    assert instance.fleet_ca is not None
    intermediate = issue(
        directory / "intermediate",
        instance.fleet_ca,
        "fleet-intermediate",
        Shape(ca=True, usage=key_usage(key_cert_sign=True), extended_usage=None),
    )
    return issue(directory, intermediate, f"sub-{uuid.uuid4().hex[:8]}")


def from_a_ca_with_an_unknown_critical_extension(instance: Instance, directory: Path) -> Issued:
    ca = issue_ca(directory / "ca", "odd-ca", extensions=(unknown_extension(4, critical=True),))
    instance.register_ca(ca, f"odd-{uuid.uuid4().hex[:6]}")
    return issue(directory, ca, f"odd-ca-device-{uuid.uuid4().hex[:8]}")


def rsa_key(bits: int) -> Callable[[], rsa.RSAPrivateKey]:
    return lambda: rsa.generate_private_key(public_exponent=65537, key_size=bits)


CRITICAL_OCSP = x509.AuthorityInformationAccess(
    [
        x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp")
        )
    ]
)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Instance, Path], Issued]
    allowed: bool
    step: int
    reason: str
    route: str  # what the TLS route does with it
    # Whether the TLS route's decision names the certificate: not when OpenSSL stopped at a CA
    # certificate of the chain, before it handed over the device's.
    named: bool = True


CASES = [
    Case("ordinary", fleet(Shape()), True, 6, "new-device", CONNACK_ACCEPTED),
    Case("rsa-2048", fleet(Shape(key=rsa_key(2048))), True, 6, "new-device", CONNACK_ACCEPTED),
    Case("10-kb-extension", fleet(Shape(extensions=(unknown_extension(10_000),))), True, 6, "new-device",
         CONNACK_ACCEPTED),
    Case("critical-subject-alt-name",
         fleet(Shape(extensions=((x509.SubjectAlternativeName([x509.DNSName("meter.example")]), True),))),
         True, 6, "new-device", CONNACK_ACCEPTED),
    Case("ca-true", fleet(Shape(ca=True)), False, 1, "certificate-is-a-ca", CONNACK_REFUSED),
    Case("ca-true-and-key-cert-sign", fleet(Shape(ca=True, usage=key_usage(key_cert_sign=True))), False, 1,
         "certificate-is-a-ca", CONNACK_REFUSED),
    Case("key-cert-sign-on-a-leaf", fleet(Shape(usage=key_usage(key_cert_sign=True))), False, 1,
         "certificate-is-a-ca", CONNACK_REFUSED),
    Case("key-cert-sign-without-basic-constraints", fleet(Shape(ca=None, usage=key_usage(key_cert_sign=True))),
         False, 1, "certificate-is-a-ca", CONNACK_REFUSED),
    Case("150-kb", fleet(Shape(extensions=(unknown_extension(150_000),))), False, 1, "certificate-too-large",
         HANDSHAKE),
    Case("80-kb", fleet(Shape(extensions=(unknown_extension(80_000),))), False, 1, "certificate-too-large",
         HANDSHAKE),
    Case("20-kb", fleet(Shape(extensions=(unknown_extension(20_000),))), False, 1, "certificate-too-large",
         HANDSHAKE),
    Case("unknown-critical-extension", fleet(Shape(extensions=(unknown_extension(4, critical=True),))), False, 1,
         "unsupported-critical-extension", HANDSHAKE),
    Case("critical-authority-information-access", fleet(Shape(extensions=((CRITICAL_OCSP, True),))), False, 1,
         "unsupported-critical-extension", HANDSHAKE),
    Case("critical-name-constraints-on-a-leaf",
         fleet(Shape(extensions=((x509.NameConstraints([x509.DNSName("example.com")], None), True),))),
         False, 1, "unsupported-critical-extension", CONNACK_REFUSED),
    Case("malformed-key-usage",
         fleet(Shape(usage=None, extensions=(unknown_extension(3, critical=True, oid=ExtensionOID.KEY_USAGE),))),
         False, 1, "unreadable-certificate", HANDSHAKE),
    Case("rsa-1024", fleet(Shape(key=rsa_key(1024))), False, 5, "weak-key", HANDSHAKE),
    Case("sha1-signature", sha1_signed, False, 5, "weak-signature", HANDSHAKE),
    Case("expired", fleet(Shape(valid_from=-10 * DAY, valid_for=DAY)), False, 5, "certificate-expired", HANDSHAKE),
    Case("not-yet-valid", fleet(Shape(valid_from=10 * DAY)), False, 5, "certificate-not-yet-valid", HANDSHAKE),
    Case("server-auth-only", fleet(Shape(extended_usage=(ExtendedKeyUsageOID.SERVER_AUTH,))), False, 5,
         "wrong-key-usage", HANDSHAKE),
    Case("any-extended-key-usage", fleet(Shape(extended_usage=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,))),
         False, 5, "wrong-key-usage", HANDSHAKE),
    Case("netscape-type-server-only",
         fleet(Shape(extensions=((x509.UnrecognizedExtension(NETSCAPE_CERTIFICATE_TYPE, b"\x03\x02\x06\x40"),
                                  False),))),
         False, 5, "wrong-key-usage", HANDSHAKE),
    Case("unknown-ca", from_a_stranger, False, 3, "ca-not-registered", HANDSHAKE, named=False),
    Case("unregistered-intermediate", via_an_unregistered_intermediate, False, 3, "ca-not-registered",
         CONNACK_REFUSED),
    Case("ca-with-unknown-critical-extension", from_a_ca_with_an_unknown_critical_extension, False, 5,
         "unsupported-critical-extension", HANDSHAKE, named=False),
]  # fmt: skip


def client_context(instance: Instance, device: Issued) -> SSL.Context:
    """A TLS client that presents whatever it is given (an RSA-1024 key, a SHA-1 signature, a
    malformed extension: the system OpenSSL behind Python's ssl refuses to load those), with
    pyOpenSSL, and verifies the broker."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    context.load_verify_locations(str(instance.broker.ca_file))
    context.set_verify(SSL.VERIFY_PEER)
    context.use_certificate_chain_file(str(device.chain))
    context.use_privatekey_file(str(device.key))
    return context


def through_tls(instance: Instance, device: Issued) -> tuple[str, str]:
    """Connect with ``device``'s chain and key and send CONNECT; returns what happened and the
    client's address as the broker records it."""
    plain = socket.create_connection(("127.0.0.1", instance.broker.tls_port), timeout=5)
    address = "{}:{}".format(*plain.getsockname())
    # pyOpenSSL wants a blocking socket; the kernel's timeouts keep it from waiting forever.
    plain.setblocking(True)
    timeout = struct.pack("ll", 5, 0)
    plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
    plain.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
    tls = SSL.Connection(client_context(instance, device), plain)
    tls.set_tlsext_host_name(b"localhost")
    tls.set_connect_state()
    try:
        tls.do_handshake()
        code = _mqtt_connect(tls, f"odd-{uuid.uuid4().hex[:6]}")  # type: ignore[arg-type]
    except (SSL.Error, ConnectionError, OSError):
        return HANDSHAKE, address
    finally:
        plain.close()
    return (CONNACK_ACCEPTED if code == 0 else CONNACK_REFUSED), address


def recorded(instance: Instance, address: str) -> dict[str, Any]:
    rows = [row for row in instance.decisions(limit="200") if row["peer"] == address]
    assert len(rows) == 1, f"expected one decision for {address}, found {rows}"
    return rows[0]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_handshake_and_explain_agree(mutual: Instance, tmp_path: Path, case: Case) -> None:
    device = case.make(mutual, tmp_path)
    # Explained first: connecting registers a new device, after which it is no longer new.
    explained = mutual.cli_json("explain", str(device.chain))
    route, address = through_tls(mutual, device)
    row = recorded(mutual, address)

    expected = (case.allowed, case.step, case.reason)
    assert (explained["allowed"], explained["step"], explained["reason"]) == expected, explained["detail"]
    assert (row["result"] == "allow", row["step"], row["reason"]) == expected, row["detail"]
    assert route == case.route
    # Both name the same certificate (neither does when it is too large to be read).
    names = (row["device_sn"], row["cn"], row["ca_sn"])
    assert names == (
        (explained["device_sn"], explained["cn"], explained["ca_sn"]) if case.named else ("", "", "")
    )
