"""An instance's data directory: what ``certmq init`` creates and ``certmq serve`` loads.

Layout of ``DATA_DIR``::

    certmq.toml               configuration, every key present and commented (mode 0644)
    instance.key              32 random bytes that encrypt secrets at rest (mode 0600)
    credentials.json          admin token and AccessKey pairs (mode 0600), format below
    server-ca/ca.pem          the CA that signed the server certificate: give it to clients
    server-ca/ca.key          its private key (mode 0600)
    server/server.pem         server certificate chain, leaf first (server certificate + CA)
    server/server.key         its private key (mode 0600)
    workers/NODE/             the sessions of each worker of ``certmq serve --workers N``, by its
                              node name (a single process keeps them in DATA_DIR itself)

``instance.key`` is written last: its presence is what makes a directory an initialised instance,
so an interrupted ``init`` is simply run again.

``credentials.json``::

    {
      "format": 1,
      "admin_token": "<bearer token of the REST API and the console>",
      "access_keys": [
        {
          "id": "LTAI...",                 # AccessKeyId: "LTAI" + 20 letters and digits
          "secret": "<base64>",            # AccessKeySecret sealed with the instance key
          "created_at": "2024-01-01T00:00:00Z"
        }
      ]
    }

How a secret is sealed: :mod:`certmq.sealed_secrets`. The admin token is stored as is: the CLI reads it to talk to the instance, and
the file mode is what protects it.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from certmq import pki
from certmq.config import CONFIG_FILE_NAME, Config, ConfigError, TlsSection, load_config
from certmq.config_file import render_config
from certmq.sealed_secrets import (
    SecretDoesNotOpen,
    new_access_key,
    new_admin_token,
    open_access_keys,
    seal_access_key,
)

INSTANCE_KEY_FILE = "instance.key"
CREDENTIALS_FILE = "credentials.json"
SERVER_CA_DIR = "server-ca"
SERVER_DIR = "server"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
WORKERS_DIR = "workers"
SERVER_NAMES = ["localhost", "127.0.0.1", "::1"]
CREDENTIALS_FORMAT = 1
INSTANCE_KEY_SIZE = 32
_INSTANCE_ID_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")


class InstanceError(Exception):
    """The data directory is not a usable instance; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Instance:
    """A loaded instance: what the broker and the APIs need from the data directory."""

    id: str
    data_dir: Path
    config_file: Path
    instance_key: bytes
    server_ca_file: Path
    server_ca_key_file: Path
    server_cert_file: Path  # chain, leaf first; the [tls] cert_file override when set
    server_key_file: Path
    admin_token: str
    access_keys: Mapping[str, str]  # AccessKeyId -> AccessKeySecret, decrypted

    def __repr__(self) -> str:
        return f"Instance(id={self.id!r}, data_dir={str(self.data_dir)!r})"


@dataclass(frozen=True, slots=True)
class InitResult:
    """What ``init`` created; the secrets here are shown to the operator once."""

    instance_id: str
    admin_token: str
    access_key_id: str
    access_key_secret: str
    server_ca_file: Path
    config_file: Path
    data_dir: Path

    def as_json(self) -> dict[str, str]:
        """The object that ``certmq init --json`` prints (README.md, "Commands"), with absolute paths."""
        return {
            "instance_id": self.instance_id,
            "admin_token": self.admin_token,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
            "server_ca_file": str(self.server_ca_file),
            "config_file": str(self.config_file),
        }


def new_instance_id() -> str:
    return f"mqtt-local-{secrets.token_hex(3)}"


# --- init and load ------------------------------------------------------------------------------


def is_initialised(data_dir: Path) -> bool:
    return (data_dir / INSTANCE_KEY_FILE).exists()


def init_instance(data_dir: Path, instance_id: str | None = None) -> InitResult | None:
    """Create an instance in ``data_dir`` (docs/cli.md, "certmq init"). Returns what was created,
    with the secrets to show once, or None when ``data_dir`` already holds an instance: then
    nothing is changed.

    A ``certmq.toml`` that is already there is kept (an operator may write it before the first
    start); its ``[instance] id`` is the instance id then.
    """
    data_dir = data_dir.absolute()
    if is_initialised(data_dir):
        return None
    config_file = data_dir / CONFIG_FILE_NAME
    if config_file.exists():
        configured_id = load_config(data_dir, config_file, environ={}).instance.id
        if instance_id is not None and instance_id != configured_id:
            raise InstanceError(
                f"{config_file} already sets [instance] id = {configured_id!r}; "
                f"edit it, or leave out --instance-id"
            )
        instance_id = configured_id
    if instance_id is None:
        instance_id = new_instance_id()
    _check_instance_id(instance_id)

    # The store and the keys live here: keep the directory private to its owner.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not config_file.exists():
        pki.write_file_atomically(config_file, render_config(instance_id).encode(), pki.PUBLIC_FILE_MODE)

    ca_key = pki.generate_key("ec")
    ca = pki.CertifiedKey(pki.create_ca(f"certmq {instance_id} server CA", ca_key), ca_key)
    server_ca_file, _ = pki.write_ca_dir(data_dir / SERVER_CA_DIR, ca, overwrite=True)
    server_key = pki.generate_key("ec")
    server = pki.issue_server_certificate(
        ca.certificate, ca.key, "localhost", SERVER_NAMES, server_key.public_key()
    )
    pki.write_private_key(data_dir / SERVER_DIR / SERVER_KEY_FILE, server_key)
    pki.write_certificates(data_dir / SERVER_DIR / SERVER_CERT_FILE, server, ca.certificate)

    instance_key = os.urandom(INSTANCE_KEY_SIZE)
    admin_token = new_admin_token()
    access_key = new_access_key()
    credentials = {
        "format": CREDENTIALS_FORMAT,
        "admin_token": admin_token,
        "access_keys": [seal_access_key(instance_key, access_key)],
    }
    write_credentials(data_dir, credentials)
    pki.write_file_atomically(data_dir / INSTANCE_KEY_FILE, instance_key, pki.SECRET_FILE_MODE)
    return InitResult(
        instance_id=instance_id,
        admin_token=admin_token,
        access_key_id=access_key.id,
        access_key_secret=access_key.secret,
        server_ca_file=server_ca_file,
        config_file=config_file,
        data_dir=data_dir,
    )


