"""``certmq pki``: make CAs, server, device and verification certificates and PKCS#12 bundles
from files only, with no instance."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cryptography import x509

from certmq import pki
from certmq.cli.errors import CommandError

DEVICE_CERT_FILE = "device.pem"
DEVICE_KEY_FILE = "device.key"
DEVICE_CHAIN_FILE = "chain.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
VERIFICATION_FILE = "verification.pem"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "pki",
        help="make CAs and certificates (files only, no instance needed)",
        description="Make CA, server, device and verification certificates and PKCS#12 bundles. "
        "A CA directory holds ca.pem and ca.key. Existing files are not overwritten unless --force.",
    )
    parser.set_defaults(help_parser=parser)
    commands_of_pki = parser.add_subparsers(title="commands", metavar="COMMAND")

    ca = commands_of_pki.add_parser(
        "ca", help="create a root CA, or an intermediate CA with --issuer-dir",
        description="Create a CA in OUT (ca.pem, ca.key): self-signed, or signed by the CA in --issuer-dir.",
    )  # fmt: skip
    ca.add_argument("--cn", required=True, help="Subject CN of the CA")
    ca.add_argument(
        "--issuer-dir", type=Path, metavar="DIR", help="the parent CA's directory (makes an intermediate)"
    )
    ca.add_argument("--path-length", type=int, metavar="N", help="basicConstraints pathLenConstraint")
    _add_common(ca, pki.CA_VALID_DAYS)
    ca.set_defaults(run=run_ca)

    server = commands_of_pki.add_parser(
        "server", help="issue a TLS server certificate",
        description="Issue a server certificate (serverAuth) into OUT: server.pem (certificate + CA "
        "certificate) and server.key. The CN is always one of the subject alternative names.",
    )  # fmt: skip
    server.add_argument(
        "--ca-dir", type=Path, required=True, metavar="DIR", help="the issuing CA's directory"
    )
    server.add_argument("--cn", required=True, metavar="HOST", help="host name of the broker")
    server.add_argument("--san", action="append", default=[], metavar="NAME",
                        help="a DNS name or IP address clients dial (repeatable)")  # fmt: skip
    _add_common(server, pki.SERVER_VALID_DAYS)
    server.set_defaults(run=run_server)

    device = commands_of_pki.add_parser(
        "device", help="issue a device (client) certificate",
        description="Issue a device certificate (clientAuth) into OUT: device.pem, device.key and "
        "chain.pem (device certificate + CA certificate, what MQTT clients load).",
    )  # fmt: skip
    device.add_argument(
        "--ca-dir", type=Path, required=True, metavar="DIR", help="the issuing CA's directory"
    )
    device.add_argument("--cn", required=True, metavar="NAME", help="Subject CN: the device name")
    device.add_argument("--serial", metavar="HEX", help="serial number in hex (default: 159 random bits)")
    _add_common(device, pki.DEVICE_VALID_DAYS)
    device.set_defaults(run=run_device)

    verification = commands_of_pki.add_parser(
        "verification", help="issue the verification certificate that proves possession of a CA key",
        description="Issue a verification certificate (Subject CN = the registration code from "
        "`certmq ca code`) signed by the CA, into OUT/verification.pem.",
    )  # fmt: skip
    verification.add_argument("--ca-dir", type=Path, required=True, metavar="DIR", help="the CA to register")
    verification.add_argument("--code", required=True, help="the registration code")
    verification.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    verification.add_argument("--force", action="store_true", help="overwrite existing files")
    verification.add_argument("--json", action="store_true", help="print the result as JSON")
    verification.set_defaults(run=run_verification)

    p12 = commands_of_pki.add_parser(
        "p12", help="bundle a certificate (or chain) and its key as PKCS#12",
        description="Write a PKCS#12 bundle of a certificate, its key, and the rest of the chain "
        "when --cert is a chain file. Java and .NET clients load these.",
    )  # fmt: skip
    p12.add_argument("--cert", type=Path, required=True, metavar="FILE", help="certificate or chain, PEM")
    p12.add_argument("--key", type=Path, required=True, metavar="FILE", help="its private key, PEM")
    p12.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .p12 file to write")
    p12.add_argument("--password", default=os.environ.get("CERTMQ_P12_PASSWORD", ""),
                     help="bundle password (default: env CERTMQ_P12_PASSWORD, else none)")  # fmt: skip
    p12.add_argument("--name", help="friendly name (default: the certificate's CN)")
    p12.add_argument("--force", action="store_true", help="overwrite an existing file")
    p12.add_argument("--json", action="store_true", help="print the result as JSON")
    p12.set_defaults(run=run_p12)


def _add_common(parser: argparse.ArgumentParser, default_days: int) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--key", choices=pki.KEY_KINDS, default="ec", help="key type (default: ec)")
    parser.add_argument("--key-size", type=int, metavar="N",
                        help="RSA bits (default 2048) or EC curve size 256 / 384 (default 256)")  # fmt: skip
    parser.add_argument(
        "--days", type=int, default=default_days, help=f"validity in days (default: {default_days})"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _refuse_existing(args: argparse.Namespace, *paths: Path) -> None:
    if args.force:
        return
    for path in paths:
        if path.exists():
            raise CommandError(f"{path} exists; use --force to overwrite it, or another --out")


def _report(args: argparse.Namespace, certificate: x509.Certificate, files: dict[str, Path]) -> int:
    subject = certificate.subject.rfc4514_string()
    result: dict[str, Any] = {name: str(path.absolute()) for name, path in files.items()}
    result |= {"subject": subject, "sn": pki.serial_hex(certificate),
               "fingerprint_sha256": pki.fingerprint_sha256(certificate),
               "not_after": certificate.not_valid_after_utc.isoformat()}  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{subject}  Sn {result['sn']}  valid until {result['not_after']}")
    for name, path in files.items():
        print(f"  {name.removesuffix('_file'):<13} {path}")
    return 0


def run_ca(args: argparse.Namespace) -> int:
    cert_path, key_path = args.out / pki.CA_CERT_FILE, args.out / pki.CA_KEY_FILE
    _refuse_existing(args, cert_path, key_path)
    issuer = pki.load_ca_dir(args.issuer_dir) if args.issuer_dir else None
    key = pki.generate_key(args.key, args.key_size)
    certificate = pki.create_ca(args.cn, key, issuer, valid_days=args.days, path_length=args.path_length)
    pki.write_ca_dir(args.out, pki.CertifiedKey(certificate, key), overwrite=True)
    return _report(args, certificate, {"cert_file": cert_path, "key_file": key_path})


def run_server(args: argparse.Namespace) -> int:
    cert_path, key_path = args.out / SERVER_CERT_FILE, args.out / SERVER_KEY_FILE
    _refuse_existing(args, cert_path, key_path)
    ca = pki.load_ca_dir(args.ca_dir)
    key = pki.generate_key(args.key, args.key_size)
    certificate = pki.issue_server_certificate(
        ca.certificate, ca.key, args.cn, args.san, key.public_key(), valid_days=args.days
    )
    pki.write_private_key(key_path, key)
    pki.write_certificates(cert_path, certificate, ca.certificate)
    return _report(args, certificate, {"cert_file": cert_path, "key_file": key_path})


def run_device(args: argparse.Namespace) -> int:
    cert_path, key_path = args.out / DEVICE_CERT_FILE, args.out / DEVICE_KEY_FILE
    chain_path = args.out / DEVICE_CHAIN_FILE
    _refuse_existing(args, cert_path, key_path, chain_path)
    serial = None
    if args.serial is not None:
        try:
            serial = int(args.serial.removeprefix("0x").replace(":", ""), 16)
        except ValueError:
            raise CommandError(f"--serial {args.serial!r} is not a hexadecimal number") from None
        if serial <= 0:
            raise CommandError("--serial must be a positive number")
    ca = pki.load_ca_dir(args.ca_dir)
    key = pki.generate_key(args.key, args.key_size)
    certificate = pki.issue_device_certificate(
        ca.certificate, ca.key, args.cn, key.public_key(), valid_days=args.days, serial=serial
    )
    pki.write_private_key(key_path, key)
    pki.write_certificates(cert_path, certificate)
    pki.write_certificates(chain_path, certificate, ca.certificate)
    return _report(
        args, certificate, {"cert_file": cert_path, "key_file": key_path, "chain_file": chain_path}
    )


def run_verification(args: argparse.Namespace) -> int:
    cert_path = args.out / VERIFICATION_FILE
    _refuse_existing(args, cert_path)
    ca = pki.load_ca_dir(args.ca_dir)
    certificate = pki.issue_verification_certificate(ca.certificate, ca.key, args.code)
    pki.write_certificates(cert_path, certificate)
    return _report(args, certificate, {"cert_file": cert_path})


def run_p12(args: argparse.Namespace) -> int:
    _refuse_existing(args, args.out)
    chain, key = pki.load_certified_key(args.cert, args.key)
    password = args.password.encode() if args.password else None
    bundle = pki.pkcs12_bundle(chain[0], key, chain[1:], password=password, name=args.name)
    # The bundle holds the private key: owner-only, like the key file.
    pki.write_file_atomically(args.out, bundle, pki.SECRET_FILE_MODE)
    return _report(args, chain[0], {"p12_file": args.out})
