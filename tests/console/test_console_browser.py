"""The web console in headless chromium against a real `certmq serve`: log in, register a
CA through the code flow, watch a real mutual-TLS device appear, cut it off and see why it is
refused, kick a connection, replace the server certificate and switch the auth mode. Each page
is saved as a screenshot under test-output/console/."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_browsing import VIEWPORT
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from openssl_pki import Issued, make_ca, make_device
from playwright.sync_api import Browser, Page, expect

from certmq.pki import (
    create_ca,
    generate_key,
    issue_device_certificate,
    issue_server_certificate,
    load_certified_key,
    serial_hex,
    write_certificates,
    write_private_key,
)
from paho_client import PahoClient

NOT_AUTHORIZED = 0x87
ADMINISTRATIVE_ACTION = 0x98
# A revoked session is disconnected within one second.
REVOCATION_DEADLINE = 1.0
WAIT_MS = 5000
expect.set_options(timeout=WAIT_MS)


def run_shown_commands(commands: str, ca: Issued, directory: Path) -> Path:
    """Run commands copied from a console page in ``directory``, next to the CA's files."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca.cert, directory / "ca.pem")
    shutil.copy(ca.key, directory / "ca.key")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{commands}\n{result.stdout}\n{result.stderr}"
    return directory


def serial_of(issued: Issued) -> str:
    return serial_hex(x509.load_pem_x509_certificate(issued.cert.read_bytes()))


class Console:
    """A logged-in browser tab on the console of one instance."""

    def __init__(self, page: Page, instance: Any, screenshots: Path) -> None:
        self.page = page
        self.instance = instance
        self.base = instance.url
        self.screenshots = screenshots
        self.last_verification: Path | None = None

    def open(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.screenshots / f"{name}.png"), full_page=True)

    def reload_until(self, path: str, ready: Callable[[Page], bool], timeout: float = 5.0) -> None:
        """Open ``path`` again until ``ready`` holds: for what the broker does right after a click."""
        deadline = time.monotonic() + timeout
        while True:
            self.open(path)
            if ready(self.page):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not show what was expected within {timeout}s")
            time.sleep(0.2)

    def flash(self) -> str:
        return self.page.locator(".flash").first.inner_text()

    def register_ca(self, ca: Issued, name: str, *, shot: str = "") -> str:
        """The registration code flow in the browser: a fresh code, a verification certificate made with openssl,
        both files uploaded. Returns the CA's Sn as the page shows it."""
        page = self.open("/console/ca-certificates")
        page.get_by_role("button", name="Register a CA certificate").click()
        code = page.locator("#registration-code").inner_text().strip()
        assert re.fullmatch(r"[0-9a-f]{16,64}", code), code
        assert code in page.locator("#openssl-command").inner_text()
        if shot:
            self.shot(shot)
        # The commands the page shows, run as shown where the CA's ca.pem and ca.key are.
        verification = self.last_verification = (
            run_shown_commands(
                page.locator("#openssl-command").inner_text(), ca, self.instance.work / f"register-{code}"
            )
            / "verification.pem"
        )
        page.get_by_label("Name").fill(name)
        page.get_by_label("Choose the file").first.set_input_files(str(ca.cert))
        page.locator("#verification-file").set_input_files(str(verification))
        page.get_by_role("button", name="Register", exact=True).click()
        expect(page.locator(".flash-success")).to_contain_text(f"Registered CA certificate {name}")
        return page.locator("dl.facts .sn").first.inner_text().strip()


