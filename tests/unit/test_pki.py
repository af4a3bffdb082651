"""certmq.pki: what we issue is what we claim, and OpenSSL agrees that it is valid."""

from __future__ import annotations

import datetime
import ipaddress
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certmq import pki


def openssl(*args: str | Path) -> str:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def extension(
    certificate: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return certificate.extensions.get_extension_for_class(kind)


@pytest.fixture(scope="module")
def root() -> pki.CertifiedKey:
    key = pki.generate_key("ec")
    return pki.CertifiedKey(pki.create_ca("Test Root CA", key), key)


@pytest.fixture(scope="module")
def rsa_root() -> pki.CertifiedKey:
    key = pki.generate_key("rsa")
    return pki.CertifiedKey(pki.create_ca("Test RSA Root CA", key), key)


# --- serial numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0, "00"),
        (1, "01"),
        (0x7F, "7f"),
        (0x80, "0080"),
        (0xFF, "00ff"),
        (0x0100, "0100"),
        (0xF26900BA87, "00f26900ba87"),
        (0x1234, "1234"),
        (-1, "ff"),
        (-128, "80"),
        (-129, "ff7f"),
    ],
)
def test_serial_hex_is_the_der_integer_content(number: int, expected: str) -> None:
    assert pki.serial_hex(number) == expected


def test_serial_hex_matches_the_der_that_openssl_reads(tmp_path: Path, root: pki.CertifiedKey) -> None:
    assert shutil.which("openssl"), "the openssl command is missing: apt-get install openssl"
    serial = 0xF26900BA87A1B2C3D4E5F60718293A4B
    device_key = pki.generate_key()
    certificate = pki.issue_device_certificate(
        root.certificate, root.key, "dev", device_key.public_key(), serial=serial
    )
    pki.write_certificates(tmp_path / "d.pem", certificate)
    assert pki.serial_hex(certificate) == "00f26900ba87a1b2c3d4e5f60718293a4b"
    # The first INTEGER at depth 2 is the serial; its content length counts the leading 00 octet.
    lines = openssl("asn1parse", "-in", tmp_path / "d.pem").splitlines()
    serial_line = next(line for line in lines if "d=2" in line and "INTEGER" in line)
    assert re.search(r"l=\s*17 prim: INTEGER\s*:F26900BA87A1B2C3D4E5F60718293A4B", serial_line), serial_line


def test_random_serials_are_positive_and_fit_20_octets() -> None:
    serials = {pki.random_serial() for _ in range(2000)}
    assert len(serials) == 2000
    for number in serials:
        assert number > 0
        assert len(bytes.fromhex(pki.serial_hex(number))) <= 20


# --- keys ---------------------------------------------------------------------------------------


def test_generate_key_kinds_and_sizes() -> None:
    assert isinstance(pki.generate_key(), ec.EllipticCurvePrivateKey)
    assert pki.generate_key("ec").curve.name == "secp256r1"  # type: ignore[union-attr]
    assert pki.generate_key("ec", 384).curve.name == "secp384r1"  # type: ignore[union-attr]
    key = pki.generate_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert pki.generate_key("rsa", 3072).key_size == 3072


@pytest.mark.parametrize(("kind", "size"), [("rsa", 1024), ("ec", 521), ("dsa", None)])
def test_generate_key_refuses_weak_or_unknown(kind: str, size: int | None) -> None:
    with pytest.raises(pki.UnsupportedKeyError):
        pki.generate_key(kind, size)  # type: ignore[arg-type]


# --- CAs ----------------------------------------------------------------------------------------


