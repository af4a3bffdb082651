"""``certmq device``: device certificates of a running instance."""

from __future__ import annotations

import argparse

from certmq.cli.client import ApiClient, add_instance_arguments, segment
from certmq.cli.output import print_fields, print_json, print_json_items, print_table, short_time

DEVICE_FIELDS = [
    ("ca_sn", "CA Sn"),
    ("device_sn", "DeviceSn"),
    ("name", "name (CN)"),
    ("status", "status"),
    ("fingerprint", "SHA-256"),
    ("valid_begin", "valid from"),
    ("valid_end", "valid until"),
    ("created_at", "registered at"),
]
DEVICE_COLUMNS = [
    ("CA SN", lambda device: device["ca_sn"]),
    ("DEVICE SN", lambda device: device["device_sn"]),
    ("NAME", lambda device: device["name"]),
    ("STATUS", lambda device: device["status"]),
    ("VALID UNTIL", lambda device: short_time(device["valid_end"])),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "device",
        help="list and manage device certificates of a running instance",
        description="List device certificates, and activate, inactivate or delete them. A device "
        "certificate is registered by its first successful connection. Inactivating or deleting "
        "one disconnects the device; to keep a device out, inactivate it (a deleted device "
        "registers again on its next valid connection).",
    )
    parser.set_defaults(help_parser=parser)
    commands_of_device = parser.add_subparsers(title="commands", metavar="COMMAND")

    listing = commands_of_device.add_parser(
        "list", help="list device certificates",
        description="List device certificates, all of them or those of one CA, status or name.",
    )  # fmt: skip
    listing.add_argument("--ca", metavar="SN", help="only those issued by the CA with this Sn")
    listing.add_argument("--status", choices=("active", "inactive"), help="only those with this status")
    listing.add_argument("--name", metavar="CN", help="only those with this Subject CN")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N certificates")
    add_instance_arguments(listing)
    listing.set_defaults(run=run_list)

    show = commands_of_device.add_parser(
        "show", help="show a device certificate", description="Show a device certificate."
    )
    show.add_argument("ca_sn", metavar="CA_SN", help="Sn of the CA that issued it")
    show.add_argument("device_sn", metavar="DEVICE_SN", help="its DeviceSn")
    show.add_argument("--pem", action="store_true", help="print the certificate, PEM, as well")
    add_instance_arguments(show)
    show.set_defaults(run=run_show)

    for action, text in (
        ("activate", "activate a device certificate: the device may connect again"),
        ("inactivate", "inactivate a device certificate: the device is refused and disconnected"),
        ("delete", "delete a device certificate (its next valid connection registers it again)"),
    ):
        command = commands_of_device.add_parser(
            action, help=text, description=text[0].upper() + text[1:] + "."
        )
        command.add_argument("ca_sn", metavar="CA_SN", help="Sn of the CA that issued it")
        command.add_argument("device_sn", metavar="DEVICE_SN", help="its DeviceSn")
        add_instance_arguments(command)
        command.set_defaults(run=run_change, action=action)


def run_list(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        pages = client.pages(
            "/device-certificates",
            limit=args.limit,
            what="device certificates",
            ca_sn=args.ca,
            status=args.status,
            name=args.name,
        )
        if args.json:
            print_json_items(pages)
        else:
            print_table(DEVICE_COLUMNS, pages, "no device certificates match")
    return 0


def _path(args: argparse.Namespace) -> str:
    return f"/device-certificates/{segment(args.ca_sn)}/{segment(args.device_sn)}"


def run_show(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        device = client.get(_path(args))
    if args.json:
        print_json(device)
        return 0
    print_fields(device, DEVICE_FIELDS)
    if args.pem:
        print()
        print(device["pem"], end="" if device["pem"].endswith("\n") else "\n")
    return 0


def run_change(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        if args.action == "delete":
            client.delete(_path(args))
            device = {"ca_sn": args.ca_sn, "device_sn": args.device_sn, "deleted": True}
        else:
            device = client.post(f"{_path(args)}/{args.action}")
    if args.json:
        print_json(device)
    elif args.action == "delete":
        print(f"deleted device certificate {args.device_sn} of CA {args.ca_sn}")
    else:
        print(f"device certificate {device['device_sn']} ({device['name']}) is {device['status']}")
    return 0