@pytest.fixture(scope="module")
def console(browser: Browser, console_instance: Any, screenshots: Path) -> Iterator[Console]:
    """A browser tab logged in with the admin token, kept for the whole module."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    tab = Console(page, console_instance, screenshots)
    tab.open("/console/login")
    page.get_by_label("Admin token").fill(console_instance.token)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Overview")
    yield tab
    context.close()
    assert errors == [], f"the console's script failed: {errors}"


@pytest.fixture(scope="module")
def fleet(console: Console) -> tuple[Issued, str]:
    """The CA `fleet`, registered through the browser, and its Sn."""
    ca = make_ca(console.instance.work / "fleet", "fleet-ca")
    return ca, console.register_ca(ca, "fleet")


@pytest.fixture
def device(fleet: tuple[Issued, str], tmp_path: Path) -> Issued:
    ca, _ = fleet
    return make_device(tmp_path, ca, f"sensor-{uuid.uuid4().hex[:6]}")


def connect(console: Console, device: Issued, client_id: str | None = None) -> PahoClient:
    client: PahoClient = console.instance.device_client(device, client_id=client_id)
    client.connect()
    return client


# --- the tests, in the order an operator meets the console ---------------------------------------


def test_login_with_the_admin_token(browser: Browser, console_instance: Any, screenshots: Path) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    base = console_instance.url
    page.goto(f"{base}/console/decisions?result=deny")
    # Not logged in: the login page, which names where the token is kept.
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    expect(page.locator("#token-help")).to_contain_text("credentials.json")
    page.screenshot(path=str(screenshots / "01-login.png"), full_page=True)

    page.get_by_label("Admin token").fill("not-the-token")
    page.keyboard.press("Enter")
    expect(page.locator(".flash-error")).to_contain_text("not this instance's admin token")

    # By keyboard only: the token field has the focus, Enter submits.
    page.get_by_label("Admin token").focus()
    page.keyboard.type(console_instance.token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/console/decisions?result=deny")
    cookie = next(cookie for cookie in context.cookies() if cookie["name"] == "certmq_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert not cookie["secure"], "plain http on loopback: a Secure cookie would never come back"

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.goto(f"{base}/console")
    expect(page).to_have_url(re.compile(r"/console/login"))
    # The cookie of the closed session, replayed, opens nothing.
    context.add_cookies([{"name": cookie["name"], "value": cookie["value"], "url": f"{base}/console"}])
    page.goto(f"{base}/console")
    expect(page).to_have_url(re.compile(r"/console/login"))
    context.close()


def test_overview(console: Console, fleet: tuple[Issued, str]) -> None:
    page = console.open("/console")
    expect(page.locator(".tile").first).to_contain_text(console.instance.broker.init_info["instance_id"])
    expect(page.locator(".tile").first).to_contain_text("mutual")
    listeners = page.locator("section.card table")
    expect(listeners).to_contain_text(f"127.0.0.1:{console.instance.broker.tls_port}")
    expect(listeners).to_contain_text("MQTT over TLS")
    expect(page.get_by_role("heading", name="Expiring within 30 days")).to_be_visible()
    expect(page.locator(".tile", has_text="Decisions")).to_contain_text("in the last minute")
    console.shot("02-overview")


def test_register_a_ca_through_the_code_flow(console: Console) -> None:
    ca = make_ca(console.instance.work / "plant", "plant-ca")
    sn = console.register_ca(ca, "plant", shot="03-ca-register")
    assert sn == serial_of(ca)
    page = console.page
    expect(page.locator("dl.facts")).to_contain_text("active")
    expect(page.locator("dl.facts")).to_contain_text("CN=plant-ca")
    console.shot("04-ca-detail")
    assert console.instance.api.get(f"/ca-certificates/{sn}").json()["name"] == "plant"

    # A code registers one CA: the same verification again, pasted as PEM this time, is refused.
    used = console.last_verification
    assert used is not None
    page = console.open("/console/ca-certificates/register")
    page.get_by_label("or paste its PEM text").first.fill(ca.pem)
    page.locator("#verification-pem").fill(used.read_text())
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator(".flash-error")).to_contain_text(re.compile("RegisterCodeUsed|SnNotUnique"))

    page = console.open("/console/ca-certificates")
    expect(page.locator(f"tr[data-sn='{sn}']")).to_contain_text("plant")
    console.shot("05-ca-list")


def test_a_connected_device_appears(console: Console, fleet: tuple[Issued, str], device: Issued) -> None:
    client_id = f"console-{uuid.uuid4().hex[:6]}"
    connect(console, device, client_id)
    name = device.cert.stem

    page = console.open("/console/connections")
    row = page.locator(f"tr[data-client-id='{client_id}']")
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("tls")
    console.shot("06-connections")

    page = console.open(f"/console/device-certificates?name={name}")
    row = page.locator(f"tr[data-device-sn='{serial_of(device)}']")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("connected")
    console.shot("07-devices")
    row.get_by_role("link", name=name).click()
    expect(page.locator("h1")).to_contain_text(name)
    expect(page.locator("section.card", has_text="Live connections")).to_contain_text(client_id)
    console.shot("08-device-detail")


def test_the_commands_on_the_ca_page_issue_a_device_that_connects(
    console: Console, fleet: tuple[Issued, str]
) -> None:
    ca, fleet_sn = fleet
    page = console.open(f"/console/ca-certificates/{fleet_sn}")
    directory = run_shown_commands(
        page.locator("#device-openssl").inner_text(), ca, console.instance.work / "shown"
    )
    device = Issued(directory / "device.pem", directory / "device.key", directory / "chain.pem")
    # mosquitto_pub as shown, with the instance's server CA.
    run_shown_commands(page.locator("#device-connect").inner_text(), ca, directory)
    page = console.open(f"/console/device-certificates?ca_sn={fleet_sn}&name=sensor-001")
    expect(page.locator(f"tr[data-device-sn='{serial_of(device)}']")).to_contain_text("active")
    connect(console, device)


def test_inactivating_a_device_drops_its_connection_and_records_a_deny(
    console: Console, fleet: tuple[Issued, str], device: Issued
) -> None:
    _, fleet_sn = fleet
    client_id = f"console-{uuid.uuid4().hex[:6]}"
    client = connect(console, device, client_id)
    device_sn = serial_of(device)

    page = console.open(f"/console/device-certificates?ca_sn={fleet_sn}&status=active")
    page.locator(f"tr[data-device-sn='{device_sn}']").get_by_role("link", name="Inactivate").click()
    expect(page.locator("#disconnect-count")).to_have_text("1 live connection will be disconnected.")
    console.shot("09-device-inactivate-confirm")
    page.get_by_role("button", name="Inactivate").click()
    reason = client.wait_disconnected(REVOCATION_DEADLINE)
    assert reason is not None and reason.value == NOT_AUTHORIZED
    expect(page.locator(".flash-success")).to_contain_text("1 live connection(s) disconnected")
    expect(page.locator("dl.facts")).to_contain_text("inactive")

    console.reload_until(
        "/console/connections", lambda page: page.locator(f"tr[data-client-id='{client_id}']").count() == 0
    )
    refused = console.instance.device_client(device, client_id=client_id).connect(expect_success=False)
    assert refused.reason_code == NOT_AUTHORIZED

    page = console.open("/console/decisions")
    page.get_by_label("DeviceSn").fill(device_sn)
    page.get_by_label("Result").select_option("deny")
    page.get_by_role("button", name="Search").click()
    row = page.locator("#decisions tbody tr").first
    expect(row).to_contain_text("device-inactive")
    expect(row.locator("td.step")).to_have_attribute("data-step", "2")
    expect(row.locator("td.step")).to_contain_text("is the device registered?")
    console.shot("10-decisions")

    # Activated again, it connects again.
    page = console.open(f"/console/device-certificates/{fleet_sn}/{device_sn}")
    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".flash-success")).to_contain_text("Activated")
    connect(console, device)


def test_kicking_a_connection(console: Console, fleet: tuple[Issued, str], device: Issued) -> None:
    client_id = f"kick-me-{uuid.uuid4().hex[:6]}"
    client = connect(console, device, client_id)
    page = console.open("/console/connections")
    page.locator(f"tr[data-client-id='{client_id}']").get_by_role("link", name="Kick").click()
    expect(page.locator("#disconnect-count")).to_have_text("1 live connection will be disconnected.")
    page.get_by_role("button", name="Disconnect").click()
    reason = client.wait_disconnected(REVOCATION_DEADLINE)
    assert reason is not None and reason.value == ADMINISTRATIVE_ACTION
    expect(page.locator(".flash-success")).to_contain_text(f"Disconnected {client_id}")


def test_inactivating_and_deleting_a_ca_say_how_many_devices_are_cut(
    console: Console, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "line", "line-ca")
    sn = console.register_ca(ca, "line")
    devices = [make_device(tmp_path / f"d{n}", ca, f"line-{n}") for n in range(2)]
    clients = [connect(console, device) for device in devices]

    page = console.open(f"/console/ca-certificates/{sn}")
    page.get_by_role("link", name="Inactivate").click()
    expect(page.locator("#disconnect-count")).to_have_text("2 live connections will be disconnected.")
    console.shot("11-ca-inactivate-confirm")
    page.get_by_role("button", name="Inactivate").click()
    for client in clients:
        client.wait_disconnected(REVOCATION_DEADLINE)
    expect(page.locator(".flash-success")).to_contain_text("2 live connection(s) disconnected")

    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".flash-success")).to_contain_text("Activated")
    survivor = connect(console, devices[0])

    page.get_by_role("link", name="Delete").first.click()
    expect(page.locator(".confirm")).to_contain_text("2 device certificate record(s)")
    expect(page.locator("#disconnect-count")).to_have_text("1 live connection will be disconnected.")
    page.get_by_role("button", name="Delete").click()
    survivor.wait_disconnected(REVOCATION_DEADLINE)
    expect(page.locator(".flash-success")).to_contain_text("Deleted CA certificate line")
    expect(page.locator(f"tr[data-sn='{sn}']")).to_have_count(0)
    assert console.instance.api.get(f"/ca-certificates/{sn}").status_code == 404


def presented_serial(console: Console, device: Issued) -> str:
    """The serial of the certificate the broker presents to a new handshake."""
    context = console.instance.tls_context(device)
    with (
        socket.create_connection(("127.0.0.1", console.instance.broker.tls_port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_hex(x509.load_der_x509_certificate(der))


def new_server_pair(console: Console, directory: Path) -> tuple[Path, Path, str]:
    """A new localhost certificate from the instance's own server CA, as files."""
    server_ca_dir = console.instance.broker.data_dir / "server-ca"
    (ca_certificate, *_), ca_key = load_certified_key(server_ca_dir / "ca.pem", server_ca_dir / "ca.key")
    key = generate_key("ec")
    certificate = issue_server_certificate(
        ca_certificate, ca_key, "localhost", ["localhost", "127.0.0.1"], key.public_key()
    )
    directory.mkdir(parents=True, exist_ok=True)
    chain, key_file = directory / "server.pem", directory / "server.key"
    chain.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + ca_certificate.public_bytes(serialization.Encoding.PEM)
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return chain, key_file, serial_hex(certificate)