def test_root_ca_extensions(root: pki.CertifiedKey) -> None:
    ca = root.certificate
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test Root CA"
    constraints = extension(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = extension(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    ski = extension(ca, x509.SubjectKeyIdentifier).value
    aki = extension(ca, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    ca.verify_directly_issued_by(ca)


def test_intermediate_ca_chains_to_root(root: pki.CertifiedKey) -> None:
    key = pki.generate_key("ec", 384)
    intermediate = pki.create_ca("Test Intermediate CA", key, root, path_length=0)
    intermediate.verify_directly_issued_by(root.certificate)
    assert intermediate.issuer == root.certificate.subject
    aki = extension(intermediate, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(root.certificate, x509.SubjectKeyIdentifier).value.digest
    assert extension(intermediate, x509.BasicConstraints).value.path_length == 0
    # It cannot outlive its issuer.
    assert intermediate.not_valid_after_utc <= root.certificate.not_valid_after_utc


def test_issuing_from_a_leaf_or_with_the_wrong_key_is_refused(root: pki.CertifiedKey) -> None:
    device_key = pki.generate_key()
    device = pki.issue_device_certificate(root.certificate, root.key, "dev", device_key.public_key())
    with pytest.raises(pki.NotACertificateAuthorityError, match="not a CA"):
        pki.issue_device_certificate(device, device_key, "other", pki.generate_key().public_key())
    with pytest.raises(pki.KeyMismatchError):
        pki.issue_device_certificate(root.certificate, device_key, "other", device_key.public_key())
    with pytest.raises(pki.NotACertificateAuthorityError):
        pki.create_ca("sub", pki.generate_key(), pki.CertifiedKey(device, device_key))


def test_names_are_checked(root: pki.CertifiedKey) -> None:
    public_key = pki.generate_key().public_key()
    with pytest.raises(pki.InvalidNameError):
        pki.issue_device_certificate(root.certificate, root.key, "", public_key)
    with pytest.raises(pki.InvalidNameError):
        pki.issue_device_certificate(root.certificate, root.key, "x" * 65, public_key)
    with pytest.raises(pki.InvalidNameError):
        pki.issue_server_certificate(root.certificate, root.key, "host", ["bad name"], public_key)


# --- leaves -------------------------------------------------------------------------------------


def test_server_certificate(rsa_root: pki.CertifiedKey) -> None:
    key = pki.generate_key("rsa")
    server = pki.issue_server_certificate(
        rsa_root.certificate, rsa_root.key, "localhost", ["localhost", "127.0.0.1", "::1"], key.public_key()
    )
    server.verify_directly_issued_by(rsa_root.certificate)
    sans = extension(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(extension(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not extension(server, x509.BasicConstraints).value.ca
    usage = extension(server, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign


def test_server_certificate_adds_its_cn_to_the_sans(root: pki.CertifiedKey) -> None:
    server = pki.issue_server_certificate(
        root.certificate, root.key, "mqtt.example.com", [], pki.generate_key().public_key()
    )
    sans = extension(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.example.com"]


def test_device_certificate(root: pki.CertifiedKey) -> None:
    key = pki.generate_key()
    device = pki.issue_device_certificate(root.certificate, root.key, "device-0001", key.public_key())
    device.verify_directly_issued_by(root.certificate)
    assert device.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "device-0001"
    assert list(extension(device, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = extension(device, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment
    aki = extension(device, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(root.certificate, x509.SubjectKeyIdentifier).value.digest
    lifetime = device.not_valid_after_utc - device.not_valid_before_utc
    assert datetime.timedelta(days=365) <= lifetime <= datetime.timedelta(days=365, minutes=10)


def test_explicit_validity_makes_expired_certificates(root: pki.CertifiedKey) -> None:
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)
    device = pki.issue_device_certificate(
        root.certificate, root.key, "old", pki.generate_key().public_key(), not_before=start, not_after=end
    )
    assert (device.not_valid_before_utc, device.not_valid_after_utc) == (start, end)


def test_verification_certificate(root: pki.CertifiedKey) -> None:
    verification = pki.issue_verification_certificate(root.certificate, root.key, "0123456789abcdef")
    verification.verify_directly_issued_by(root.certificate)
    assert verification.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "0123456789abcdef"
    assert verification.issuer == root.certificate.subject


def test_fingerprint(root: pki.CertifiedKey) -> None:
    fingerprint = pki.fingerprint_sha256(root.certificate)
    assert len(fingerprint) == 64 and fingerprint == fingerprint.lower()


# --- files --------------------------------------------------------------------------------------


def test_pem_files_round_trip_and_key_mode(tmp_path: Path, root: pki.CertifiedKey) -> None:
    cert_path, key_path = pki.write_ca_dir(tmp_path / "ca", root)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    loaded = pki.load_ca_dir(tmp_path / "ca")
    assert loaded.certificate == root.certificate
    assert pki.public_keys_match(loaded.certificate, loaded.key)
    with pytest.raises(pki.RefusingToOverwriteError):
        pki.write_ca_dir(tmp_path / "ca", root)
    # No temporary file is left behind.
    assert sorted(path.name for path in (tmp_path / "ca").iterdir()) == ["ca.key", "ca.pem"]


def test_chain_files_keep_their_order(tmp_path: Path, root: pki.CertifiedKey) -> None:
    key = pki.generate_key()
    device = pki.issue_device_certificate(root.certificate, root.key, "dev", key.public_key())
    pki.write_certificates(tmp_path / "chain.pem", device, root.certificate)
    assert pki.load_certificates(tmp_path / "chain.pem") == [device, root.certificate]
    assert pki.load_certificate(tmp_path / "chain.pem") == device


def test_load_errors_are_specific(tmp_path: Path, root: pki.CertifiedKey) -> None:
    with pytest.raises(pki.PemFileError, match="cannot read"):
        pki.load_certificate(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(pki.PemFileError, match="no PEM certificate"):
        pki.load_certificate(tmp_path / "junk.pem")
    with pytest.raises(pki.PemFileError, match="no usable PEM private key"):
        pki.load_private_key(tmp_path / "junk.pem")
    pki.write_certificates(tmp_path / "ca.pem", root.certificate)
    pki.write_private_key(tmp_path / "ca.key", pki.generate_key())
    with pytest.raises(pki.KeyMismatchError):
        pki.load_ca_dir(tmp_path)


def test_pkcs12_bundle(root: pki.CertifiedKey) -> None:
    key = pki.generate_key()
    device = pki.issue_device_certificate(root.certificate, root.key, "dev", key.public_key())
    bundle = pkcs12.load_pkcs12(
        pki.pkcs12_bundle(device, key, [root.certificate], password=b"secret"), b"secret"
    )
    assert bundle.cert is not None and bundle.cert.certificate == device
    assert bundle.cert.friendly_name == b"dev"
    assert [c.certificate for c in bundle.additional_certs] == [root.certificate]
    with pytest.raises(pki.KeyMismatchError):
        pki.pkcs12_bundle(device, root.key)


# --- OpenSSL agrees -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_openssl_verifies_what_we_issue(tmp_path: Path, kind: str) -> None:
    root_key = pki.generate_key(kind)  # type: ignore[arg-type]
    root = pki.CertifiedKey(pki.create_ca("Root", root_key), root_key)
    intermediate_key = pki.generate_key(kind)  # type: ignore[arg-type]
    intermediate = pki.CertifiedKey(pki.create_ca("Intermediate", intermediate_key, root), intermediate_key)
    server_key, device_key = pki.generate_key(kind), pki.generate_key(kind)  # type: ignore[arg-type]
    server = pki.issue_server_certificate(
        root.certificate, root.key, "localhost", ["localhost", "127.0.0.1", "::1"], server_key.public_key()
    )
    device = pki.issue_device_certificate(
        intermediate.certificate, intermediate.key, "device-1", device_key.public_key()
    )
    verification = pki.issue_verification_certificate(intermediate.certificate, intermediate.key, "code123")
    pki.write_certificates(tmp_path / "root.pem", root.certificate)
    pki.write_certificates(tmp_path / "intermediate.pem", intermediate.certificate)
    pki.write_certificates(tmp_path / "server.pem", server)
    pki.write_certificates(tmp_path / "device.pem", device)
    pki.write_certificates(tmp_path / "verification.pem", verification)
    pki.write_private_key(tmp_path / "device.key", device_key)

    root_file, intermediate_file = tmp_path / "root.pem", tmp_path / "intermediate.pem"
    openssl("verify", "-CAfile", root_file, intermediate_file)
    openssl("verify", "-CAfile", root_file, "-purpose", "sslserver", tmp_path / "server.pem")
    openssl(
        "verify", "-CAfile", root_file, "-untrusted", intermediate_file, "-purpose", "sslclient",
        tmp_path / "device.pem",
    )  # fmt: skip
    # Trust ending at the intermediate alone: partial-chain verification.
    openssl("verify", "-partial_chain", "-CAfile", intermediate_file, tmp_path / "device.pem")
    openssl("verify", "-partial_chain", "-CAfile", intermediate_file, tmp_path / "verification.pem")
    # The device certificate is not a server certificate.
    failed = subprocess.run(
        ["openssl", "verify", "-CAfile", root_file, "-untrusted", intermediate_file, "-purpose", "sslserver",
         tmp_path / "device.pem"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert failed.returncode != 0

    text = openssl("x509", "-in", tmp_path / "server.pem", "-noout", "-text")
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text
    assert "CA:FALSE" in text
    text = openssl("x509", "-in", intermediate_file, "-noout", "-text")
    assert "CA:TRUE" in text and "Certificate Sign, CRL Sign" in text
    assert "X509v3 Subject Key Identifier" in text and "X509v3 Authority Key Identifier" in text
    text = openssl("x509", "-in", tmp_path / "device.pem", "-noout", "-text")
    assert "TLS Web Client Authentication" in text and "Digital Signature" in text
    assert "Subject: CN = device-1" in text
    # The key file is a key OpenSSL reads, and it matches the certificate.
    key_modulus = openssl("pkey", "-in", tmp_path / "device.key", "-pubout")
    cert_modulus = openssl("x509", "-in", tmp_path / "device.pem", "-noout", "-pubkey")
    assert key_modulus == cert_modulus


def test_openssl_reads_our_pkcs12(tmp_path: Path, root: pki.CertifiedKey) -> None:
    key = pki.generate_key()
    device = pki.issue_device_certificate(root.certificate, root.key, "dev", key.public_key())
    (tmp_path / "d.p12").write_bytes(pki.pkcs12_bundle(device, key, [root.certificate], password=b"pw"))
    out = openssl("pkcs12", "-in", tmp_path / "d.p12", "-passin", "pass:pw", "-nodes")
    assert out.count("BEGIN CERTIFICATE") == 2 and "PRIVATE KEY" in out
