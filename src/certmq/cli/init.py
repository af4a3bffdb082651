"""``certmq init``: create an instance in a data directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from certmq.instance import CREDENTIALS_FILE, InitResult, init_instance, load_instance

DEFAULT_DATA_DIR = Path("data")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "init",
        help="create an instance: keys, server CA and certificate, admin token, AccessKey",
        description="Create an instance in DIR: its configuration, instance key, a CA and a server "
        "certificate for localhost, an admin token and a first AccessKey pair. The secrets are shown "
        "once; the files that hold them are readable by their owner only. On an existing instance "
        "nothing is changed.",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                        help="the instance's data directory (default: ./data)")  # fmt: skip
    parser.add_argument("--instance-id", metavar="ID",
                        help="the MqttInstanceId (default: mqtt-local-<6 random hex digits>)")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with the instance id, secrets and file paths")  # fmt: skip
    parser.set_defaults(run=run)


def summary(result: InitResult) -> str:
    """The human-readable account of a new instance, secrets included (shown this once)."""
    return "\n".join(
        [
            f"Created instance {result.instance_id} in {result.data_dir}",
            "",
            f"  configuration      {result.config_file}",
            f"  server CA          {result.server_ca_file}",
            "                     (clients verify the broker with it: --cafile for mosquitto_pub/sub)",
            f"  admin token        {result.admin_token}",
            f"  AccessKeyId        {result.access_key_id}",
            f"  AccessKeySecret    {result.access_key_secret}",
            "",
            f"The secrets are shown once here; they are kept in {result.data_dir / CREDENTIALS_FILE} (mode 0600).",
            f"Signature-mode username: Signature|{result.access_key_id}|{result.instance_id}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    result = init_instance(args.data_dir, args.instance_id)
    if result is None:
        data_dir = args.data_dir.absolute()
        message = f"{data_dir} already holds an instance; nothing changed"
        if args.json:
            instance = load_instance(data_dir)
            existing = {
                "created": False,
                "message": message,
                "instance_id": instance.id,
                "server_ca_file": str(instance.server_ca_file),
                "config_file": str(instance.config_file),
            }
            print(json.dumps(existing))
        else:
            print(message)
        return 0
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(summary(result))
    return 0
