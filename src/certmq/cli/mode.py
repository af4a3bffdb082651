"""``certmq mode``: the auth mode of a running instance, one-way or mutual."""

from __future__ import annotations

import argparse

from certmq.auth.mode import AuthMode
from certmq.cli.client import ApiClient, add_instance_arguments
from certmq.cli.output import print_json


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "mode",
        help="show or switch the auth mode (one-way or mutual TLS)",
        description="Show or switch the auth mode. one-way: clients verify the broker and "
        "authenticate with credentials. mutual: the broker also requires a registered device "
        "certificate on the MQTT over TLS listener, and closes the plain listeners. Both commands "
        "say which listeners are open and to whom.",
    )
    parser.set_defaults(help_parser=parser)
    commands_of_mode = parser.add_subparsers(title="commands", metavar="COMMAND")

    show = commands_of_mode.add_parser("show", help="show the auth mode", description="Show the auth mode.")
    add_instance_arguments(show)
    show.set_defaults(run=run_show)

    switch = commands_of_mode.add_parser(
        "set", help="switch the auth mode",
        description="Switch the auth mode. New handshakes follow it at once; live sessions are "
        "kept unless --disconnect-nonconforming.",
    )  # fmt: skip
    switch.add_argument("mode", choices=[mode.value for mode in AuthMode], help="the new auth mode")
    switch.add_argument("--disconnect-nonconforming", action="store_true",
                        help="disconnect the live sessions that the new mode would refuse")  # fmt: skip
    add_instance_arguments(switch)
    switch.set_defaults(run=run_set)


def run_show(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args) as client:
        mode = client.get("/auth-mode")
    if args.json:
        print_json(mode)
    else:
        print(mode["mode"])
        print(f"listeners: {mode['listeners']}")
    return 0


def run_set(args: argparse.Namespace) -> int:
    change = {"mode": args.mode, "disconnect_nonconforming": args.disconnect_nonconforming}
    with ApiClient.from_args(args) as client:
        changed = client.put("/auth-mode", change)
    if args.json:
        print_json(changed)
    else:
        suffix = (
            f"; {changed['disconnected']} session(s) disconnected" if args.disconnect_nonconforming else ""
        )
        print(f"auth mode is {changed['mode']}{suffix}")
        print(f"listeners: {changed['listeners']}")
    return 0
