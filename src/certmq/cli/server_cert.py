"""``certmq server-cert``: the broker's TLS server certificate, shown and replaced at run time."""

from __future__ import annotations

import argparse
from pathlib import Path

from certmq.cli.client import ApiClient, add_instance_arguments
from certmq.cli.errors import CommandError
from certmq.cli.output import print_fields, print_json

SERVER_CERTIFICATE_FIELDS = [
    ("subject", "subject"),
    ("issuer", "issuer"),
    ("sans", "names"),
    ("sn", "Sn"),
    ("fingerprint", "SHA-256"),
    ("valid_begin", "valid from"),
    ("valid_end", "valid until"),
    ("cert_file", "file"),
    ("generation", "generation"),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "server-cert",
        help="show or replace the server certificate",
        description="Show or replace the broker's TLS server certificate. A replacement is used by "
        "new handshakes at once; live connections are kept.",
    )
    parser.set_defaults(help_parser=parser)
    commands_of_server_cert = parser.add_subparsers(title="commands", metavar="COMMAND")

    show = commands_of_server_cert.add_parser(
        "show", help="show the server certificate", description="Show the server certificate."
    )
    add_instance_arguments(show)
    show.set_defaults(run=run_show)

    replace = commands_of_server_cert.add_parser(
        "set", help="replace the server certificate",
        description="Replace the server certificate with CHAIN.pem (the certificate, then the CAs "
        "that issued it) and its private key KEY.pem.",
    )  # fmt: skip
    replace.add_argument("--cert", type=Path, required=True, metavar="CHAIN.pem",
                         help="the server certificate chain, leaf first")  # fmt: skip
    replace.add_argument("--key", type=Path, required=True, metavar="KEY.pem", help="its private key")
    add_instance_arguments(replace)
    replace.set_defaults(run=run_set)


def run_show(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        certificate = client.get("/server-certificate")
    if args.json:
        print_json(certificate)
    else:
        print_fields(certificate, SERVER_CERTIFICATE_FIELDS)
    return 0


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(
            f"cannot read the {what} {path}: {getattr(error, 'strerror', None) or error}"
        ) from None


def run_set(args: argparse.Namespace) -> int:
    replacement = {"chain_pem": _read(args.cert, "certificate chain"), "key_pem": _read(args.key, "key")}
    with ApiClient.from_args(args) as client:
        certificate = client.put("/server-certificate", replacement)
    if args.json:
        print_json(certificate)
    else:
        print(f"the server certificate is now {certificate['subject']} (Sn {certificate['sn']})")
        print_fields(certificate, SERVER_CERTIFICATE_FIELDS)
    return 0
