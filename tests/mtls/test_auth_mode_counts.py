"""What an operator is told before and after cutting live connections, checked against a real
`certmq serve` with real clients on every kind of listener: the console's confirmations count
exactly the live connections an action would cut, and each way of switching the auth mode (the
CLI, the console, the REST API) cuts exactly those the new mode refuses, says how many, and
leaves the others working. The listings (REST, instance overview, /metrics) count the same
clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openssl_pki import make_ca, make_device

from conftest import Instance, running_instance
from paho_client import V311, PahoClient

MUTUAL = "tls: devices with certificates of registered CAs; wss: clients with Signature credentials; tcp, ws: closed"
ONE_WAY = "tcp, tls, ws, wss: clients with Signature credentials"

# Live connections of each kind. The counts differ from one another and from their sums, so that
# a count of the wrong connections cannot come out right.
SIGNED_OVER_TCP = 3  # refused by mutual mode: plain TCP closes
SIGNED_OVER_TLS = 1  # refused by mutual mode: the TLS listener asks for a device certificate
SIGNED_OVER_WSS = 2  # kept by both modes
DEVICES_OVER_TLS = 4  # refused by one-way mode: no credentials, and no anonymous access
LIVE = SIGNED_OVER_TCP + SIGNED_OVER_TLS + SIGNED_OVER_WSS + DEVICES_OVER_TLS


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """certmq in one-way mode without anonymous access, with the CA `counted-fleet` registered."""
    with running_instance(tmp_path_factory, CERTMQ_AUTH_ANONYMOUS="false") as running:
        running.fleet_ca = make_ca(running.work / "fleet", "counted-fleet-ca")
        running.fleet_sn = running.register_ca(running.fleet_ca, "counted-fleet")
        yield running


class Console:
    """The console driven over HTTP as a browser does: logged in once, forms posted with the
    session's CSRF token, pages read as their text."""

    def __init__(self, instance: Instance) -> None:
        self.browser = httpx.Client(base_url=instance.url, timeout=10)
        login = self.browser.post("/console/login", data={"token": instance.token, "next": "/console"})
        assert login.status_code == 303, login.text

    def text(self, path: str) -> str:
        page = self.browser.get(path)
        page.raise_for_status()
        return " ".join(re.sub(r"<[^>]+>", " ", page.text).split())

    def disconnect_count(self, path: str) -> str:
        """What a confirmation page says the action would cut."""
        page = self.browser.get(path)
        page.raise_for_status()
        found = re.search(r'id="disconnect-count">(.*?)</p>', page.text, re.S)
        assert found, page.text[:800]
        return " ".join(found.group(1).split())

    def act(self, confirmation: str, form: dict[str, str] | None = None) -> str:
        """Confirm the action a confirmation page offers (its form, with ``form``'s fields ticked),
        as an operator does; the message shown after."""
        page = self.browser.get(confirmation)
        page.raise_for_status()
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert action and token, page.text[:800]
        reply = self.browser.post(action.group(1), data={"csrf_token": token.group(1), **(form or {})})
        assert reply.status_code == 303, reply.text
        shown = self.browser.get(reply.headers["location"]).text
        message = re.search(r'class="flash flash-success"[^>]*>(.*?)</div>', shown, re.S)
        assert message, f"no message after the action: {shown[:800]}"
        return message.group(1)


@pytest.fixture
def console(instance: Instance) -> Iterator[Console]:
    opened = Console(instance)
    yield opened
    opened.browser.close()


def connected(instance: Instance, listener: str, count: int) -> list[PahoClient]:
    clients = [instance.listener_client(listener, version=V311) for _ in range(count)]
    for client in clients:
        client.connect()
    return clients


def live_client_ids(instance: Instance) -> set[str]:
    page = instance.api.get("/connections", params={"page_size": 100}).json()
    return {item["client_id"] for item in page["items"]}


def client_ids(clients: list[PahoClient]) -> set[str]:
    return {client.client._client_id.decode() for client in clients}


def connections_by_listener(instance: Instance) -> dict[str, float]:
    """The certmq_connections gauge of /metrics by listener (a listener without any is left out)."""
    samples = instance.broker.metrics()
    return {
        listener: samples.get(f'certmq_connections{{listener="{listener}"}}', 0)
        for listener in ("tcp", "tls", "ws", "wss")
    }