def test_replacing_the_server_certificate(
    console: Console, fleet: tuple[Issued, str], device: Issued, tmp_path: Path
) -> None:
    client = connect(console, device)
    before = presented_serial(console, device)
    chain, key, serial = new_server_pair(console, tmp_path / "server")
    _, other_key, _ = new_server_pair(console, tmp_path / "other")

    page = console.open("/console/server-certificate")
    expect(page.locator("#server-certificate")).to_contain_text(before)
    expect(page.locator("#server-certificate")).to_contain_text("localhost")
    # A key that is not the certificate's is refused, and nothing changes.
    page.get_by_label("Choose the file").first.set_input_files(str(chain))
    page.locator("#key-file").set_input_files(str(other_key))
    page.get_by_role("button", name="Replace the server certificate").click()
    expect(page.locator(".flash-error")).to_be_visible()
    assert presented_serial(console, device) == before

    page.locator("#chain-file").set_input_files(str(chain))
    page.locator("#key-file").set_input_files(str(key))
    page.get_by_role("button", name="Replace the server certificate").click()
    expect(page.locator(".flash-success")).to_contain_text("live connections were kept")
    expect(page.locator("#server-certificate")).to_contain_text(serial)
    console.shot("12-server-certificate")
    assert presented_serial(console, device) == serial != before
    client.assert_connected()


