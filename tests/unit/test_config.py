"""certmq.config: the TOML file, its environment overrides, and the errors that name the key."""

from __future__ import annotations

import socket
from dataclasses import fields
from pathlib import Path

import pytest

from certmq.config import (
    SECTIONS,
    Config,
    ConfigError,
    changed_settings,
    check_cluster,
    check_workers,
    definitions,
    load_config,
    nats_servers,
    node_name,
    parse_address,
)
from certmq.config_file import render_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    assert config == Config(data_dir=tmp_path)
    assert config.instance.auth_mode == "one-way"
    assert config.listeners.tcp == "127.0.0.1:1883"
    assert config.listeners.tls == "127.0.0.1:8883"
    assert config.listeners.ws == "127.0.0.1:8083"
    assert config.listeners.wss == "127.0.0.1:8084"
    assert config.listeners.http == "127.0.0.1:8080"
    assert config.auth.anonymous is False
    assert config.auth.bind_client_id == "off"
    assert config.mqtt.max_packet_size == 1048576


def test_file_in_the_data_dir(tmp_path: Path) -> None:
    write(
        tmp_path / "certmq.toml",
        """
[instance]
id = "mqtt-test-9"
auth_mode = "mutual"
[listeners]
tcp = ""
tls = "0.0.0.0:18883"
[auth]
anonymous = true
bind_client_id = "device-id"
[mqtt]
max_packet_size = 4096
connect_timeout = 2.5
""",
    )
    config = load_config(tmp_path, environ={})
    assert config.instance.id == "mqtt-test-9"
    assert config.instance.auth_mode == "mutual"
    assert config.listeners.tcp == ""
    assert config.listeners.tls == "0.0.0.0:18883"
    assert config.listeners.ws == "127.0.0.1:8083"  # untouched keys keep their defaults
    assert config.auth.anonymous is True
    assert config.auth.bind_client_id == "device-id"
    assert config.mqtt.max_packet_size == 4096
    assert config.mqtt.connect_timeout == 2.5


def test_explicit_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.toml", '[instance]\nid = "mqtt-x"\n')
    assert load_config(tmp_path / "data", path, environ={}).instance.id == "mqtt-x"
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path, tmp_path / "missing.toml", environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    write(tmp_path / "certmq.toml", '[instance]\nid = "from-file"\n[auth]\nanonymous = false\n')
    environ = {
        "CERTMQ_INSTANCE_ID": "from-env",
        "CERTMQ_AUTH_ANONYMOUS": "true",
        "CERTMQ_LISTENERS_TCP": "",
        "CERTMQ_MQTT_MAX_PACKET_SIZE": "2048",
        "CERTMQ_MQTT_CONNECT_TIMEOUT": "0.5",
        "CERTMQ_INSTANCE_AUTH_MODE": "mutual",
        "OTHER_VARIABLE": "ignored",
    }
    config = load_config(tmp_path, environ=environ)
    assert config.instance.id == "from-env"
    assert config.instance.auth_mode == "mutual"
    assert config.auth.anonymous is True
    assert config.listeners.tcp == ""
    assert config.mqtt.max_packet_size == 2048
    assert config.mqtt.connect_timeout == 0.5


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("1", True), ("on", True), ("FALSE", False), ("0", False)]
)
def test_boolean_overrides(tmp_path: Path, text: str, value: bool) -> None:
    assert load_config(tmp_path, environ={"CERTMQ_AUTH_ANONYMOUS": text}).auth.anonymous is value