def _check_instance_id(instance_id: str) -> None:
    if not 1 <= len(instance_id) <= 64 or not set(instance_id) <= _INSTANCE_ID_CHARACTERS:
        raise InstanceError(
            f"instance id {instance_id!r}: use 1 to 64 letters, digits, '-', '_' or '.' (e.g. mqtt-local-1)"
        )


def write_credentials(data_dir: Path, credentials: dict[str, Any]) -> None:
    """Replace ``credentials.json`` atomically (mode 0600)."""
    data = json.dumps(credentials, indent=2).encode() + b"\n"
    pki.write_file_atomically(data_dir / CREDENTIALS_FILE, data, pki.SECRET_FILE_MODE)


def read_credentials(data_dir: Path) -> dict[str, Any]:
    path = data_dir / CREDENTIALS_FILE
    try:
        credentials: dict[str, Any] = json.loads(path.read_text())
    except OSError as error:
        raise InstanceError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InstanceError(f"{path} is not valid JSON: {error}") from None
    if credentials.get("format") != CREDENTIALS_FORMAT:
        raise InstanceError(f"{path}: unknown format {credentials.get('format')!r}; expected 1")
    return credentials


def read_instance_key(data_dir: Path) -> bytes:
    path = data_dir / INSTANCE_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise InstanceError(
            f"{data_dir} is not an instance (no {INSTANCE_KEY_FILE}); run certmq init"
        ) from None
    except OSError as error:
        raise InstanceError(f"cannot read {path}: {error.strerror}") from None
    if len(key) != INSTANCE_KEY_SIZE:
        raise InstanceError(f"{path} must hold exactly {INSTANCE_KEY_SIZE} bytes, it holds {len(key)}")
    return key


def worker_state_directory(data_dir: Path, node_name: str) -> Path:
    """Where a worker of ``certmq serve --workers N`` keeps its sessions (the journal and its
    checkpoints), apart from the other workers': a node's state is its own, and each worker is
    a node of the cluster."""
    return data_dir / WORKERS_DIR / node_name


def _configured_path(data_dir: Path, value: str, default: Path) -> Path:
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else data_dir / path


def server_certificate_files(data_dir: Path, tls: TlsSection) -> tuple[Path, Path]:
    """The server certificate and key files ``[tls]`` names, relative to ``data_dir``; by
    default the pair init made."""
    server_dir = data_dir / SERVER_DIR
    cert_file = _configured_path(data_dir, tls.cert_file, server_dir / SERVER_CERT_FILE)
    # A configured certificate without a key file is a PEM holding both, as mosquitto allows.
    key_default = cert_file if tls.cert_file else server_dir / SERVER_KEY_FILE
    return cert_file, _configured_path(data_dir, tls.key_file, key_default)


def load_instance(data_dir: Path, config: Config | None = None, config_file: Path | None = None) -> Instance:
    """The instance in ``data_dir``. The instance id and the server certificate files come from
    ``config`` (read from ``config_file``, default ``data_dir/certmq.toml``, and the environment
    when not given); relative ``[tls]`` paths are relative to ``data_dir``, and a ``cert_file``
    without a ``key_file`` holds both."""
    data_dir = data_dir.absolute()
    instance_key = read_instance_key(data_dir)
    if config is None:
        try:
            config = load_config(data_dir, config_file)
        except ConfigError as error:
            raise InstanceError(str(error)) from None
    config_file = (config_file or data_dir / CONFIG_FILE_NAME).absolute()
    credentials = read_credentials(data_dir)
    try:
        opened = open_access_keys(instance_key, credentials["access_keys"])
        access_keys = MappingProxyType({access_key.id: access_key.secret for access_key in opened})
        admin_token = str(credentials["admin_token"])
    except (KeyError, TypeError) as error:
        raise InstanceError(f"{data_dir / CREDENTIALS_FILE}: missing or malformed field {error}") from None
    except SecretDoesNotOpen as error:
        raise InstanceError(str(error)) from error
    cert_file, key_file = server_certificate_files(data_dir, config.tls)
    return Instance(
        id=config.instance.id,
        data_dir=data_dir,
        config_file=config_file,
        instance_key=instance_key,
        server_ca_file=data_dir / SERVER_CA_DIR / pki.CA_CERT_FILE,
        server_ca_key_file=data_dir / SERVER_CA_DIR / pki.CA_KEY_FILE,
        server_cert_file=cert_file,
        server_key_file=key_file,
        admin_token=admin_token,
        access_keys=access_keys,
    )
