"""certmq.instance and ``certmq init``: the files an instance is made of, and what init prints."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from certmq import pki
from certmq.access_keys import AccessKeyStore
from certmq.instance import (
    CREDENTIALS_FILE,
    INSTANCE_KEY_FILE,
    InstanceError,
    init_instance,
    load_instance,
)
from certmq.sealed_secrets import SecretDoesNotOpen, new_admin_token, open_secret, seal_secret

SECRET_FILES = [INSTANCE_KEY_FILE, CREDENTIALS_FILE, "server-ca/ca.key", "server/server.key"]
ALL_FILES = [*SECRET_FILES, "certmq.toml", "server-ca/ca.pem", "server/server.pem"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns, mode(path))
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_init_creates_every_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = init_instance(data_dir)
    assert result is not None
    assert result.instance_id.startswith("mqtt-local-") and len(result.instance_id) == len("mqtt-local-") + 6
    for name in ALL_FILES:
        assert (data_dir / name).is_file(), name
    for name in SECRET_FILES:
        assert mode(data_dir / name) == 0o600, name
    assert mode(data_dir) == 0o700
    assert len((data_dir / INSTANCE_KEY_FILE).read_bytes()) == 32
    assert result.server_ca_file == data_dir / "server-ca" / "ca.pem"
    assert result.config_file == data_dir / "certmq.toml"
    assert result.access_key_id.startswith("LTAI") and len(result.access_key_id) == 24
    assert result.access_key_id[4:].isalnum()
    assert f'id = "{result.instance_id}"' in result.config_file.read_text()


def test_secrets_are_not_stored_in_clear(tmp_path: Path) -> None:
    result = init_instance(tmp_path, "mqtt-test-1")
    assert result is not None
    credentials = json.loads((tmp_path / CREDENTIALS_FILE).read_text())
    assert credentials["format"] == 1
    assert credentials["admin_token"] == result.admin_token
    [entry] = credentials["access_keys"]
    assert entry["id"] == result.access_key_id
    assert result.access_key_secret not in (tmp_path / CREDENTIALS_FILE).read_text()
    assert entry["created_at"].endswith("Z")


def test_second_init_changes_nothing(tmp_path: Path) -> None:
    assert init_instance(tmp_path, "mqtt-test-1") is not None
    before = snapshot(tmp_path)
    assert init_instance(tmp_path) is None
    assert init_instance(tmp_path, "mqtt-other") is None
    assert snapshot(tmp_path) == before


def test_load_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CERTMQ_INSTANCE_ID", "CERTMQ_TLS_CERT_FILE", "CERTMQ_TLS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    result = init_instance(tmp_path / "d", "mqtt-test-2")
    assert result is not None
    instance = load_instance(tmp_path / "d")
    assert instance.id == "mqtt-test-2"
    assert instance.data_dir == tmp_path / "d"
    assert instance.admin_token == result.admin_token
    assert dict(instance.access_keys) == {result.access_key_id: result.access_key_secret}
    assert instance.server_ca_file == result.server_ca_file
    assert instance.server_cert_file == tmp_path / "d" / "server" / "server.pem"
    assert instance.server_key_file == tmp_path / "d" / "server" / "server.key"
    assert len(instance.instance_key) == 32
    # Secrets stay out of logs and tracebacks.
    assert result.admin_token not in repr(instance)
    assert result.access_key_secret not in repr(instance)


def test_load_instance_follows_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CERTMQ_INSTANCE_ID", "CERTMQ_TLS_CERT_FILE", "CERTMQ_TLS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    init_instance(tmp_path, "mqtt-test-3")
    (tmp_path / "certmq.toml").write_text(
        '[instance]\nid = "renamed"\n[tls]\ncert_file = "custom/chain.pem"\nkey_file = "/etc/key.pem"\n'
    )
    instance = load_instance(tmp_path)
    assert instance.id == "renamed"
    assert instance.server_cert_file == tmp_path / "custom" / "chain.pem"
    assert instance.server_key_file == Path("/etc/key.pem")
    (tmp_path / "certmq.toml").write_text('[tls]\ncert_file = "/etc/both.pem"\n')
    instance = load_instance(tmp_path)
    assert instance.server_cert_file == instance.server_key_file == Path("/etc/both.pem")


def test_load_refuses_a_directory_that_is_not_an_instance(tmp_path: Path) -> None:
    with pytest.raises(InstanceError, match="run certmq init"):
        load_instance(tmp_path)


def test_load_refuses_a_foreign_instance_key(tmp_path: Path) -> None:
    init_instance(tmp_path, "mqtt-test-4")
    (tmp_path / INSTANCE_KEY_FILE).write_bytes(os.urandom(32))
    with pytest.raises(InstanceError, match="same instance"):
        load_instance(tmp_path)
    # The AccessKey pairs, read again when the API changes them, are refused the same way.
    with pytest.raises(InstanceError, match="same instance"):
        AccessKeyStore(tmp_path, os.urandom(32))


def test_an_existing_configuration_is_kept(tmp_path: Path) -> None:
    (tmp_path / "certmq.toml").write_text('[instance]\nid = "mqtt-preset"\n')
    result = init_instance(tmp_path)
    assert result is not None and result.instance_id == "mqtt-preset"
    assert (tmp_path / "certmq.toml").read_text() == '[instance]\nid = "mqtt-preset"\n'


def test_conflicting_instance_id_is_refused(tmp_path: Path) -> None:
    (tmp_path / "certmq.toml").write_text('[instance]\nid = "mqtt-preset"\n')
    with pytest.raises(InstanceError, match="already sets"):
        init_instance(tmp_path, "mqtt-different")
    assert not (tmp_path / INSTANCE_KEY_FILE).exists()


@pytest.mark.parametrize("instance_id", ["", "has space", 'quote"d', "x" * 65])
def test_bad_instance_ids_are_refused(tmp_path: Path, instance_id: str) -> None:
    with pytest.raises(InstanceError, match="instance id"):
        init_instance(tmp_path, instance_id)


def test_sealed_secrets_are_bound_to_key_and_context() -> None:
    key = os.urandom(32)
    sealed = seal_secret(key, "s3cret", b"context")
    assert open_secret(key, sealed, b"context") == "s3cret"
    assert seal_secret(key, "s3cret", b"context") != sealed  # fresh nonce each time
    with pytest.raises(SecretDoesNotOpen):
        open_secret(key, sealed, b"other context")
    with pytest.raises(SecretDoesNotOpen):
        open_secret(os.urandom(32), sealed, b"context")


def test_server_certificate(tmp_path: Path) -> None:
    init_instance(tmp_path)
    chain = pki.load_certificates(tmp_path / "server" / "server.pem")
    ca = pki.load_certificate(tmp_path / "server-ca" / "ca.pem")
    assert len(chain) == 2 and chain[1] == ca
    server = chain[0]
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    key = pki.load_private_key(tmp_path / "server" / "server.key")
    assert pki.public_keys_match(server, key)
    assert pki.load_ca_dir(tmp_path / "server-ca").certificate == ca


def test_openssl_verifies_the_server_certificate(tmp_path: Path) -> None:
    init_instance(tmp_path)
    ca_file, server_file = tmp_path / "server-ca" / "ca.pem", tmp_path / "server" / "server.pem"
    for extra in ([], ["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"], ["-verify_ip", "::1"]):
        verified = subprocess.run(
            ["openssl", "verify", "-purpose", "sslserver", *extra, "-CAfile", ca_file, server_file],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stderr + verified.stdout
    wrong_host = subprocess.run(
        ["openssl", "verify", "-verify_hostname", "example.com", "-CAfile", ca_file, server_file],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert wrong_host.returncode != 0
    text = subprocess.run(
        ["openssl", "x509", "-in", server_file, "-noout", "-text"], capture_output=True, text=True, timeout=30
    ).stdout
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text


# --- the command --------------------------------------------------------------------------------


def certmq(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CERTMQ_")}
    return subprocess.run(
        [sys.executable, "-m", "certmq", *map(str, args)],
        capture_output=True, text=True, timeout=60, cwd=cwd, env=environment,
    )  # fmt: skip


def test_certmq_init_json(tmp_path: Path) -> None:
    done = certmq("init", "--data-dir", "inst", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.strip().splitlines()
    printed = json.loads(line)
    assert set(printed) == {
        "instance_id", "admin_token", "access_key_id", "access_key_secret", "server_ca_file", "config_file",
    }  # fmt: skip
    assert printed["server_ca_file"] == str(tmp_path / "inst" / "server-ca" / "ca.pem")
    assert printed["config_file"] == str(tmp_path / "inst" / "certmq.toml")
    assert Path(printed["server_ca_file"]).is_absolute() and Path(printed["config_file"]).is_file()
    instance = load_instance(tmp_path / "inst")
    assert instance.id == printed["instance_id"]
    assert instance.admin_token == printed["admin_token"]
    assert instance.access_keys[printed["access_key_id"]] == printed["access_key_secret"]

    before = snapshot(tmp_path / "inst")
    again = certmq("init", "--data-dir", "inst", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    reply = json.loads(again.stdout)
    assert reply["created"] is False and "nothing changed" in reply["message"]
    assert reply["instance_id"] == printed["instance_id"]
    assert "admin_token" not in reply and "access_key_secret" not in reply
    assert snapshot(tmp_path / "inst") == before


def test_certmq_init_human_summary(tmp_path: Path) -> None:
    done = certmq("init", "--data-dir", tmp_path / "inst", "--instance-id", "mqtt-test-7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mqtt-test-7" in done.stdout and str(tmp_path / "inst" / "server-ca" / "ca.pem") in done.stdout
    again = certmq("init", "--data-dir", tmp_path / "inst", cwd=tmp_path)
    assert again.returncode == 0 and "nothing changed" in again.stdout


def test_certmq_init_reports_errors_without_traceback(tmp_path: Path) -> None:
    done = certmq("init", "--data-dir", "inst", "--instance-id", "bad id", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("certmq: error: instance id") and "Traceback" not in done.stderr


def test_version_and_help(tmp_path: Path) -> None:
    from certmq import __version__

    assert certmq("--version", cwd=tmp_path).stdout.strip() == f"certmq {__version__}"
    for command in ([], ["init"], ["serve"], ["pki"], ["pki", "ca"], ["pki", "device"], ["pki", "p12"]):
        done = certmq(*command, "--help", cwd=tmp_path)
        assert done.returncode == 0 and "usage: certmq" in done.stdout, command


def test_admin_tokens_can_follow_the_token_option() -> None:
    """``certmq … --token TOKEN`` reads a token that starts with "-" as another option: one
    token in 64 did, which made CLI calls fail at random."""
    tokens = {new_admin_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert not [token for token in tokens if token.startswith("-")]
    assert all(len(token) == 43 for token in tokens)
