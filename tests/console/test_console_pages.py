"""The console's pages and rules without a browser: the application served on loopback with a
real registry and a stand-in broker, driven over HTTP as a browser would (form posts, cookies,
redirects). Paging a large registry, sessions, CSRF, confirmations and error pages."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.conftest import Pki, StandInBroker
from certmq.access_keys import AccessKeyStore
from certmq.console import ConsoleSettings, derive_session_key
from certmq.console import sessions as console_sessions
from certmq.console.login import safe_next
from certmq.console.rendering import relative_time, show_invisible_characters
from certmq.http_application import create_app
from certmq.instance import init_instance, load_instance
from certmq.invisible_characters import INVISIBLE
from certmq.registry import RegistryService, open_registry
from certmq.registry.records import DecisionEntry, utc_now
from certmq.web.listener import HttpListener
from certmq.web.metrics import Metrics
from unit.registry_fixtures import synthetic_devices

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Served:
    url: str
    token: str
    registry: RegistryService
    broker: StandInBroker
    client: httpx.AsyncClient
    instance_key: bytes

    async def login(self) -> str:
        """Log in as a browser does; the CSRF token of the new session."""
        reply = await self.client.post("/console/login", data={"token": self.token, "next": "/console"})
        assert reply.status_code == 303, reply.text
        return await self.csrf()

    async def csrf(self) -> str:
        page = await self.client.get("/console")
        found = CSRF.search(page.text)
        assert found, page.text[:500]
        return found.group(1)

    async def register_ca(self, name: str) -> tuple[Pki, str]:
        authority = Pki.create(f"{name} CA")
        code = (await self.registry.issue_registration_code()).code
        record = await self.registry.register_ca(name, authority.ca_pem, authority.verification_pem(code))
        return authority, record.sn


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    init = init_instance(tmp_path / "data", "mqtt-console-1")
    assert init is not None
    instance = load_instance(init.data_dir)
    store = open_registry(tmp_path / "registry.db")
    registry = RegistryService(store, instance_id=instance.id)
    await registry.open()
    broker = StandInBroker(instance.server_cert_file)
    app = create_app(
        registry=registry,
        control=broker,
        instance_id=instance.id,
        admin_token=instance.admin_token,
        access_keys_manager=AccessKeyStore.for_instance(instance),
        metrics=Metrics(),
        console=ConsoleSettings(session_key=derive_session_key(instance.instance_key)),
    )
    listener = HttpListener(app, "127.0.0.1", 0)
    await listener.start()
    async with httpx.AsyncClient(base_url=listener.url, timeout=30) as client:
        yield Served(listener.url, instance.admin_token, registry, broker, client, instance.instance_key)
    await listener.stop()
    await registry.close()
    store.close()


# --- paging ----------------------------------------------------------------------------------------


async def test_a_page_of_a_large_registry_reads_that_page_only(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sn = await served.register_ca("big")
    count = 50_000
    served.registry.store.import_devices(synthetic_devices(sn, count), utc_now())
    await served.registry.rebuild_index()
    reads: list[dict[str, Any]] = []
    original = served.registry.store.list_devices

    def spy(offset: int, limit: int, **options: Any) -> Any:
        reads.append({"offset": offset, "limit": limit, **options})
        return original(offset, limit, **options)

    monkeypatch.setattr(served.registry.store, "list_devices", spy)
    await served.login()

    # How long such a page takes is measured by bench/http_pages.py.
    page = await served.client.get("/console/device-certificates", params={"page_no": 500, "page_size": 100})
    assert page.status_code == 200
    assert "Page 500 of 500" in page.text and "50,000 device certificates" in page.text
    expected = await served.registry.list_devices(500, 100)
    assert all(f">{device.name}</a>" in page.text for device in expected.items)
    # One page of keys read, and the total taken from the in-memory index, not counted by a scan.
    assert reads[0] == {
        "offset": 49_900,
        "limit": 100,
        "ca_sn": None,
        "status": None,
        "name": None,
        "count": False,
    }

    # By CA and status: still one page, still counted by the index.
    reads.clear()
    page = await served.client.get(
        "/console/device-certificates", params={"ca_sn": sn, "status": "active", "page_no": 2_500}
    )
    assert "Page 2,500 of 2,500" in page.text
    assert reads[0]["limit"] == 20 and reads[0]["count"] is False

    # A page past the end goes to the last one; a name finds its device.
    beyond = await served.client.get("/console/device-certificates", params={"page_no": 9_999})
    assert beyond.status_code == 303 and "page_no=2500" in beyond.headers["location"]
    found = await served.client.get("/console/device-certificates", params={"name": "device-0031415"})
    assert "1 device certificate match" in found.text and ">device-0031415</a>" in found.text


# --- sessions and CSRF ------------------------------------------------------------------------------


async def test_pages_need_a_session_and_a_wrong_token_opens_none(served: Served) -> None:
    page = await served.client.get("/console/ca-certificates?page_no=1")
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/ca-certificates%3Fpage_no%3D1"
    wrong = await served.client.post("/console/login", data={"token": served.token + "x"})
    assert wrong.status_code == 401 and "certmq_console" not in wrong.cookies
    cross_site = await served.client.post(
        "/console/login", data={"token": served.token}, headers={"Origin": "http://evil.example"}
    )
    assert cross_site.status_code == 403 and "certmq_console" not in cross_site.cookies


async def test_the_session_cookie(served: Served) -> None:
    reply = await served.client.post("/console/login", data={"token": served.token})
    cookie = reply.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age=43200"):
        assert flag.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()
    value = served.client.cookies["certmq_console"]
    assert served.token not in value

    # Any change to the cookie, and it opens nothing.
    version, payload, mac = value.split(".")
    for forged in (f"{version}.{payload}.{mac[:-2]}AA", f"{version}.{payload[:-2]}AA.{mac}", "v1..", "junk"):
        served.client.cookies.set("certmq_console", forged, path="/console")
        assert (await served.client.get("/console")).status_code == 303
    served.client.cookies.set("certmq_console", value, path="/console")
    assert (await served.client.get("/console")).status_code == 200


def test_sessions_end_with_their_lifetime_the_key_and_the_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starlette.requests import Request
    from starlette.responses import Response

    key = derive_session_key(b"k" * 32)
    assert key != b"k" * 32 and len(key) == 32
    signer = console_sessions.SessionSigner(key, "token-1")
    request = Request({"type": "http", "method": "GET", "path": "/console", "headers": [], "scheme": "http"})
    response = Response()
    session = signer.login(response, request)
    cookie = response.headers["set-cookie"].split(";")[0]
    with_cookie = Request({"type": "http", "headers": [(b"cookie", cookie.encode())], "scheme": "http"})
    assert signer.session_of(with_cookie) == session

    assert console_sessions.SessionSigner(key, "token-2").session_of(with_cookie) is None
    assert (
        console_sessions.SessionSigner(derive_session_key(b"j" * 32), "token-1").session_of(with_cookie)
        is None
    )
    later = time.time() + console_sessions.SESSION_LIFETIME + 1
    monkeypatch.setattr(console_sessions.time, "time", lambda: later)
    assert signer.session_of(with_cookie) is None


async def test_the_revoked_sessions_stay_bounded() -> None:
    revoked = console_sessions.RevokedSessions(limit=3)
    now = int(time.time())
    sessions = [console_sessions.ConsoleSession(f"s{n}", "csrf", now + 100 + n) for n in range(5)]
    for session in sessions:
        await revoked.revoke(session)
    assert len(revoked) == 3
    # The two that expire first left the list, and every session that expires no later than they
    # do is refused with them; later ones only when revoked.
    assert all(revoked.refuses(session.id, session.expires_at) for session in sessions)
    assert revoked.refuses("never-revoked", now + 100)
    assert not revoked.refuses("never-revoked", now + 102)
    # Expired entries are pruned at the next revocation.
    await revoked.revoke(console_sessions.ConsoleSession("late", "csrf", now + 500))
    assert len(revoked) == 3


async def test_every_change_needs_the_csrf_token(served: Served) -> None:
    _, sn = await served.register_ca("fleet")
    token = await served.login()
    changes = [
        f"/console/ca-certificates/{sn}/inactivate",
        f"/console/ca-certificates/{sn}/delete",
        "/console/ca-certificates/registration-code",
        "/console/ca-certificates",
        "/console/server-certificate",
        "/console/server-certificate/auth-mode",
        "/console/connections/kick",
        "/console/device-certificates/aa/bb/inactivate",
        "/console/logout",
    ]
    for path in changes:
        for form in ({}, {"csrf_token": token[:-1]}):
            reply = await served.client.post(path, data={**form, "mode": "one-way", "client_id": "x"})
            assert reply.status_code == 403, path
            assert "The change was refused" in reply.text
    assert (await served.registry.get_ca(sn)).active
    assert served.broker.mode_changes == []
    # The right token works, and logging out ends the session for good.
    reply = await served.client.post(f"/console/ca-certificates/{sn}/inactivate", data={"csrf_token": token})
    assert reply.status_code == 303 and not (await served.registry.get_ca(sn)).active
    cookie = served.client.cookies["certmq_console"]
    assert (await served.client.post("/console/logout", data={"csrf_token": token})).status_code == 303
    served.client.cookies.set("certmq_console", cookie, path="/console")
    assert (await served.client.get("/console")).status_code == 303


def test_after_login_the_browser_stays_in_the_console() -> None:
    assert safe_next("/console/decisions?result=deny") == "/console/decisions?result=deny"
    for elsewhere in (
        "//evil.example/console",
        "https://evil.example",
        "/api/v1/instance",
        "/consolex",
        "/console\\@x",
        "",
    ):
        assert safe_next(elsewhere) == "/console", elsewhere


# --- confirmations, actions, errors ---------------------------------------------------------------


async def test_confirmations_count_the_live_sessions_an_action_cuts(served: Served) -> None:
    fleet, fleet_sn = await served.register_ca("fleet")
    _, other_sn = await served.register_ca("other")
    device = await served.registry.register_device(fleet_sn, fleet.device("sensor-1"))
    served.broker.connect("a", **{"cert.ca_sn": fleet_sn, "cert.sn": device.device_sn, "cert.cn": "sensor-1"})
    served.broker.connect("b", **{"cert.ca_sn": fleet_sn, "cert.sn": "0102", "cert.cn": "sensor-2"})
    served.broker.connect("c", listener="tcp", access_key_id="LTAIxxxx")
    await served.login()

    async def count(path: str) -> str:
        page = await served.client.get(path)
        found = re.search(r'id="disconnect-count">\s*(.*?)\s*</p>', page.text, re.S)
        assert found, page.text[:800]
        return " ".join(found.group(1).split())

    assert (
        await count(f"/console/ca-certificates/{fleet_sn}/inactivate")
        == "2 live connections will be disconnected."
    )
    assert await count(f"/console/ca-certificates/{other_sn}/delete") == (
        "No device is connected through it now: no live connection will be disconnected."
    )
    device_path = f"/console/device-certificates/{fleet_sn}/{device.device_sn}"
    assert await count(f"{device_path}/inactivate") == "1 live connection will be disconnected."
    assert await count("/console/connections/kick?client_id=c") == "1 live connection will be disconnected."
    # The auth mode's confirmation asks the broker which sessions the mode refuses: a real one
    # answers in tests/mtls/test_auth_mode_counts.py.


async def test_actions_answer_with_a_page_and_a_message(served: Served) -> None:
    fleet, sn = await served.register_ca("fleet")
    device = await served.registry.register_device(sn, fleet.device("sensor-1"))
    served.broker.connect("sensor-1", **{"cert.ca_sn": sn, "cert.sn": device.device_sn})
    token = await served.login()
    path = f"/console/device-certificates/{sn}/{device.device_sn}"

    reply = await served.client.post(f"{path}/inactivate", data={"csrf_token": token})
    assert reply.status_code == 303 and reply.headers["location"] == path
    page = await served.client.get(path)
    assert (
        "Inactivated device certificate sensor-1" in page.text
        and "1 live connection(s) disconnected" in page.text
    )
    assert "Inactivated" not in (await served.client.get(path)).text, "a message is shown once"

    reply = await served.client.post(f"{path}/delete", data={"csrf_token": token})
    assert reply.status_code == 303
    assert (await served.registry.list_devices(1, 20)).total == 0

    reply = await served.client.post(
        "/console/server-certificate/auth-mode", data={"csrf_token": token, "mode": "mutual"}
    )
    assert served.broker.mode_changes == [("mutual", False)]
    assert (
        "Mutual authentication is on: new handshakes follow it; live sessions were kept."
        in (await served.client.get(reply.headers["location"])).text
    )

    reply = await served.client.post(
        "/console/connections/kick", data={"csrf_token": token, "client_id": "sensor-1"}
    )
    assert served.broker.kicked == ["sensor-1"]
    reply = await served.client.post(
        "/console/connections/kick", data={"csrf_token": token, "client_id": "gone"}
    )
    assert "not connected any more" in (await served.client.get(reply.headers["location"])).text


async def test_the_connections_show_their_node_and_the_nodes_that_did_not_answer(served: Served) -> None:
    await served.login()
    served.broker.connect("sensor-1", "tls")
    page = (await served.client.get("/console/connections")).text
    assert '<th scope="col">Node</th>' in page and "<td>stand-in</td>" in page
    assert 'id="missing-nodes"' not in page
    served.broker.unanswered = ["node-2", "node-3"]
    page = (await served.client.get("/console/connections")).text
    assert "Nodes node-2, node-3 did not answer: their connections are not listed." in shown_text(page)
    overview = (await served.client.get("/console")).text
    assert 'id="nodes"' in overview and "Did not answer: node-2, node-3" in shown_text(overview)


async def test_errors_are_explained_on_the_page(served: Served) -> None:
    token = await served.login()
    unknown = await served.client.get("/console/ca-certificates/00ff")
    assert unknown.status_code == 404 and "no CA certificate is registered with Sn" in unknown.text
    unknown = await served.client.get("/console/device-certificates/00ff/01")
    assert unknown.status_code == 404
    missing = await served.client.get("/console/device-certificates", params={"ca_sn": "00ff"})
    assert missing.status_code == 200 and "FindCaBySnError" in missing.text

    nothing = await served.client.post("/console/ca-certificates", data={"csrf_token": token, "name": "x"})
    assert (
        nothing.status_code == 400 and "choose the CA certificate file, or paste its PEM text" in nothing.text
    )
    garbage = await served.client.post(
        "/console/ca-certificates",
        data={
            "csrf_token": token,
            "name": "kept",
            "ca_pem": "not a certificate",
            "verification_pem": "nor this",
        },
    )
    assert garbage.status_code == 400 and "CertificateContentError" in garbage.text
    assert 'value="kept"' in garbage.text, "what was typed is kept"
    binary = await served.client.post(
        "/console/ca-certificates",
        data={"csrf_token": token},
        files={"ca_file": ("ca.der", b"\x30\x82\xff\xfe", "application/octet-stream")},
    )
    assert binary.status_code == 400 and "is not PEM text" in binary.text

    bad_key = await served.client.post(
        "/console/server-certificate",
        data={"csrf_token": token, "chain_pem": "-----BEGIN CERTIFICATE-----", "key_pem": "nope"},
    )
    assert bad_key.status_code == 400 and "flash-error" in bad_key.text

    for address in (
        "/console/device-certificates?page_no=zero",
        "/console/server-certificate/auth-mode?mode=x",
    ):
        invalid = await served.client.get(address)
        assert invalid.status_code == 400 and "Not a valid address" in invalid.text, address
    api = await served.client.get(
        "/api/v1/device-certificates?page_no=zero", headers={"Authorization": f"Bearer {served.token}"}
    )
    assert api.status_code == 400 and api.json()["code"] == "ParameterFieldCheckFailed"
    bad_time = await served.client.get("/console/decisions", params={"since": "yesterday"})
    assert bad_time.status_code == 200 and "since and until must be times" in bad_time.text


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "sensor-<RLO>gnp.exe" reads "sensor-exe.png"
MARKED_RLO = '<span class="invisible-char" title="U+202E RIGHT-TO-LEFT OVERRIDE">\\u202e</span>'


def shown_text(html: str) -> str:
    """What a page shows: its text, without tags (attribute values are not shown)."""
    return re.sub(r"<[^>]*>", "", html)


async def test_invisible_characters_of_certificates_are_shown_escaped(served: Served) -> None:
    authority = Pki.create(f"plant-{RLO}AC")
    code = (await served.registry.issue_registration_code()).code
    ca = await served.registry.register_ca(
        f"plant-{RLO}1", authority.ca_pem, authority.verification_pem(code)
    )
    device = await served.registry.register_device(ca.sn, authority.device(f"sensor-{RLO}gnp.exe"))
    client_id = "sensor\u200b-1\x1b[2J"
    identity = {"cert.ca_sn": ca.sn, "cert.sn": device.device_sn, "cert.cn": device.name}
    served.broker.connect(client_id, **identity)
    served.registry.record_decision(
        DecisionEntry(result="deny", reason="device-inactive", step=2, cn=device.name, client_id=client_id,
                 ca_sn=ca.sn, device_sn=device.device_sn, detail=f"the device {device.name} is inactive")
    )  # fmt: skip
    await served.registry.flush_decisions()
    token = await served.login()
    device_path = f"/console/device-certificates/{ca.sn}/{device.device_sn}"
    reply = await served.client.post(f"{device_path}/inactivate", data={"csrf_token": token})
    assert reply.status_code == 303

    pages = [
        "/console",
        "/console/ca-certificates",
        f"/console/ca-certificates/{ca.sn}",
        f"/console/ca-certificates/{ca.sn}/delete",
        "/console/device-certificates",
        device_path,  # with the flash message that names the device
        f"{device_path}/delete",
        "/console/connections",
        "/console/decisions",
    ]
    for path in pages:
        page = await served.client.get(path)
        assert page.status_code == 200, path
        text = shown_text(page.text)
        assert INVISIBLE.search(text) is None, (path, [c for c in text if INVISIBLE.match(c)])
        assert MARKED_RLO in page.text, path
    detail = (await served.client.get(device_path)).text
    assert f"<dd>sensor-{MARKED_RLO}gnp.exe</dd>" in detail
    assert "<title>Device sensor-\\u202egnp.exe" in detail, "a title holds text only: the bare escape"
    assert f"CN=plant-{MARKED_RLO}AC" in (await served.client.get("/console/ca-certificates")).text
    listed = (await served.client.get("/console/device-certificates")).text
    assert ">plant-\\u202e1 (" in listed, "an option holds text only: the bare escape"
    connections = (await served.client.get("/console/connections")).text
    assert "sensor\\u200b-1\\u001b[2J" in shown_text(connections)
    # Values that forms send back keep the characters themselves.
    assert f'data-client-id="{client_id}"' in connections


def test_a_page_shows_escapes_in_its_text_and_keeps_its_form_values() -> None:
    page = (
        '<title>Device a\u202eb</title><p data-id="a\u202eb">a\u202eb</p>'
        '<select><option value="x\u200by">x\u200by</option></select><textarea>c\u202ed</textarea>'
    )
    assert show_invisible_characters(page) == (
        '<title>Device a\\u202eb</title><p data-id="a\u202eb">a<span class="invisible-char" '
        'title="U+202E RIGHT-TO-LEFT OVERRIDE">\\u202e</span>b</p><select><option value="x\u200by">'
        "x\\u200by</option></select><textarea>c\u202ed</textarea>"
    )
    assert show_invisible_characters("<p>plain</p>\n") == "<p>plain</p>\n"


async def test_overview_counts_recent_decisions(served: Served) -> None:
    now = utc_now()
    for seconds, result in ((5, "allow"), (10, "deny"), (20, "deny"), (600, "allow"), (7200, "allow")):
        served.registry.record_decision(
            DecisionEntry(result=result, reason="x", step=2, time=now - datetime.timedelta(seconds=seconds))
        )
    await served.login()
    page = await served.client.get("/console")
    text = " ".join(re.sub(r"<[^>]+>", " ", page.text).split())
    assert "3 in the last minute: 1 allowed , 2 denied" in text
    assert "4 in the last hour: 2 allowed , 2 denied" in text
    assert "mqtt-console-1" in text


async def test_decisions_are_searched_with_the_step_that_decided(served: Served) -> None:
    now = utc_now()
    served.registry.record_decision(
        DecisionEntry(result="deny", reason="ca-inactive", step=4, device_sn="0a", time=now)
    )
    served.registry.record_decision(
        DecisionEntry(result="allow", reason="new-device", step=6, device_sn="0b", time=now)
    )
    await served.login()
    page = await served.client.get("/console/decisions", params={"result": "deny"})
    assert "4 · is the CA active?" in page.text and 'data-reason="ca-inactive"' in page.text
    assert 'data-reason="new-device"' not in page.text
    since = (now + datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    page = await served.client.get("/console/decisions", params={"since": since})
    assert "No decision matches" in page.text
    page = await served.client.get("/console/decisions", params={"device_sn": "0b"})
    assert "6 · allow (and register)" in page.text


async def test_a_folded_row_shows_how_many_refusals_it_stands_for(served: Served) -> None:
    """Repeated refusals of a stranger: one row for the first, one counting the rest, and the
    overview counts every refusal."""
    now = utc_now()
    for seconds in (40, 30, 20, 10):
        served.registry.record_decision(
            DecisionEntry(result="deny", reason="no-credentials", peer="203.0.113.7:5", identity_known=False,
                     time=now - datetime.timedelta(seconds=seconds))
        )  # fmt: skip
    await served.registry.flush_decisions(close_all_windows=True)
    await served.login()
    page = await served.client.get("/console/decisions", params={"reason": "no-credentials"})
    folded = re.search(r'<span class="folded" data-count="3">×3 since ([^<]+)</span>', page.text)
    assert folded, page.text
    overview = " ".join(re.sub(r"<[^>]+>", " ", (await served.client.get("/console")).text).split())
    assert "4 in the last minute: 0 allowed , 4 denied" in overview


async def test_pages_carry_security_headers_and_stay_out_of_the_api_document(served: Served) -> None:
    await served.login()
    page = await served.client.get("/console")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    stylesheet = re.search(r'href="(/console/static/console\.css\?v=\w+)"', page.text)
    assert stylesheet and (await served.client.get(stylesheet.group(1))).status_code == 200
    document = (await served.client.get("/api/v1/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/console")]


def test_relative_times() -> None:
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    assert relative_time(now + datetime.timedelta(days=3, hours=2), now) == "in 3 days"
    assert relative_time(now - datetime.timedelta(minutes=5, seconds=3), now) == "5 min ago"
    assert relative_time(now - datetime.timedelta(seconds=4), now) == "4 s ago"
