"""``certmq access-key``: AccessKey pairs of a running instance."""

from __future__ import annotations

import argparse

from certmq.cli.client import ApiClient, add_instance_arguments, segment
from certmq.cli.output import print_json, print_json_items, print_table, short_time

ACCESS_KEY_COLUMNS = [
    ("ACCESS KEY ID", lambda key: key["id"]),
    ("CREATED AT", lambda key: short_time(key["created_at"])),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "access-key",
        help="create, list and delete AccessKey pairs",
        description="AccessKey pairs sign MQTT credentials (username Signature|AccessKeyId|InstanceId) "
        "and ApsaraMQ API requests. A new pair works at once; a deleted one stops working at once.",
    )
    parser.set_defaults(help_parser=parser)
    commands_of_access_key = parser.add_subparsers(title="commands", metavar="COMMAND")

    create = commands_of_access_key.add_parser(
        "create", help="create a pair (the secret is shown once)",
        description="Create an AccessKey pair. The secret is shown this once: keep it safe.",
    )  # fmt: skip
    add_instance_arguments(create)
    create.set_defaults(run=run_create)

    listing = commands_of_access_key.add_parser(
        "list",
        help="list the pairs (without secrets)",
        description="List the AccessKey pairs, without secrets.",
    )
    add_instance_arguments(listing)
    listing.set_defaults(run=run_list)

    delete = commands_of_access_key.add_parser(
        "delete", help="delete a pair",
        description="Delete an AccessKey pair: clients and API callers that sign with it are refused from now on.",
    )  # fmt: skip
    delete.add_argument("access_key_id", metavar="ACCESS_KEY_ID", help="the AccessKeyId")
    add_instance_arguments(delete)
    delete.set_defaults(run=run_delete)


def run_create(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        key = client.post("/access-keys")
        instance_id = client.get("/instance")["id"] if not args.json else None
    if args.json:
        print_json(key)
        return 0
    print(f"AccessKeyId      {key['id']}")
    print(f"AccessKeySecret  {key['secret']}")
    print()
    print("The secret is shown once here; keep it safe.")
    print(f"Signature-mode username: Signature|{key['id']}|{instance_id}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        keys = client.get("/access-keys")["items"]
    if args.json:
        print_json_items([keys])
    else:
        print_table(ACCESS_KEY_COLUMNS, [keys], "no AccessKey pairs")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        client.delete(f"/access-keys/{segment(args.access_key_id)}")
    if args.json:
        print_json({"id": args.access_key_id, "deleted": True})
    else:
        print(f"deleted AccessKey {args.access_key_id}")
    return 0
