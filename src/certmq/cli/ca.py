"""``certmq ca``: registration codes and CA certificates of a running instance."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certmq.cli.client import ApiClient, add_instance_arguments, segment
from certmq.cli.errors import CommandError
from certmq.cli.output import print_fields, print_json, print_json_items, print_table, short_time

CA_FIELDS = [
    ("sn", "Sn"),
    ("name", "name"),
    ("status", "status"),
    ("subject", "subject"),
    ("fingerprint", "SHA-256"),
    ("valid_begin", "valid from"),
    ("valid_end", "valid until"),
    ("registration_code", "registration code"),
    ("created_at", "registered at"),
]
CA_COLUMNS = [
    ("SN", lambda ca: ca["sn"]),
    ("NAME", lambda ca: ca["name"]),
    ("STATUS", lambda ca: ca["status"]),
    ("VALID UNTIL", lambda ca: short_time(ca["valid_end"])),
    ("SUBJECT", lambda ca: ca["subject"]),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ca",
        help="register and manage CA certificates of a running instance",
        description="Register CA certificates with proof of possession of their key, list them, "
        "and activate, inactivate or delete them. Inactivating or deleting a CA disconnects the "
        "devices it issued.",
    )
    parser.set_defaults(help_parser=parser)
    commands_of_ca = parser.add_subparsers(title="commands", metavar="COMMAND")

    code = commands_of_ca.add_parser(
        "code", help="issue a registration code",
        description="Issue a one-time registration code (valid 24 hours). Make a verification "
        "certificate with it as Subject CN, signed by the CA's key: "
        "certmq pki verification --ca-dir DIR --code CODE --out DIR.",
    )  # fmt: skip
    add_instance_arguments(code)
    code.set_defaults(run=run_code)

    register = commands_of_ca.add_parser(
        "register", help="register a CA certificate",
        description="Register a CA certificate, proving possession of its key with a verification "
        "certificate whose Subject CN is a registration code from `certmq ca code`.",
    )  # fmt: skip
    register.add_argument("--cert", type=Path, required=True, metavar="CA.pem", help="the CA certificate")
    register.add_argument("--verification", type=Path, required=True, metavar="VER.pem",
                          help="the verification certificate, signed by the CA's key")  # fmt: skip
    register.add_argument("--name", default="", metavar="N", help="a name for people (default: the CA's CN)")
    add_instance_arguments(register)
    register.set_defaults(run=run_register)

    listing = commands_of_ca.add_parser(
        "list", help="list CA certificates", description="List the registered CA certificates."
    )
    listing.add_argument("--limit", type=int, metavar="N", help="at most N certificates")
    add_instance_arguments(listing)
    listing.set_defaults(run=run_list)

    show = commands_of_ca.add_parser("show", help="show a CA certificate",
                                     description="Show a registered CA certificate.")  # fmt: skip
    show.add_argument("sn", metavar="SN", help="the CA's Sn")
    show.add_argument("--pem", action="store_true", help="print the certificate, PEM, as well")
    add_instance_arguments(show)
    show.set_defaults(run=run_show)

    for action, text in (
        ("activate", "activate a CA certificate: its devices may connect again"),
        ("inactivate", "inactivate a CA certificate: its devices are refused and disconnected"),
        ("delete", "delete a CA certificate and every device certificate it issued"),
    ):
        command = commands_of_ca.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        command.add_argument("sn", metavar="SN", help="the CA's Sn")
        add_instance_arguments(command)
        command.set_defaults(run=run_change, action=action)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(
            f"cannot read the {what} {path}: {getattr(error, 'strerror', None) or error}"
        ) from None


def run_code(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        code = client.post("/registration-codes")
    if args.json:
        print_json(code)
    else:
        print(code["code"])
        print(f"  valid until {short_time(code['expires_at'])}; make the verification certificate with:")
        print(f"  certmq pki verification --ca-dir CA_DIR --code {code['code']} --out DIR")
    return 0


def run_register(args: argparse.Namespace) -> int:
    registration = {
        "name": args.name,
        "ca_pem": _read(args.cert, "CA certificate"),
        "verification_pem": _read(args.verification, "verification certificate"),
    }
    with ApiClient.from_args(args) as client:
        ca = client.post("/ca-certificates", registration)
    if args.json:
        print_json(ca)
    else:
        print(f"registered CA {ca['sn']} ({ca['name']}), {ca['status']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        pages = client.pages("/ca-certificates", limit=args.limit, what="CA certificates")
        if args.json:
            print_json_items(pages)
        else:
            print_table(CA_COLUMNS, pages, "no CA certificates registered")
    return 0


def show_ca(ca: dict[str, Any], *, with_pem: bool = False) -> None:
    print_fields(ca, CA_FIELDS)
    if with_pem:
        print()
        print(ca["pem"], end="" if ca["pem"].endswith("\n") else "\n")


def run_show(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        ca = client.get(f"/ca-certificates/{segment(args.sn)}")
    if args.json:
        print_json(ca)
    else:
        show_ca(ca, with_pem=args.pem)
    return 0


def run_change(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        if args.action == "delete":
            client.delete(f"/ca-certificates/{segment(args.sn)}")
            ca = {"sn": args.sn, "deleted": True}
        else:
            ca = client.post(f"/ca-certificates/{segment(args.sn)}/{args.action}")
    if args.json:
        print_json(ca)
    elif args.action == "delete":
        print(f"deleted CA {args.sn} and its device certificates")
    else:
        print(f"CA {ca['sn']} is {ca['status']}")
    return 0