def test_switching_the_auth_mode(console: Console, fleet: tuple[Issued, str], device: Issued) -> None:
    client = connect(console, device)
    page = console.open("/console/server-certificate")
    page.get_by_role("link", name="Switch to one-way authentication").click()
    expect(page.locator(".confirm")).to_contain_text("with a device certificate")
    # The device sent no credentials, and one-way mode here has no anonymous access.
    expect(page.locator("#disconnect-count")).to_have_text(
        re.compile(r"\s*Ticked, \d+ live connections? will be disconnected\.\s*")
    )
    console.shot("13-auth-mode-confirm")
    page.get_by_role("button", name="Switch to one-way authentication").click()
    expect(page.locator(".flash-success")).to_contain_text("One-way authentication is on")
    expect(page.locator(".topbar .mode")).to_have_text("one-way TLS")
    assert console.instance.api.get("/auth-mode").json()["mode"] == "one-way"
    client.assert_connected()  # nobody asked to cut the live session

    page.get_by_role("link", name="Switch to mutual authentication").click()
    page.get_by_role("button", name="Switch to mutual authentication").click()
    expect(page.locator(".flash-success")).to_contain_text("Mutual authentication is on")
    assert console.instance.api.get("/auth-mode").json()["mode"] == "mutual"
    connect(console, device)


