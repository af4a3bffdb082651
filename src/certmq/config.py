"""The instance configuration (docs/configuration.md): a TOML file whose every key can be overridden by
an environment variable ``CERTMQ_<SECTION>_<KEY>``."""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from certmq.auth.mode import AuthMode
from certmq.auth.ownership import SessionOwnerPolicy

CONFIG_FILE_NAME = "certmq.toml"
# What a node name may hold: it is one token of NATS subjects and names consumers.
NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")  # readable lines, or one JSON object per line


class ConfigError(Exception):
    """The configuration file or an override is not valid; the message says which key and why."""


def setting(
    default: Any,
    doc: str,
    *,
    choices: tuple[str, ...] = (),
    minimum: int | None = None,
) -> Any:
    """A key of the configuration: its default, what it means (the comment ``certmq init``
    writes beside it: a line, and more lines after newlines), the values it may take, its
    smallest value."""
    return field(default=default, metadata={"doc": doc, "choices": choices, "minimum": minimum})


@dataclass(frozen=True, slots=True)
class SettingDefinition:
    section: str
    key: str
    default: Any
    doc: str
    choices: tuple[str, ...]
    minimum: int | None


@dataclass(slots=True)
class InstanceSection:
    id: str = setting("mqtt-local-1", "MqttInstanceId: the <InstanceId> of Signature-mode usernames")
    auth_mode: str = setting(
        AuthMode.ONE_WAY,
        '"one-way": clients verify the broker, authenticate with credentials\n'
        '"mutual": the broker also requires a registered device certificate',
        choices=tuple(AuthMode),
    )


@dataclass(slots=True)
class ListenersSection:
    NOTE: ClassVar[str] = (
        'HOST:PORT ("[::1]:1883" for IPv6); "" disables a listener'  # written beside the section's header
    )

    tcp: str = setting("127.0.0.1:1883", "MQTT over TCP")
    tls: str = setting("127.0.0.1:8883", "MQTT over TLS (one-way or mutual, per auth_mode)")
    ws: str = setting("127.0.0.1:8083", "MQTT over WebSocket, path /mqtt")
    wss: str = setting("127.0.0.1:8084", "MQTT over secure WebSocket, path /mqtt")
    http: str = setting("127.0.0.1:8080", "REST API, ApsaraMQ RPC API, console, /metrics")
    # In mutual mode plain TCP and plain WebSocket are closed unless these are true, and secure
    # WebSocket takes "credentials" or asks for "certificates" (certmq.auth.admission).
    tcp_in_mutual_mode: bool = setting(False, "keep plain TCP open in mutual mode (it is closed by default)")
    ws_in_mutual_mode: bool = setting(False, "keep plain WebSocket open in mutual mode (closed by default)")
    wss_in_mutual_mode: str = setting(
        "credentials",
        'secure WebSocket in mutual mode: "credentials" (browsers)\n'
        '| "certificates" (asks for a device certificate, as tls does)',
        choices=("credentials", "certificates"),
    )


@dataclass(slots=True)
class TlsSection:
    cert_file: str = setting("", 'server certificate chain, PEM; "": server/server.pem made by init')
    key_file: str = setting("", 'its private key; "": server/server.key')


@dataclass(slots=True)
class StorageSection:
    url: str = setting("", '"": SQLite in the data directory; or postgresql://user@host/db')


@dataclass(slots=True)
class AuthSection:
    bind_client_id: str = setting(
        "off",
        '"off" | "cn" (Client Id = certificate CN)\n| "device-id" (the DeviceID of GroupID@@@DeviceID = CN)',
        choices=("off", "cn", "device-id"),
    )
    anonymous: bool = setting(False, "allow CONNECT without credentials on one-way and plain listeners")
    # Topic authorization (docs/configuration.md, "Topic authorization rules").
    acl_file: str = setting("", 'topic authorization rules (TOML); "": none')
    acl_default: str = setting("allow", '"allow" | "deny" when no rule applies', choices=("allow", "deny"))
    subscribe_denied: str = setting(
        "not-authorized",
        'SUBACK code for a refused subscription on MQTT 5:\n"not-authorized" (0x87) | "unspecified-error" (0x80)',
        choices=("not-authorized", "unspecified-error"),
    )
    # Who may resume a persistent session (certmq.auth.ownership).
    session_owner: str = setting(
        "identity",
        '"identity": a session is resumed only by the identity that\ncreated it | "any": by any client sending its client id',
        choices=tuple(SessionOwnerPolicy),
    )


