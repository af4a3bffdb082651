"""The instance configuration (docs/configuration.md): a TOML file whose every key can be overridden by
an environment variable ``CERTMQ_<SECTION>_<KEY>``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from certmq.auth.mode import AuthMode
from certmq.auth.ownership import SessionOwnerPolicy

CONFIG_FILE_NAME = "certmq.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")  # readable lines, or one JSON object per line


class ConfigError(Exception):
    """The configuration file or an override is not valid; the message says which key and why."""


@dataclass(slots=True)
class InstanceSection:
    id: str = "mqtt-local-1"
    auth_mode: str = AuthMode.ONE_WAY


@dataclass(slots=True)
class ListenersSection:
    tcp: str = "127.0.0.1:1883"
    tls: str = "127.0.0.1:8883"
    ws: str = "127.0.0.1:8083"
    wss: str = "127.0.0.1:8084"
    http: str = "127.0.0.1:8080"
    # In mutual mode plain TCP and plain WebSocket are closed unless these are true, and secure
    # WebSocket takes "credentials" or asks for "certificates" (certmq.auth.admission).
    tcp_in_mutual_mode: bool = False
    ws_in_mutual_mode: bool = False
    wss_in_mutual_mode: str = "credentials"


@dataclass(slots=True)
class TlsSection:
    cert_file: str = ""
    key_file: str = ""


@dataclass(slots=True)
class StorageSection:
    url: str = ""


@dataclass(slots=True)
class AuthSection:
    bind_client_id: str = "off"
    anonymous: bool = False
    # Topic authorization (docs/configuration.md, "Topic authorization rules").
    acl_file: str = ""
    acl_default: str = "allow"
    subscribe_denied: str = "not-authorized"
    # Who may resume a persistent session (certmq.auth.ownership).
    session_owner: str = "identity"


@dataclass(slots=True)
class MqttSection:
    apsara_client_id: bool = False
    max_packet_size: int = 1048576
    server_keep_alive: int = 0
    connect_timeout: float = 10.0
    receive_maximum: int = 65535
    max_inflight: int = 65535
    max_queued_messages: int = 1000
    # Limits on what one client can make the broker hold (docs/configuration.md, "Limits").
    max_queued_bytes: int = 16 * 1024 * 1024
    max_retained_messages: int = 100_000
    max_retained_bytes: int = 128 * 1024 * 1024
    max_subscriptions_per_client: int = 100
    # Sessions, online and offline: in all, and per identity (0: no limit of its own).
    max_sessions: int = 100_000
    max_sessions_per_certificate: int = 10
    max_sessions_per_access_key: int = 0
    max_anonymous_sessions: int = 1000
    max_topic_length: int = 1024
    max_topic_levels: int = 128
    max_outgoing_bytes: int = 16 * 1024 * 1024
    topic_alias_maximum: int = 10
    max_session_expiry: int = 0xFFFFFFFF
    retain_available: bool = True
    # ApsaraMQ point-to-point: `<parent>/p2p/<ClientId>` is delivered to that client without a subscription.
    p2p_topics: bool = True
    sys_interval: int = 10
    # Retained messages and persistent sessions kept across restarts and crashes: a journal in
    # DATA_DIR/journal, checkpointed to DATA_DIR/broker-state.db.
    persistence: bool = True
    # What an acknowledged message survives: "process-crash" (written to the kernel before the
    # acknowledgement) or "power-loss" (also on the disk: fdatasync before the acknowledgement).
    durability: str = "process-crash"
    checkpoint_bytes: int = 64 * 1024 * 1024  # journal growth between checkpoints; 0: only at shutdown


@dataclass(slots=True)
class ApiSection:
    """The ApsaraMQ-compatible RPC API, see docs/api.md."""

    rate_limit: float = 100.0  # calls per second per AccessKey, sustained; 0: no limit
    rate_burst: int = 200  # calls an AccessKey may make at once after a quiet time
    signature_window: int = 900  # seconds a signed request's timestamp may be off the broker's clock


@dataclass(slots=True)
class AuditSection:
    """The decision log: retention and folding (docs/configuration.md, "[audit]")."""

    retention_days: int = 30  # a decision is deleted this many days after it was taken
    max_rows: int = 1_000_000  # beyond it the oldest go, the strangers' rows first
    fold_window: int = 60  # seconds; a stranger's refusals of one source and reason make one row


@dataclass(slots=True)
class LogSection:
    """What ``certmq serve`` logs; reloaded on SIGHUP."""

    level: str = "info"
    format: str = "text"


@dataclass(slots=True)
class Config:
    instance: InstanceSection = field(default_factory=InstanceSection)
    listeners: ListenersSection = field(default_factory=ListenersSection)
    tls: TlsSection = field(default_factory=TlsSection)
    storage: StorageSection = field(default_factory=StorageSection)
    auth: AuthSection = field(default_factory=AuthSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    api: ApiSection = field(default_factory=ApiSection)
    audit: AuditSection = field(default_factory=AuditSection)
    log: LogSection = field(default_factory=LogSection)
    data_dir: Path = field(default_factory=lambda: Path("data"))


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("instance", "auth_mode"): tuple(AuthMode),
    ("listeners", "wss_in_mutual_mode"): ("credentials", "certificates"),
    ("log", "level"): LOG_LEVELS,
    ("log", "format"): LOG_FORMATS,
    ("auth", "bind_client_id"): ("off", "cn", "device-id"),
    ("auth", "acl_default"): ("allow", "deny"),
    ("auth", "subscribe_denied"): ("not-authorized", "unspecified-error"),
    ("auth", "session_owner"): tuple(SessionOwnerPolicy),
    ("mqtt", "durability"): ("process-crash", "power-loss"),
}

# Keys earlier versions wrote into certmq.toml that mean nothing any more: accepted, ignored.
RETIRED_KEYS: dict[tuple[str, str], str] = {
    ("mqtt", "autosave_interval"): "the journal records every change as it happens",
}


def _coerce(section: str, key: str, value: Any, kind: type, source: str) -> Any:
    where = f"{section}.{key} ({source})"
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _apply(config: Config, section: str, values: Mapping[str, Any], source: str) -> None:
    target = getattr(config, section)
    known = {f.name: f for f in fields(target)}
    for key, value in values.items():
        if (section, key) in RETIRED_KEYS:
            continue
        if key not in known:
            raise ConfigError(f"{section}.{key} ({source}): unknown key; known: {', '.join(known)}")
        kind = type(getattr(type(target)(), key))
        coerced = _coerce(section, key, value, kind, source)
        minimum = _MINIMUMS.get((section, key))
        if minimum is not None and coerced < minimum:
            raise ConfigError(f"{section}.{key} ({source}): must be at least {minimum}, got {value!r}")
        setattr(target, key, coerced)


SECTIONS = ("instance", "listeners", "tls", "storage", "auth", "mqtt", "api", "audit", "log")
# The smallest value of numeric keys that have one.
_MINIMUMS: dict[tuple[str, str], int] = {
    ("audit", "retention_days"): 1,
    ("audit", "max_rows"): 1000,
    ("audit", "fold_window"): 0,
    ("mqtt", "max_sessions"): 1,
    ("mqtt", "max_sessions_per_certificate"): 0,
    ("mqtt", "max_sessions_per_access_key"): 0,
    ("mqtt", "max_anonymous_sessions"): 0,
}


def load_config(
    data_dir: Path, config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read ``config_file`` (default ``data_dir/certmq.toml``, optional), then apply the
    ``CERTMQ_<SECTION>_<KEY>`` environment overrides."""
    config = Config(data_dir=data_dir)
    path = config_file or data_dir / CONFIG_FILE_NAME
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
        for section, values in document.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
            _apply(config, section, values, str(path))
    elif config_file is not None:
        raise ConfigError(f"{config_file}: no such file")
    environ = os.environ if environ is None else environ
    for section in SECTIONS:
        prefix = f"CERTMQ_{section.upper()}_"
        overrides = {
            name[len(prefix) :].lower(): value for name, value in environ.items() if name.startswith(prefix)
        }
        if overrides:
            _apply(config, section, overrides, "environment")
    return config


def changed_settings(before: Config, after: Config) -> list[str]:
    """The ``section.key`` names whose values differ between two configurations."""
    return [
        f"{section}.{key.name}"
        for section in SECTIONS
        for key in fields(getattr(before, section))
        if getattr(getattr(before, section), key.name) != getattr(getattr(after, section), key.name)
    ]


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:1883``) to a (host, port) pair."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listener address {address!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)