def test_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTMQ_INSTANCE_ID", "mqtt-from-process")
    assert load_config(tmp_path).instance.id == "mqtt-from-process"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[instance\n", "not valid TOML"),
        ("[nosuch]\nkey = 1\n", r"unknown section \[nosuch\]"),
        ("[instance]\nnosuch = 1\n", "instance.nosuch .*unknown key"),
        ('[instance]\nauth_mode = "both"\n', "instance.auth_mode .*must be one of one-way, mutual"),
        ('[auth]\nbind_client_id = "yes"\n', "auth.bind_client_id"),
        ('[auth]\nanonymous = "maybe"\n', "auth.anonymous .*expected true or false"),
        ('[mqtt]\nmax_packet_size = "big"\n', "mqtt.max_packet_size .*expected a number"),
        ("[mqtt]\nmax_packet_size = true\n", "mqtt.max_packet_size .*expected a number"),
        ("[listeners]\ntcp = 1883\n", "listeners.tcp .*expected a string"),
        ('[mqtt]\ndurability = "disk"\n', "mqtt.durability .*must be one of process-crash, power-loss"),
        ("title = 1\n", "unknown section"),
        ("[audit]\nretention_days = 0\n", "audit.retention_days .*must be at least 1"),
        ("[audit]\nmax_rows = 10\n", "audit.max_rows .*must be at least 1000"),
        ("[audit]\nfold_window = -1\n", "audit.fold_window .*must be at least 0"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "certmq.toml", text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CERTMQ_INSTANCE_AUTH_MODE", "none", r"instance.auth_mode \(environment\)"),
        ("CERTMQ_MQTT_SERVER_KEEP_ALIVE", "soon", r"mqtt.server_keep_alive \(environment\)"),
        ("CERTMQ_AUTH_NOSUCH", "1", r"auth.nosuch \(environment\): unknown key"),
        ("CERTMQ_AUDIT_MAX_ROWS", "-5", r"audit.max_rows \(environment\): must be at least 1000"),
    ],
)
def test_environment_errors_name_the_key(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, environ={name: value})


def test_a_key_an_earlier_version_wrote_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "certmq.toml", "[mqtt]\nautosave_interval = 60\n")
    config = load_config(tmp_path, environ={"CERTMQ_MQTT_AUTOSAVE_INTERVAL": "1"})
    assert config == Config(data_dir=tmp_path)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("[::1]:8883", ("::1", 8883)),
        (":1883", ("0.0.0.0", 1883)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["1883", "host:", "host:port"])