@dataclass(slots=True)
class MqttSection:
    apsara_client_id: bool = setting(False, "require Client Ids of the form GroupID@@@DeviceID")
    max_packet_size: int = setting(1048576, "bytes")
    server_keep_alive: int = setting(0, "seconds; 0: accept the client's value")
    connect_timeout: float = setting(10.0, "seconds to wait for CONNECT after the connection opens")
    receive_maximum: int = setting(65535, "QoS 1 and 2 PUBLISH a client may have unacknowledged towards us")
    max_inflight: int = setting(65535, "QoS 1 and 2 PUBLISH we send before waiting for acknowledgements")
    max_queued_messages: int = setting(1000, "messages queued per offline or slow session")
    # Limits on what one client can make the broker hold (docs/configuration.md, "Limits").
    max_queued_bytes: int = setting(16 * 1024 * 1024, "bytes queued and in flight per session")
    max_retained_messages: int = setting(100_000, "retained messages kept, all topics together")
    max_retained_bytes: int = setting(128 * 1024 * 1024, "bytes the retained messages may hold")
    max_subscriptions_per_client: int = setting(100, "subscriptions one session may have")
    # Sessions, online and offline: in all, and per identity (0: no limit of its own).
    max_sessions: int = setting(100_000, "sessions the broker holds, online and offline, in all", minimum=1)
    max_sessions_per_certificate: int = setting(10, "sessions one device certificate may hold", minimum=0)
    max_sessions_per_access_key: int = setting(
        0, "sessions one AccessKey may hold; 0: only max_sessions", minimum=0
    )
    max_anonymous_sessions: int = setting(
        1000, "sessions of clients without credentials, together", minimum=0
    )
    max_topic_length: int = setting(1024, "bytes of a topic name or filter")
    max_topic_levels: int = setting(128, "levels of a topic name or filter")
    max_outgoing_bytes: int = setting(
        16 * 1024 * 1024, "write buffer per connection before it counts as slow"
    )
    topic_alias_maximum: int = setting(10, "MQTT 5 topic aliases in each direction")
    max_session_expiry: int = setting(
        0xFFFFFFFF, "seconds; caps the Session Expiry Interval a client asks for"
    )
    retain_available: bool = setting(True, "store and deliver retained messages")
    # ApsaraMQ point-to-point: `<parent>/p2p/<ClientId>` is delivered to that client without a subscription.
    p2p_topics: bool = setting(True, "<parent>/p2p/<ClientId> goes to that client, subscribed or not")
    sys_interval: int = setting(10, "seconds between $SYS statistics updates; 0 disables them")
    # Retained messages and persistent sessions kept across restarts and crashes: a journal in
    # DATA_DIR/journal, checkpointed to DATA_DIR/broker-state.db.
    persistence: bool = setting(True, "keep retained messages and sessions across restarts and crashes")
    # "process-crash": written to the kernel before the acknowledgement; "power-loss": also on
    # the disk, fdatasync before the acknowledgement.
    durability: str = setting(
        "process-crash",
        'what an acknowledged message survives: "process-crash" | "power-loss"',
        choices=("process-crash", "power-loss"),
    )
    checkpoint_bytes: int = setting(
        64 * 1024 * 1024, "journal bytes between checkpoints to broker-state.db; 0: at shutdown only"
    )


@dataclass(slots=True)
class ApiSection:
    NOTE: ClassVar[str] = (
        "the ApsaraMQ-compatible RPC API at / of the http listener"  # written beside the section's header
    )

    rate_limit: float = setting(100.0, "calls per second per AccessKey, sustained; 0: no limit")
    rate_burst: int = setting(200, "calls an AccessKey may make at once after a quiet time")
    signature_window: int = setting(900, "seconds a request's signed timestamp may be off this clock")


