"""The ``certmq`` command: parses the arguments and runs one command group's module."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from certmq import __version__
from certmq.cli import (
    access_key,
    ca,
    connections,
    decisions,
    device,
    explain,
    init,
    mode,
    operations,
    pki,
    serve,
    server_cert,
)
from certmq.cli.errors import CommandError
from certmq.cli.output import escaped_output
from certmq.config import ConfigError
from certmq.instance import InstanceError
from certmq.pki import PkiError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certmq",
        description="certmq: an MQTT broker with X.509 certificate-based device authentication.",
    )
    parser.add_argument("--version", action="version", version=f"certmq {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    init.add_parser(commands)
    serve.add_parser(commands)
    pki.add_parser(commands)
    # Registry commands: they talk to a running instance over its REST API.
    ca.add_parser(commands)
    device.add_parser(commands)
    mode.add_parser(commands)
    server_cert.add_parser(commands)
    connections.add_parser(commands)
    decisions.add_parser(commands)
    operations.add_parser(commands)
    access_key.add_parser(commands)
    explain.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        # A command group given without its subcommand prints that group's help.
        (getattr(args, "help_parser", None) or parser).print_help(sys.stderr)
        return 2
    with escaped_output():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        status: int = args.run(args)
    except (CommandError, ConfigError, InstanceError, PkiError) as error:
        print(f"certmq: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`certmq ca list | head -1`): what it wanted was printed. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    raise SystemExit(main())