def test_parse_address_errors(address: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address(address)


def test_the_file_init_writes_is_the_defaults_and_names_every_key(tmp_path: Path) -> None:
    text = render_config("mqtt-local-abc123")
    write(tmp_path / "certmq.toml", text)
    config = load_config(tmp_path, environ={})
    expected = Config(data_dir=tmp_path)
    expected.instance.id = "mqtt-local-abc123"
    assert config == expected
    for section in SECTIONS:
        assert f"[{section}]" in text
        for key in fields(getattr(expected, section)):
            assert f"\n{key.name} = " in text, f"{section}.{key.name} is missing from the template"


def test_each_key_says_what_it_means_and_names_the_values_it_may_take() -> None:
    text = render_config("mqtt-local-abc123")
    for definition in definitions():
        assert definition.doc, f"{definition.section}.{definition.key} has no description"
        assert definition.doc.split("\n")[0] in text
        for choice in definition.choices:
            assert f'"{choice}"' in definition.doc, f"{definition.section}.{definition.key}: {choice} unnamed"


def test_configuration_reference_documents_every_key() -> None:
    reference = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = reference.read_text()
    for section in SECTIONS:
        for key in fields(getattr(Config(), section)):
            variable = f"CERTMQ_{section.upper()}_{key.name.upper()}"
            assert variable in text, f"{variable} is not documented in docs/configuration.md"


def test_the_log_settings_and_their_variables(tmp_path: Path) -> None:
    write(tmp_path / "certmq.toml", '[log]\nlevel = "debug"\n')
    config = load_config(tmp_path, environ={"CERTMQ_LOG_FORMAT": "json"})
    assert (config.log.level, config.log.format) == ("debug", "json")
    with pytest.raises(
        ConfigError, match=r"log.level \(environment\): must be one of debug, info, warning, error"
    ):
        load_config(tmp_path, environ={"CERTMQ_LOG_LEVEL": "verbose"})
    with pytest.raises(ConfigError, match=r"listeners\.wss_in_mutual_mode"):
        load_config(tmp_path, environ={"CERTMQ_LISTENERS_WSS_IN_MUTUAL_MODE": "both"})


def test_changed_settings_names_each_key_that_differs(tmp_path: Path) -> None:
    before = Config(data_dir=tmp_path)
    after = Config(data_dir=tmp_path)
    assert changed_settings(before, after) == []
    after.auth.acl_file = "rules.toml"
    after.mqtt.max_packet_size = 4096
    after.log.level = "debug"
    assert changed_settings(before, after) == ["auth.acl_file", "mqtt.max_packet_size", "log.level"]


@pytest.mark.parametrize(
    "url",
    ["", "sqlite:////tmp/registry.db", "/var/lib/certmq/registry.db"],
)
def test_a_cluster_node_refuses_a_registry_it_cannot_share(tmp_path: Path, url: str) -> None:
    environ = {"CERTMQ_CLUSTER_NATS_SERVERS": "nats://127.0.0.1:4222", "CERTMQ_STORAGE_URL": url}
    config = load_config(tmp_path, environ=environ)
    with pytest.raises(ConfigError, match=r"storage.url .*postgresql://USER@HOST/DB"):
        check_cluster(config)


def test_a_cluster_node_on_postgresql_and_a_single_node_on_sqlite_are_accepted(tmp_path: Path) -> None:
    check_cluster(load_config(tmp_path, environ={}))
    clustered = load_config(
        tmp_path,
        environ={
            "CERTMQ_CLUSTER_NATS_SERVERS": "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            "CERTMQ_STORAGE_URL": "postgresql://certmq@db/certmq",
            "CERTMQ_CLUSTER_NODE_NAME": "node-a_1",
        },
    )
    check_cluster(clustered)
    assert nats_servers(clustered) == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert node_name(clustered) == "node-a_1"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CERTMQ_CLUSTER_NODE_NAME", "node.1", "only letters, digits"),
        ("CERTMQ_CLUSTER_NODE_NAME", "node 1", "only letters, digits"),
        ("CERTMQ_CLUSTER_NATS_SERVERS", "127.0.0.1:4222", "not a URL"),
    ],
)
def test_cluster_settings_that_cannot_work_are_named(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    environ = {
        "CERTMQ_CLUSTER_NATS_SERVERS": "nats://127.0.0.1:4222",
        "CERTMQ_STORAGE_URL": "postgresql://certmq@db/certmq",
        name: value,
    }
    with pytest.raises(ConfigError, match=message):
        check_cluster(load_config(tmp_path, environ=environ))


NATS = {"CERTMQ_CLUSTER_NATS_SERVERS": "nats://127.0.0.1:4222"}
POSTGRESQL = {"CERTMQ_STORAGE_URL": "postgresql://certmq@db/certmq"}


@pytest.mark.parametrize(
    ("environ", "named", "not_named"),
    [
        ({}, ["cluster.nats_servers is empty", "CERTMQ_CLUSTER_NATS_SERVERS", "storage.url is empty (SQLite",
              "CERTMQ_STORAGE_URL"], []),
        (POSTGRESQL, ["cluster.nats_servers is empty", "CERTMQ_CLUSTER_NATS_SERVERS"], ["storage.url"]),
        (NATS, ["storage.url is empty (SQLite", "postgresql://USER@HOST/DB"], ["nats_servers"]),
        ({**NATS, "CERTMQ_STORAGE_URL": "sqlite:////tmp/r.db"}, ["storage.url is 'sqlite:////tmp/r.db'"], []),
        ({**NATS, **POSTGRESQL, "CERTMQ_LISTENERS_WSS": "127.0.0.1:0"}, ["listeners.wss is '127.0.0.1:0'"], []),
        ({**NATS, **POSTGRESQL, "CERTMQ_LISTENERS_HTTP": "[::1]:0"}, ["listeners.http is '[::1]:0'"], []),
    ],
)  # fmt: skip
def test_workers_refuse_what_they_cannot_share(
    tmp_path: Path, environ: dict[str, str], named: list[str], not_named: list[str]
) -> None:
    with pytest.raises(ConfigError) as refusal:
        check_workers(load_config(tmp_path, environ=environ), 3)
    message = str(refusal.value)
    assert message.startswith("--workers 3"), message
    assert all(text in message for text in named), message
    assert not any(text in message for text in not_named), message


def test_workers_accept_a_cluster_on_postgresql_with_fixed_ports(tmp_path: Path) -> None:
    # A disabled listener ("") has no port to share.
    environ = {**NATS, **POSTGRESQL, "CERTMQ_LISTENERS_WS": ""}
    check_workers(load_config(tmp_path, environ=environ), 2)


def test_a_node_without_a_name_is_named_after_its_host_and_port(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={"CERTMQ_LISTENERS_TCP": "127.0.0.1:2883"})
    assert node_name(config) == f"{socket.gethostname().split('.')[0]}-2883"
