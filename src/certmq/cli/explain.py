"""``certmq explain``: run the decision procedure on a device certificate without
connecting, against the live registry of a running instance, and print each step."""

from __future__ import annotations

import argparse
from pathlib import Path

from certmq.cli.client import ApiClient, add_instance_arguments
from certmq.cli.errors import CommandError
from certmq.cli.output import print_json


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "explain",
        help="show how a device certificate would be authenticated, step by step",
        description="Run the mutual-authentication decision procedure on DEVICE.pem as the "
        "running instance would at CONNECT, without connecting, and print each step and the "
        "decision. Nothing is registered. DEVICE.pem may be a chain file (device certificate first).",
    )
    parser.add_argument("certificate", type=Path, metavar="DEVICE.pem", help="the device certificate, PEM")
    add_instance_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        certificate_pem = args.certificate.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(
            f"cannot read the certificate {args.certificate}: {getattr(error, 'strerror', None) or error}"
        ) from None
    with ApiClient.from_args(args) as client:
        explanation = client.post("/explain", {"certificate_pem": certificate_pem})
    if args.json:
        print_json(explanation)
        return 0
    for step in explanation["trace"]:
        print(f"step {step['step']}  {step['text']}")
    verdict = "ALLOW" if explanation["allowed"] else "DENY"
    print(f"decision: {verdict} at step {explanation['step']} ({explanation['reason']})")
    if explanation["reason"] == "new-device":
        print("(explain registers nothing: the device's first connection would)")
    return 0