@dataclass(slots=True)
class AuditSection:
    NOTE: ClassVar[str] = (
        'the decision log (docs/registry.md, "Retention and folding")'  # written beside the section's header
    )

    retention_days: int = setting(30, "days a decision is kept", minimum=1)
    max_rows: int = setting(1_000_000, "rows kept at most; the strangers' rows go first", minimum=1000)
    fold_window: int = setting(
        60, "seconds; a stranger's refusals of one source and reason make one row", minimum=0
    )


@dataclass(slots=True)
class LogSection:
    NOTE: ClassVar[str] = (
        "reloaded on SIGHUP; `serve --log-level` / `--log-format` win over these"  # written beside the section's header
    )

    level: str = setting("info", '"debug" | "info" | "warning" | "error"', choices=LOG_LEVELS)
    format: str = setting("text", '"text" | "json" (one object per line)', choices=LOG_FORMATS)


@dataclass(slots=True)
class ClusterSection:
    NOTE: ClassVar[str] = (
        'several nodes as one broker (docs/cluster.md); nats_servers "": a single node'  # written beside the section's header
    )

    node_name: str = setting(
        "",
        'unique per node; "": derived from the host name and the MQTT port\n(`serve --workers N` adds -1 … -N)',
    )
    nats_servers: str = setting(
        "",
        "comma-separated nats:// (or tls://) URLs; set: this node joins the cluster\n(storage.url must be PostgreSQL)",
    )
    nats_credentials: str = setting("", 'a NATS credentials file (.creds: JWT and NKey seed); "": none')
    nats_tls_ca_file: str = setting(
        "", "CA certificates the NATS servers' certificates are checked with; \"\": the system's"
    )
    nats_tls_cert_file: str = setting("", 'client certificate for NATS servers that ask for one; "": none')
    nats_tls_key_file: str = setting("", "its private key")
    subject_prefix: str = setting(
        "certmq",
        "first token of every NATS subject and stream name of this cluster\n(clusters sharing NATS servers need different ones)",
    )
    state_storage: str = setting(
        "nats",
        'where the node keeps its sessions and retained messages (mqtt.persistence):\n"nats": JetStream, where every node can read them | "local": its data directory',
        choices=("nats", "local"),
    )
    adoption_grace: float = setting(
        10.0,
        "seconds a node may be gone before another adopts its sessions when none of its clients\nreconnects (a claim adopts them at once)",
    )
    message_stream_bytes: int = setting(
        512 * 1024 * 1024,
        "what the stream of QoS 1 and 2 messages between the nodes holds at most (shared by the\ncluster); when full, new messages are refused (PUBACK 0x97), none acknowledged is dropped",
    )


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
    cluster: ClusterSection = field(default_factory=ClusterSection)
    data_dir: Path = field(default_factory=lambda: Path("data"))


SECTIONS = ("instance", "listeners", "tls", "storage", "auth", "mqtt", "api", "audit", "log", "cluster")


def section_note(section: str) -> str:
    """What a section is about, written beside its header; "" for most."""
    return getattr(type(getattr(Config(), section)), "NOTE", "")


def definitions() -> list[SettingDefinition]:
    """Every key of the configuration, in file order, as defined above."""
    defaults = Config()
    return [
        SettingDefinition(
            section,
            key.name,
            getattr(getattr(defaults, section), key.name),
            key.metadata["doc"],
            key.metadata["choices"],
            key.metadata["minimum"],
        )
        for section in SECTIONS
        for key in fields(getattr(defaults, section))
    ]


_DEFINITIONS = {(definition.section, definition.key): definition for definition in definitions()}


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
    choices = _DEFINITIONS[section, key].choices
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
        kind = type(_DEFINITIONS[section, key].default)
        coerced = _coerce(section, key, value, kind, source)
        minimum = _DEFINITIONS[section, key].minimum
        if minimum is not None and coerced < minimum:
            raise ConfigError(f"{section}.{key} ({source}): must be at least {minimum}, got {value!r}")
        setattr(target, key, coerced)


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