def test_each_way_of_switching_the_mode_cuts_exactly_the_connections_it_refuses(
    instance: Instance, console: Console, tmp_path: Path
) -> None:
    assert instance.fleet_ca is not None
    over_tcp = connected(instance, "tcp", SIGNED_OVER_TCP)
    over_tls = connected(instance, "tls", SIGNED_OVER_TLS)
    over_wss = connected(instance, "wss", SIGNED_OVER_WSS)
    # Switched without disconnecting anyone: devices may now present their certificates, and the
    # connections that mutual mode refuses stay until asked to go.
    assert instance.api.put("/auth-mode", json={"mode": "mutual"}).json() == {
        "mode": "mutual",
        "disconnected": 0,
        "listeners": MUTUAL,
    }
    devices = [
        instance.device_client(make_device(tmp_path / f"d{n}", instance.fleet_ca, f"counted-{n}"))
        for n in range(DEVICES_OVER_TLS)
    ]
    for device in devices:
        device.connect()
    everyone = over_tcp + over_tls + over_wss + devices
    for client in everyone:
        client.assert_connected()

    # Every listing counts the same live clients.
    assert live_client_ids(instance) == client_ids(everyone)
    assert instance.api.get("/instance").json()["counts"]["connections"] == LIVE
    assert connections_by_listener(instance) == {
        "tcp": SIGNED_OVER_TCP,
        "tls": SIGNED_OVER_TLS + DEVICES_OVER_TLS,
        "ws": 0,
        "wss": SIGNED_OVER_WSS,
    }

    # The confirmations: who is live, and how many each action would cut.
    refused_by_mutual = SIGNED_OVER_TCP + SIGNED_OVER_TLS
    to_mutual = console.text("/console/server-certificate/auth-mode?mode=mutual")
    assert (
        f"Live now: {LIVE} connections — {DEVICES_OVER_TLS} with a device certificate, "
        f"{SIGNED_OVER_TCP + SIGNED_OVER_TLS + SIGNED_OVER_WSS} with AccessKey credentials, 0 with neither."
    ) in to_mutual
    assert f"Listeners after the switch: {MUTUAL}." in to_mutual
    assert console.disconnect_count("/console/server-certificate/auth-mode?mode=mutual") == (
        f"Ticked, {refused_by_mutual} live connections will be disconnected."
    )
    assert console.disconnect_count("/console/server-certificate/auth-mode?mode=one-way") == (
        f"Ticked, {DEVICES_OVER_TLS} live connections will be disconnected."
    )
    assert console.disconnect_count(f"/console/ca-certificates/{instance.fleet_sn}/inactivate") == (
        f"{DEVICES_OVER_TLS} live connections will be disconnected."
    )
    device_sn = next(
        item["identity"]["cert.sn"]
        for item in instance.api.get("/connections", params={"listener": "tls"}).json()["items"]
        if "cert.sn" in item["identity"]
    )
    assert (
        console.disconnect_count(f"/console/device-certificates/{instance.fleet_sn}/{device_sn}/inactivate")
        == "1 live connection will be disconnected."
    )
    idle_sn = instance.register_ca(make_ca(tmp_path / "idle", "idle-ca"), "idle")
    assert console.disconnect_count(f"/console/ca-certificates/{idle_sn}/inactivate") == (
        "No device is connected through it now: no live connection will be disconnected."
    )

    # `certmq mode set` cuts what the confirmation counted, and says how many.
    assert instance.cli("mode", "set", "mutual", "--disconnect-nonconforming").stdout.splitlines() == [
        f"auth mode is mutual; {refused_by_mutual} session(s) disconnected",
        f"listeners: {MUTUAL}",
    ]
    for client in over_tcp + over_tls:
        client.wait_disconnected()
    for client in over_wss + devices:
        client.assert_connected()
    assert live_client_ids(instance) == client_ids(over_wss + devices)
    assert console.disconnect_count("/console/server-certificate/auth-mode?mode=mutual") == (
        "Every live connection conforms: none will be disconnected."
    )

    # The console, back to one-way: the devices, which sent no credentials, are cut.
    switch = {"mode": "one-way", "disconnect_nonconforming": "yes"}
    assert console.act("/console/server-certificate/auth-mode?mode=one-way", switch) == (
        "One-way authentication is on: new handshakes follow it; "
        f"{DEVICES_OVER_TLS} non-conforming session(s) disconnected. Listeners: {ONE_WAY}."
    )
    for device in devices:
        device.wait_disconnected()
    for client in over_wss:
        client.assert_connected()
    assert live_client_ids(instance) == client_ids(over_wss)

    # The REST API, to mutual mode again: the plain TCP clients that came since are cut.
    again_over_tcp = connected(instance, "tcp", 2)
    switched = instance.api.put("/auth-mode", json={"mode": "mutual", "disconnect_nonconforming": True})
    assert switched.json() == {"mode": "mutual", "disconnected": len(again_over_tcp), "listeners": MUTUAL}
    for client in again_over_tcp:
        client.wait_disconnected()
    for client in over_wss:
        client.assert_connected()
    assert live_client_ids(instance) == client_ids(over_wss)
    assert connections_by_listener(instance) == {"tcp": 0, "tls": 0, "ws": 0, "wss": SIGNED_OVER_WSS}


def test_inactivating_a_ca_cuts_the_connections_its_confirmation_counted(
    instance: Instance, console: Console, tmp_path: Path
) -> None:
    assert instance.fleet_ca is not None
    instance.api.put("/auth-mode", json={"mode": "mutual"})
    line_ca = make_ca(tmp_path / "line", "line-ca")
    line_sn = instance.register_ca(line_ca, "line")
    of_line = [
        instance.device_client(make_device(tmp_path / f"l{n}", line_ca, f"line-{n}")) for n in range(2)
    ]
    bystander = instance.device_client(make_device(tmp_path / "b", instance.fleet_ca, "bystander"))
    for client in [*of_line, bystander]:
        client.connect()

    confirmation = f"/console/ca-certificates/{line_sn}/inactivate"
    assert console.disconnect_count(confirmation) == "2 live connections will be disconnected."
    assert console.act(confirmation) == (
        "Inactivated CA certificate line: its devices are refused; 2 live connection(s) disconnected."
    )
    for client in of_line:
        client.wait_disconnected()
    bystander.assert_connected()
    assert client_ids([bystander]) <= live_client_ids(instance)
    assert not client_ids(of_line) & live_client_ids(instance)