def test_changes_need_the_session_and_its_csrf_token(console: Console, fleet: tuple[Issued, str]) -> None:
    _, fleet_sn = fleet
    request = console.page.request
    url = f"{console.base}/console/ca-certificates/{fleet_sn}/inactivate"
    # The session cookie alone is not enough: no token, or a wrong one, changes nothing.
    for form in ({}, {"csrf_token": "forged"}):
        response = request.post(url, form=form, max_redirects=0)
        assert response.status == 403
    # Nor is the right token sent from another site.
    token = (
        console.open("/console/ca-certificates")
        .locator("input[name=csrf_token]")
        .first.get_attribute("value")
    )
    assert token
    response = request.post(
        url, form={"csrf_token": token}, headers={"Origin": "http://evil.example"}, max_redirects=0
    )
    assert response.status == 403
    assert console.instance.api.get(f"/ca-certificates/{fleet_sn}").json()["status"] == "active"
    # Without a session, a change is sent to the login page.
    other = console.page.context.browser
    assert other is not None
    anonymous = other.new_context()
    response = anonymous.request.post(url, form={"csrf_token": token}, max_redirects=0)
    assert response.status == 303 and "/console/login" in response.headers["location"]
    anonymous.close()
    assert console.instance.api.get(f"/ca-certificates/{fleet_sn}").json()["status"] == "active"


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "sensor-<RLO>gnp.exe" reads "sensor-exe.png"