def check_cluster(config: Config) -> None:
    """Raise ConfigError when the ``[cluster]`` settings cannot work: a node joins a cluster
    only with a registry every node shares, which SQLite in a data directory is not."""
    if not config.cluster.nats_servers.strip():
        return
    if not _shared_registry(config):
        raise ConfigError(
            f"cluster.nats_servers is set, so this node joins a cluster, but storage.url is {_storage(config)}: "
            "the nodes of a cluster share one registry, set storage.url (CERTMQ_STORAGE_URL) to "
            "postgresql://USER@HOST/DB (docs/cluster.md)"
        )
    name = config.cluster.node_name
    if name and not NODE_NAME.fullmatch(name):
        raise ConfigError(
            f"cluster.node_name: {name!r} may hold only letters, digits, '-' and '_' "
            "(it names the node's NATS consumers and subjects)"
        )
    for url in nats_servers(config):
        if "://" not in url:
            raise ConfigError(
                f"cluster.nats_servers: {url!r} is not a URL (nats://HOST:PORT or tls://HOST:PORT)"
            )


def check_workers(config: Config, workers: int) -> None:
    """Raise ConfigError when ``certmq serve --workers N`` (N > 1) cannot run on ``config``: its
    workers are the nodes of a cluster on this machine, which share their listening ports."""
    missing = []
    if not nats_servers(config):
        missing.append(
            "cluster.nats_servers is empty: the workers pass their messages to each other through NATS, "
            "set cluster.nats_servers (CERTMQ_CLUSTER_NATS_SERVERS) to nats://HOST:PORT"
        )
    if not _shared_registry(config):
        missing.append(
            f"storage.url is {_storage(config)}: the workers share one registry, "
            "set storage.url (CERTMQ_STORAGE_URL) to postgresql://USER@HOST/DB"
        )
    if missing:
        raise ConfigError(
            f"--workers {workers} runs {workers} processes of one node as a cluster on this machine, "
            f"but {'; and '.join(missing)} (docs/cluster.md)"
        )
    for name, address in listener_addresses(config).items():
        if parse_address(address)[1] == 0:
            raise ConfigError(
                f"--workers {workers}: listeners.{name} is {address!r}, any free port, but the workers "
                "share their listening ports: give it a port number"
            )


def listener_addresses(config: Config) -> dict[str, str]:
    """The address of each listener that is not disabled (``""``), by name: MQTT's, then HTTP's."""
    listeners = config.listeners
    addresses = (
        ("tcp", listeners.tcp), ("tls", listeners.tls), ("ws", listeners.ws), ("wss", listeners.wss),
        ("http", listeners.http),
    )  # fmt: skip
    return {name: address for name, address in addresses if address}


def _shared_registry(config: Config) -> bool:
    """Whether ``storage.url`` is a registry several nodes can share (PostgreSQL)."""
    return config.storage.url.startswith(("postgresql:", "postgresql+", "postgres:"))


def _storage(config: Config) -> str:
    return repr(config.storage.url) if config.storage.url else "empty (SQLite in the data directory)"


def nats_servers(config: Config) -> list[str]:
    """The NATS server URLs of ``cluster.nats_servers``; empty on a single node."""
    return [url.strip() for url in config.cluster.nats_servers.split(",") if url.strip()]


def state_in_nats(config: Config) -> bool:
    """Whether this node keeps its sessions and retained messages in JetStream: a node of a
    cluster with ``cluster.state_storage = "nats"`` and ``mqtt.persistence`` on."""
    return bool(nats_servers(config)) and config.mqtt.persistence and config.cluster.state_storage == "nats"


def node_name(config: Config) -> str:
    """This node's name in the cluster: ``cluster.node_name``, else the host name and the port
    of the first MQTT listener (unique on one machine, readable in `certmq connections`)."""
    if config.cluster.node_name:
        return config.cluster.node_name
    listeners = config.listeners
    address = listeners.tcp or listeners.tls or listeners.ws or listeners.wss or listeners.http
    port = parse_address(address)[1] if address else 0
    return f"{socket.gethostname().split('.')[0]}-{port}"
