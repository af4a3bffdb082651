"""The registry commands of ``certmq`` against a running REST API (real registry, uvicorn on
loopback). The command runs in a worker thread while the API serves on the test's event loop."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.conftest import Api, Pki, pem
from certmq import pki
from certmq.cli import client as cli_client
from certmq.cli.main import main
from certmq.registry import DecisionEntry


class Cli:
    def __init__(self, api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.api = api
        self.capsys = capsys
        # The instance's configuration points the commands at the test's listener.
        monkeypatch.setenv("CERTMQ_LISTENERS_HTTP", f"127.0.0.1:{api.listener.port}")
        monkeypatch.delenv("CERTMQ_URL", raising=False)
        monkeypatch.delenv("CERTMQ_TOKEN", raising=False)

    async def run(self, *args: str | Path, where: str = "data-dir") -> tuple[int, str, str]:
        location: list[str] = ["--data-dir", str(self.api.data_dir)]
        if where == "url":
            location = ["--url", self.api.url, "--token", self.api.token]
        elif where == "none":
            location = []
        self.capsys.readouterr()
        status = await asyncio.to_thread(main, [*(str(arg) for arg in args), *location])
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err

    async def ok(self, *args: str | Path, where: str = "data-dir") -> str:
        status, out, err = await self.run(*args, where=where)
        assert status == 0, err
        return out

    async def json(self, *args: str | Path) -> Any:
        return json.loads(await self.ok(*args, "--json"))

    async def fails(self, *args: str | Path, where: str = "data-dir") -> str:
        status, out, err = await self.run(*args, where=where)
        assert status == 1, out
        assert err.startswith("certmq: error: ") and err.count("\n") == 1, err
        return err


@pytest.fixture
def cli(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    yield Cli(api, capsys, monkeypatch)


async def test_ca_commands(cli: Cli, tmp_path: Path) -> None:
    ca_dir = tmp_path / "factory-ca"
    assert (await cli.run("pki", "ca", "--cn", "Factory CA", "--out", ca_dir, where="none"))[0] == 0
    code = (await cli.ok("ca", "code")).splitlines()[0]
    assert len(code) == 32
    out = await cli.ok(
        "pki", "verification", "--ca-dir", ca_dir, "--code", code, "--out", tmp_path / "v", where="none"
    )
    assert "verification.pem" in out

    out = await cli.ok("ca", "register", "--cert", ca_dir / "ca.pem", "--verification", tmp_path / "v" / "verification.pem",
                       "--name", "factory")  # fmt: skip
    sn = pki.serial_hex(pki.load_certificate(ca_dir / "ca.pem"))
    assert out.strip() == f"registered CA {sn} (factory), active"

    table = (await cli.ok("ca", "list")).splitlines()
    assert table[0].split() == ["SN", "NAME", "STATUS", "VALID", "UNTIL", "SUBJECT"]
    assert table[1].split()[:3] == [sn, "factory", "active"]
    listed = await cli.json("ca", "list")
    assert [ca["sn"] for ca in listed] == [sn]

    shown = await cli.ok("ca", "show", sn)
    assert f"Sn                 {sn}" in shown and "subject            CN=Factory CA" in shown
    assert "BEGIN CERTIFICATE" not in shown
    assert "BEGIN CERTIFICATE" in await cli.ok("ca", "show", sn, "--pem")
    assert (await cli.json("ca", "show", sn))["pem"] == (ca_dir / "ca.pem").read_text()

    assert (await cli.ok("ca", "inactivate", sn)).strip() == f"CA {sn} is inactive"
    assert (await cli.json("ca", "activate", sn))["status"] == "active"
    assert (await cli.ok("ca", "delete", sn)).strip() == f"deleted CA {sn} and its device certificates"
    assert (await cli.ok("ca", "list")).strip() == "no CA certificates registered"


async def test_device_commands(cli: Cli, api: Api) -> None:
    first, second = Pki.create("First"), Pki.create("Second")
    await api.register_ca(first)
    await api.register_ca(second)
    sensor = await api.register_device(first, "sensor")
    await api.register_device(second, "camera")
    sensor_sn = pki.serial_hex(sensor)

    table = (await cli.ok("device", "list")).splitlines()
    assert table[0].split() == ["CA", "SN", "DEVICE", "SN", "NAME", "STATUS", "VALID", "UNTIL"]
    assert len(table) == 3
    of_first = await cli.json("device", "list", "--ca", first.sn)
    assert [device["name"] for device in of_first] == ["sensor"]

    assert (await cli.ok("device", "inactivate", first.sn, sensor_sn)).strip() == (
        f"device certificate {sensor_sn} (sensor) is inactive"
    )
    inactive = await cli.json("device", "list", "--status", "inactive")
    assert [device["device_sn"] for device in inactive] == [sensor_sn]
    shown = await cli.ok("device", "show", first.sn, sensor_sn)
    assert "name (CN)      sensor" in shown and "status         inactive" in shown
    assert (await cli.json("device", "show", first.sn, sensor_sn))["pem"] == pem(sensor)
    assert (await cli.json("device", "activate", first.sn, sensor_sn))["status"] == "active"
    await cli.ok("device", "delete", first.sn, sensor_sn)
    assert (await cli.ok("device", "list", "--ca", first.sn)).strip() == "no device certificates match"


async def test_long_listings_page_and_show_progress(
    cli: Cli, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_client, "PAGE_SIZE", 2)
    monkeypatch.setattr(cli_client, "PROGRESS_THRESHOLD", 3)
    authority = Pki.create()
    await api.register_ca(authority)
    for number in range(7):
        await api.register_device(authority, f"device-{number}")
    status, out, err = await cli.run("device", "list", "--json")
    assert status == 0
    assert sorted(device["name"] for device in json.loads(out)) == [f"device-{n}" for n in range(7)]
    assert "fetched 7/7 device certificates" in err
    status, out, err = await cli.run("device", "list")
    assert len(out.splitlines()) == 8
    limited = await cli.json("device", "list", "--limit", "3")
    assert len(limited) == 3


async def test_mode_server_cert_and_access_key_commands(cli: Cli, api: Api, tmp_path: Path) -> None:
    one_way = "listeners: tcp, tls, ws, wss: clients with Signature credentials"
    assert (await cli.ok("mode", "show")).splitlines() == ["one-way", one_way]
    assert (await cli.ok("mode", "set", "mutual")).splitlines() == [
        "auth mode is mutual",
        "listeners: tls: devices with certificates of registered CAs; wss: clients with Signature credentials; "
        "tcp, ws: closed",
    ]
    assert (await cli.ok("mode", "set", "one-way")).splitlines() == ["auth mode is one-way", one_way]
    assert await cli.json("mode", "show") == {"mode": "one-way", "listeners": one_way[len("listeners: ") :]}

    assert "subject      CN=localhost" in await cli.ok("server-cert", "show")
    ca_dir = api.data_dir / "server-ca"
    await cli.ok(
        "pki", "server", "--ca-dir", ca_dir, "--cn", "mqtt.example.com", "--out", tmp_path / "s", where="none"
    )
    out = await cli.ok(
        "server-cert", "set", "--cert", tmp_path / "s" / "server.pem", "--key", tmp_path / "s" / "server.key"
    )
    assert out.startswith("the server certificate is now CN=mqtt.example.com")
    assert (await cli.json("server-cert", "show"))["generation"] == 2

    created = await cli.ok("access-key", "create")
    key_id = created.split()[1]
    assert f"Signature|{key_id}|mqtt-test-1" in created
    assert key_id in api.access_keys.secrets
    listed = await cli.ok("access-key", "list")
    assert key_id in listed and api.access_keys.secrets[key_id] not in listed
    assert (await cli.ok("access-key", "delete", key_id)).strip() == f"deleted AccessKey {key_id}"
    assert [key["id"] for key in await cli.json("access-key", "list")] == [api.init.access_key_id]


async def test_connections_and_decisions_commands(cli: Cli, api: Api) -> None:
    api.broker.connect("GID_a@@@dev-1", "tls", **{"cert.cn": "dev-1"})
    api.broker.connect("plain client", "tcp", access_key_id="LTAIx")
    table = (await cli.ok("connections")).splitlines()
    assert table[0].split()[:3] == ["CLIENT", "ID", "LISTENER"]
    assert "cert.cn=dev-1" in table[1] and table[2].startswith("plain client")
    on_tcp = await cli.json("connections", "--listener", "tcp")
    assert [(connection["client_id"], connection["node"]) for connection in on_tcp] == [
        ("plain client", "stand-in")
    ]
    assert (await cli.ok("connections", "--kick", "plain client")).strip() == (
        "disconnected plain client from node stand-in"
    )
    err = await cli.fails("connections", "--kick", "plain client")
    assert "ConnectionNotFound" in err
    api.broker.unanswered = ["node-3"]
    code, listed, warned = await cli.run("connections", "--json")
    assert code == 0
    assert [connection["client_id"] for connection in json.loads(listed)] == ["GID_a@@@dev-1"]
    assert "node(s) node-3 did not answer" in warned
    api.broker.unanswered = []

    api.registry.record_decision(
        DecisionEntry(client_id="c1", device_sn="0a", result="allow", reason="new-device", step=6)
    )
    api.registry.record_decision(
        DecisionEntry(client_id="c2", device_sn="0b", result="deny", reason="device-inactive", step=2)
    )
    table = (await cli.ok("decisions")).splitlines()
    assert table[0].split()[:7] == ["TIME", "RESULT", "REASON", "COUNT", "FIRST", "SEEN", "STEP"]
    assert len(table) == 3
    denied = await cli.json("decisions", "--result", "deny")
    assert [decision["client_id"] for decision in denied] == ["c2"]
    of_device = await cli.json("decisions", "--device", "0a", "--limit", "5")
    assert [decision["reason"] for decision in of_device] == ["new-device"]
    assert len(await cli.json("decisions", "--limit", "1")) == 1

    # A stranger's refusals: the first at once, the next four folded into one row, closed by the
    # first refusal after the window.
    start = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
    for seconds in (0, 1, 2, 3, 4, 3600):
        api.registry.record_decision(
            DecisionEntry(listener="tcp", peer="203.0.113.7:4000", client_id="x", result="deny",
                     reason="bad-credentials", identity_known=False,
                     time=start + datetime.timedelta(seconds=seconds))
        )  # fmt: skip
    folded = await cli.json("decisions", "--reason", "bad-credentials")
    assert [(row["count"], row["peer"]) for row in folded] == [
        (1, "203.0.113.7:4000"), (4, "203.0.113.7"), (1, "203.0.113.7:4000")
    ]  # fmt: skip
    assert folded[1]["first_seen"].startswith("2030-01-01T12:00:01")
    assert folded[1]["last_seen"].startswith("2030-01-01T12:00:04")
    rows = (await cli.ok("decisions", "--reason", "bad-credentials")).splitlines()
    assert rows[2].split()[:6] == ["2030-01-01", "12:00:04Z", "deny", "bad-credentials", "4", "2030-01-01"]


async def test_explain_command(cli: Cli, api: Api, tmp_path: Path) -> None:
    authority = Pki.create()
    await api.register_ca(authority)
    device_file = tmp_path / "device.pem"
    device_file.write_text(pem(authority.device("fresh"), authority.ca.certificate))
    out = (await cli.ok("explain", device_file)).splitlines()
    assert [line.split()[1] for line in out[:6]] == ["1", "2", "3", "4", "5", "6"]
    assert out[6] == "decision: ALLOW at step 6 (new-device)"
    await api.client.post(f"/api/v1/ca-certificates/{authority.sn}/inactivate")
    explanation = await cli.json("explain", device_file)
    assert (explanation["allowed"], explanation["reason"]) == (False, "ca-inactive")

    not_a_certificate = tmp_path / "junk.pem"
    not_a_certificate.write_text("junk")
    assert "CertificateContentError" in await cli.fails("explain", not_a_certificate)
    assert "cannot read the certificate" in await cli.fails("explain", tmp_path / "missing.pem")


async def test_errors_are_one_line_with_the_api_code(cli: Cli, api: Api, tmp_path: Path) -> None:
    err = await cli.fails("ca", "show", "00ff")
    assert err.startswith("certmq: error: FindCaBySnError: no CA certificate is registered with Sn '00ff'")
    err = await cli.fails("device", "show", "00ff", "01")
    assert "FindCaBySnError" in err
    err = await cli.fails("access-key", "delete", "LTAInothere")
    assert "InvalidAccessKeyId.NotFound" in err
    authority = Pki.create()
    err = await cli.fails(
        "ca", "register", "--cert", tmp_path / "nope.pem", "--verification", tmp_path / "nope.pem"
    )
    assert "cannot read the CA certificate" in err
    (tmp_path / "ca.pem").write_text(authority.ca_pem)
    (tmp_path / "ver.pem").write_text(authority.verification_pem("not-a-code"))
    err = await cli.fails(
        "ca", "register", "--cert", tmp_path / "ca.pem", "--verification", tmp_path / "ver.pem"
    )
    assert "RegisterCodeError" in err


async def test_finding_the_instance(cli: Cli, api: Api, tmp_path: Path) -> None:
    assert (await cli.ok("mode", "show", where="url")).splitlines()[0] == "one-way"
    status, _, err = await cli.run("mode", "show", "--url", api.url, "--token", "wrong", where="none")
    assert (
        status == 1
        and "certmq: error: Unauthorized: the bearer token is not this instance's admin token" in err
    )
    err = await cli.fails("mode", "show", "--url", "http://127.0.0.1:9", "--token", "t", where="none")
    assert "cannot reach the certmq API at http://127.0.0.1:9" in err
    err = await cli.fails("mode", "show", "--data-dir", tmp_path / "nothing", where="none")
    assert "is not an instance's data directory" in err


def test_every_registry_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        ["ca"], ["ca", "code"], ["ca", "register"], ["ca", "list"], ["ca", "show"], ["ca", "activate"],
        ["ca", "inactivate"], ["ca", "delete"], ["device"], ["device", "list"], ["device", "show"],
        ["device", "activate"], ["device", "inactivate"], ["device", "delete"], ["mode"], ["mode", "show"],
        ["mode", "set"], ["server-cert"], ["server-cert", "show"], ["server-cert", "set"], ["connections"],
        ["decisions"], ["access-key"], ["access-key", "create"], ["access-key", "list"],
        ["access-key", "delete"], ["explain"],
    ]  # fmt: skip
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: certmq " + " ".join(command)), command
        if len(command) > 1 or command[0] in ("connections", "decisions", "explain"):
            assert "--data-dir DIR" in out and "--url URL" in out and "--token TOKEN" in out, command