def issued_with(directory: Path, cn: str, issuer: Issued | None = None) -> Issued:
    """A CA (or, with ``issuer``, a device certificate of it) whose CN is ``cn`` as given, any
    character included: made with certmq's PKI functions, written as files."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_key("ec")
    if issuer is None:
        certificate = create_ca(cn, key)
        chain: tuple[x509.Certificate, ...] = (certificate,)
    else:
        (ca_certificate, *_), ca_key = load_certified_key(issuer.cert, issuer.key)
        certificate = issue_device_certificate(ca_certificate, ca_key, cn, key.public_key())
        chain = (certificate, ca_certificate)
    issued = Issued(directory / "cert.pem", directory / "key.pem", directory / "chain.pem")
    write_certificates(issued.cert, certificate)
    write_certificates(issued.chain, *chain)
    write_private_key(issued.key, key)
    return issued


def test_invisible_characters_in_certificates_are_shown_escaped(console: Console, tmp_path: Path) -> None:
    """A CA and a device whose CNs hold a right-to-left override, registered as usual (the code flow
    in the browser; the device's first connection over mutual TLS): the console and the CLI show
    the override as the escape \\u202e, in a style of its own, never the character itself."""
    ca = issued_with(tmp_path / "ca", f"bidi-{RLO}AC")
    ca_sn = console.register_ca(ca, "bidi")
    device = issued_with(tmp_path / "device", f"sensor-{RLO}gnp.exe", ca)
    connect(console, device)
    device_sn = serial_of(device)

    page = console.open(f"/console/device-certificates?ca_sn={ca_sn}")
    row = page.locator(f"tr[data-device-sn='{device_sn}']")
    expect(row).to_contain_text("sensor-\\u202egnp.exe")
    marked = row.locator(".invisible-char")
    expect(marked).to_have_text("\\u202e")
    expect(marked).to_have_attribute("title", "U+202E RIGHT-TO-LEFT OVERRIDE")
    assert marked.evaluate("element => getComputedStyle(element).backgroundColor") != "rgba(0, 0, 0, 0)"
    console.shot("14-invisible-characters")
    for path in (
        f"/console/device-certificates?ca_sn={ca_sn}",
        f"/console/device-certificates/{ca_sn}/{device_sn}",
        f"/console/ca-certificates/{ca_sn}",
        "/console/ca-certificates",
        "/console/connections",
        f"/console/decisions?device_sn={device_sn}",
    ):
        page = console.open(path)
        shown = page.locator("body").inner_text()
        assert RLO not in shown and RLO not in page.title(), path
        assert "\\u202e" in shown, path

    listing = console.instance.cli("device", "list", "--ca", ca_sn).stdout
    assert "sensor-\\u202egnp.exe" in listing and RLO not in listing
    shown = console.instance.cli("device", "show", ca_sn, device_sn).stdout
    assert "sensor-\\u202egnp.exe" in shown and RLO not in shown
    cas = console.instance.cli("ca", "list").stdout
    assert "CN=bidi-\\u202eAC" in cas and RLO not in cas
    # JSON stays JSON: the escape stands for the character itself.
    devices = console.instance.cli_json("device", "list", "--ca", ca_sn)
    assert [item["name"] for item in devices] == [f"sensor-{RLO}gnp.exe"]


PAGES = [
    "/console",
    "/console/ca-certificates",
    "/console/ca-certificates/register",
    "/console/device-certificates",
    "/console/server-certificate",
    "/console/server-certificate/auth-mode?mode=one-way",
    "/console/connections",
    "/console/decisions",
]


def test_every_control_has_a_name_and_every_page_a_heading(
    console: Console, fleet: tuple[Issued, str]
) -> None:
    unnamed_script = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]')]
        .filter(element => {
            const labelled = element.labels && element.labels.length > 0;
            const named = (element.getAttribute('aria-label') || element.textContent || element.value || '').trim();
            return !labelled && !named;
        }).map(element => element.outerHTML.slice(0, 120))"""
    for path in PAGES:
        page = console.open(path)
        assert page.locator("h1").count() == 1, path
        assert page.evaluate(unnamed_script) == [], path
        assert page.locator("html").get_attribute("lang") == "en"
    # The navigation is reachable by keyboard: Tab from the top reaches the skip link first.
    page = console.open("/console")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_the_page_layout_fits_a_laptop_screen(console: Console, fleet: tuple[Issued, str]) -> None:
    for path in PAGES:
        page = console.open(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORT["width"], f"{path} is {width} px wide: it scrolls sideways"


def test_connections_page_refreshes_itself_when_asked(console: Console) -> None:
    page = console.open("/console/connections")
    page.get_by_label("Refresh every 5 s").check()
    with page.expect_navigation(timeout=8000):
        pass
    expect(page.get_by_label("Refresh every 5 s")).to_be_checked()
    page.get_by_label("Refresh every 5 s").uncheck()
