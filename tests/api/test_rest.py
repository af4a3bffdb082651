"""REST API v1 end to end: uvicorn on loopback, httpx, a real registry on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509

from api.conftest import Api, Pki, pem
from certmq import pki
from certmq.registry import DecisionEntry, OperationEntry


async def test_registration_code(api: Api) -> None:
    reply = await api.client.post("/api/v1/registration-codes")
    assert reply.status_code == 201
    code = reply.json()
    assert set(code) == {"code", "created_at", "expires_at"}
    created = datetime.fromisoformat(code["created_at"])
    expires = datetime.fromisoformat(code["expires_at"])
    assert created.tzinfo is not None and expires - created == timedelta(hours=24)


async def test_ca_life_cycle(api: Api) -> None:
    authority = Pki.create("Factory CA")
    ca = await api.register_ca(authority, name="factory")
    assert ca["sn"] == authority.sn
    assert ca["name"] == "factory"
    assert ca["status"] == "active"
    assert ca["subject"] == "CN=Factory CA"
    assert ca["fingerprint"] == pki.fingerprint_sha256(authority.ca.certificate)
    assert ca["pem"] == authority.ca_pem
    assert x509.load_pem_x509_certificate(str(ca["verification_pem"]).encode()).subject.rfc4514_string() == (
        f"CN={ca['registration_code']}"
    )

    shown = (await api.client.get(f"/api/v1/ca-certificates/{authority.sn}")).json()
    assert shown == ca

    inactive = await api.client.post(f"/api/v1/ca-certificates/{authority.sn}/inactivate")
    assert inactive.status_code == 200 and inactive.json()["status"] == "inactive"
    assert api.registry.index.ca(authority.sn) is not None
    assert not api.registry.index.ca(authority.sn).active  # type: ignore[union-attr]
    active = await api.client.post(f"/api/v1/ca-certificates/{authority.sn}/activate")
    assert active.json()["status"] == "active"

    deleted = await api.client.delete(f"/api/v1/ca-certificates/{authority.sn}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await api.client.get(f"/api/v1/ca-certificates/{authority.sn}")).status_code == 404


async def test_ca_name_defaults_to_its_common_name(api: Api) -> None:
    ca = await api.register_ca(Pki.create("Unnamed CA"))
    assert ca["name"] == "Unnamed CA"


async def test_ca_listing_pages(api: Api) -> None:
    for _ in range(5):
        await api.register_ca()
    first = (await api.client.get("/api/v1/ca-certificates", params={"page_no": 1, "page_size": 2})).json()
    assert (first["page_no"], first["page_size"], first["total"]) == (1, 2, 5)
    assert len(first["items"]) == 2
    sns = []
    for page_no in (1, 2, 3):
        page = (
            await api.client.get("/api/v1/ca-certificates", params={"page_no": page_no, "page_size": 2})
        ).json()
        sns += [item["sn"] for item in page["items"]]
    assert sorted(sns) == sorted(authority.sn for authority in api.cas)
    beyond = (await api.client.get("/api/v1/ca-certificates", params={"page_no": 9, "page_size": 2})).json()
    assert beyond["items"] == [] and beyond["total"] == 5
    default = (await api.client.get("/api/v1/ca-certificates")).json()
    assert (default["page_no"], default["page_size"], len(default["items"])) == (1, 20, 5)


async def test_device_certificates(api: Api) -> None:
    first, second = Pki.create("CA one"), Pki.create("CA two")
    await api.register_ca(first)
    await api.register_ca(second)
    sensor = await api.register_device(first, "sensor-1")
    await api.register_device(first, "sensor-2")
    await api.register_device(second, "camera-1")
    sensor_sn = pki.serial_hex(sensor)

    everything = (await api.client.get("/api/v1/device-certificates")).json()
    assert everything["total"] == 3
    of_first = (await api.client.get("/api/v1/device-certificates", params={"ca_sn": first.sn})).json()
    assert {item["name"] for item in of_first["items"]} == {"sensor-1", "sensor-2"}
    by_name = (await api.client.get("/api/v1/device-certificates", params={"name": "camera-1"})).json()
    assert [item["ca_sn"] for item in by_name["items"]] == [second.sn]

    path = f"/api/v1/device-certificates/{first.sn}/{sensor_sn}"
    device = (await api.client.get(path)).json()
    assert device["device_sn"] == sensor_sn and device["ca_sn"] == first.sn
    assert device["name"] == "sensor-1" and device["status"] == "active"
    assert device["pem"] == pem(sensor)
    assert device["fingerprint"] == pki.fingerprint_sha256(sensor)
    assert datetime.fromisoformat(device["valid_end"]) == sensor.not_valid_after_utc

    inactive = await api.client.post(f"{path}/inactivate")
    assert inactive.json()["status"] == "inactive"
    entry = api.registry.index.device(first.sn, sensor_sn)
    assert entry is not None and not entry.active
    only_inactive = (
        await api.client.get("/api/v1/device-certificates", params={"status": "inactive"})
    ).json()
    assert [item["device_sn"] for item in only_inactive["items"]] == [sensor_sn]
    assert (await api.client.post(f"{path}/activate")).json()["status"] == "active"

    assert (await api.client.delete(path)).status_code == 204
    assert (await api.client.get(path)).status_code == 404
    assert api.registry.index.device(first.sn, sensor_sn) is None


async def test_deleting_a_ca_deletes_its_devices(api: Api) -> None:
    authority = Pki.create()
    await api.register_ca(authority)
    device = await api.register_device(authority, "dev")
    assert (await api.client.delete(f"/api/v1/ca-certificates/{authority.sn}")).status_code == 204
    path = f"/api/v1/device-certificates/{authority.sn}/{pki.serial_hex(device)}"
    reply = await api.client.get(path)
    assert reply.status_code == 404 and reply.json()["code"] == "FindCaBySnError"


async def test_server_certificate(api: Api) -> None:
    shown = (await api.client.get("/api/v1/server-certificate")).json()
    assert shown["subject"] == "CN=localhost"
    assert "localhost" in shown["sans"]
    assert shown["generation"] == 1
    assert shown["cert_file"].endswith("server.pem")

    ca = pki.load_ca_dir(api.data_dir / "server-ca")
    key = pki.generate_key("ec")
    certificate = pki.issue_server_certificate(
        ca.certificate, ca.key, "mqtt.example.com", ["mqtt.example.com"], key.public_key()
    )
    replaced = await api.client.put(
        "/api/v1/server-certificate",
        json={"chain_pem": pem(certificate, ca.certificate), "key_pem": pki.private_key_pem(key).decode()},
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert body["subject"] == "CN=mqtt.example.com"
    assert body["sn"] == pki.serial_hex(certificate)
    assert body["fingerprint"] == pki.fingerprint_sha256(certificate)
    assert body["generation"] == 2
    assert (await api.client.get("/api/v1/server-certificate")).json() == body


async def test_auth_mode(api: Api) -> None:
    # How many live sessions a switch cuts is counted by a real broker: tests/mtls/test_auth_mode_counts.py.
    one_way = {"mode": "one-way", "listeners": "tcp, tls, ws, wss: clients with Signature credentials"}
    mutual = {
        "mode": "mutual",
        "listeners": "tls: devices with certificates of registered CAs; wss: clients with Signature credentials; "
        "tcp, ws: closed",
    }
    assert (await api.client.get("/api/v1/auth-mode")).json() == one_way
    changed = await api.client.put("/api/v1/auth-mode", json={"mode": "mutual"})
    assert changed.status_code == 200 and changed.json().items() >= mutual.items()
    assert api.broker.mode_changes == [("mutual", False)]
    assert (await api.client.get("/api/v1/auth-mode")).json() == mutual
    refused = await api.client.put("/api/v1/auth-mode", json={"mode": "two-way"})
    assert refused.status_code == 400
    assert api.broker.mode_changes == [("mutual", False)]


async def test_access_keys(api: Api) -> None:
    listed = (await api.client.get("/api/v1/access-keys")).json()["items"]
    assert [item["id"] for item in listed] == [api.init.access_key_id]
    assert all(set(item) == {"id", "created_at"} for item in listed)

    created = await api.client.post("/api/v1/access-keys")
    assert created.status_code == 201
    key = created.json()
    assert set(key) == {"id", "secret", "created_at"}
    # The broker's Signature check reads this mapping: the new key works without a restart.
    assert api.access_keys.secrets[key["id"]] == key["secret"]
    listed = (await api.client.get("/api/v1/access-keys")).json()["items"]
    assert {item["id"] for item in listed} == {api.init.access_key_id, key["id"]}
    assert key["secret"] not in (await api.client.get("/api/v1/access-keys")).text

    assert (await api.client.delete(f"/api/v1/access-keys/{key['id']}")).status_code == 204
    assert key["id"] not in api.access_keys.secrets


async def test_connections_and_kick(api: Api) -> None:
    api.broker.connect(
        "GID_test@@@device-2", "tls", **{"cert.cn": "device-2", "cert.sn": "0a", "cert.ca_sn": "77"}
    )
    api.broker.connect(
        "GID_test@@@device-1", "tls", **{"cert.cn": "device-1", "cert.sn": "0b", "cert.ca_sn": "77"}
    )
    api.broker.connect("web/client 1", "ws", access_key_id="LTAI0000")
    page = (await api.client.get("/api/v1/connections")).json()
    assert page["total"] == 3 and page["missing_nodes"] == []
    assert {item["node"] for item in page["items"]} == {"stand-in"}
    assert [item["client_id"] for item in page["items"]] == [
        "GID_test@@@device-1",
        "GID_test@@@device-2",
        "web/client 1",
    ]
    first = page["items"][0]
    assert first["listener"] == "tls" and first["protocol_version"] == 5
    assert first["identity"] == {"cert.cn": "device-1", "cert.sn": "0b", "cert.ca_sn": "77"}
    over_tls = (
        await api.client.get("/api/v1/connections", params={"listener": "tls", "page_size": 1})
    ).json()
    assert over_tls["total"] == 2 and len(over_tls["items"]) == 1

    # Client ids may hold anything, slashes and spaces included.
    kicked = await api.client.post("/api/v1/connections/web%2Fclient%201/kick")
    assert kicked.status_code == 200
    assert kicked.json() == {"client_id": "web/client 1", "kicked": True, "node": "stand-in"}
    kicked = await api.client.post("/api/v1/connections/GID_test@@@device-1/kick")
    assert kicked.status_code == 200
    assert api.broker.kicked == ["web/client 1", "GID_test@@@device-1"]
    assert (await api.client.get("/api/v1/connections")).json()["total"] == 1


async def test_the_nodes_that_did_not_answer_are_named(api: Api) -> None:
    api.broker.connect("here", "tls")
    api.broker.unanswered = ["node-3"]
    page = (await api.client.get("/api/v1/connections")).json()
    assert [item["client_id"] for item in page["items"]] == ["here"] and page["missing_nodes"] == ["node-3"]
    overview = (await api.client.get("/api/v1/instance")).json()
    assert overview["missing_nodes"] == ["node-3"]
    # The client may be on the node that did not answer: the refusal says so.
    refused = await api.client.post("/api/v1/connections/elsewhere/kick")
    assert refused.status_code == 404 and "node-3" in refused.json()["message"]


async def test_decisions(api: Api) -> None:
    record = api.metrics.counting(api.registry.record_decision)
    start = datetime.now(UTC)
    record(DecisionEntry(listener="tls", client_id="c1", ca_sn="aa", device_sn="01", cn="d1", step=6,
                    result="allow", reason="new-device", detail="registered"))  # fmt: skip
    record(DecisionEntry(listener="tls", client_id="c2", ca_sn="aa", device_sn="02", cn="d2", step=2,
                    result="deny", reason="device-inactive", detail="inactive"))  # fmt: skip
    record(DecisionEntry(listener="tcp", client_id="c3", step=0, result="deny", reason="bad-credentials",
                    detail="wrong password", time=start - timedelta(hours=2)))  # fmt: skip

    # Recorded decisions are written in batches: the API shows the queued ones at once.
    everything = (await api.client.get("/api/v1/decisions")).json()
    assert [item["client_id"] for item in everything["items"]] == ["c2", "c1", "c3"]
    assert (everything["limit"], everything["offset"]) == (100, 0)
    denied = (await api.client.get("/api/v1/decisions", params={"result": "deny"})).json()["items"]
    assert [item["client_id"] for item in denied] == ["c2", "c3"]
    device = (await api.client.get("/api/v1/decisions", params={"device_sn": "01"})).json()["items"]
    assert [(item["reason"], item["step"], item["cn"]) for item in device] == [("new-device", 6, "d1")]
    by_reason = (await api.client.get("/api/v1/decisions", params={"reason": "bad-credentials"})).json()[
        "items"
    ]
    assert [item["client_id"] for item in by_reason] == ["c3"]
    by_client = (await api.client.get("/api/v1/decisions", params={"client_id": "c2", "ca_sn": "aa"})).json()
    assert len(by_client["items"]) == 1
    recent = (
        await api.client.get(
            "/api/v1/decisions", params={"since": (start - timedelta(minutes=1)).isoformat()}
        )
    ).json()
    assert {item["client_id"] for item in recent["items"]} == {"c1", "c2"}
    # A time without a zone is UTC.
    naive_until = (start - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    older = (await api.client.get("/api/v1/decisions", params={"until": naive_until})).json()
    assert [item["client_id"] for item in older["items"]] == ["c3"]
    paged = (await api.client.get("/api/v1/decisions", params={"limit": 1, "offset": 1})).json()
    assert [item["client_id"] for item in paged["items"]] == ["c1"]


async def test_instance_overview(api: Api) -> None:
    authority = Pki.create()
    await api.register_ca(authority)
    device = await api.register_device(authority, "dev")
    await api.client.post(f"/api/v1/device-certificates/{authority.sn}/{pki.serial_hex(device)}/inactivate")
    expiring = authority.device("soon", valid_days=10)
    await api.registry.register_device(authority.sn, expiring)
    api.broker.connect("c1", "tls")
    overview = (await api.client.get("/api/v1/instance")).json()
    assert overview["id"] == "mqtt-test-1"
    assert overview["mode"] == "one-way"
    assert overview["listeners"] == [
        {"name": "tcp", "host": "127.0.0.1", "port": 1883},
        {"name": "tls", "host": "127.0.0.1", "port": 8883},
    ]
    assert overview["counts"] == {
        "ca_certificates": 1,
        "ca_certificates_active": 1,
        "ca_certificates_inactive": 0,
        "ca_certificates_expiring": 0,
        "device_certificates": 2,
        "device_certificates_active": 1,
        "device_certificates_inactive": 1,
        "device_certificates_expiring": 1,
        "expiring_within_days": 30,
        "connections": 1,
    }
    # One node alone: the cluster it answers for is itself.
    assert [(node["name"], node["connections"]) for node in overview["nodes"]] == [("stand-in", 1)]
    assert overview["missing_nodes"] == []


async def test_readyz_needs_no_token_and_names_what_is_missing(api: Api) -> None:
    reply = await api.client.get("/readyz", headers={"Authorization": ""})
    assert reply.status_code == 200 and reply.json() == {"ready": True, "missing": []}
    api.broker.missing = ["nats"]
    for path in ("/readyz", "/api/v1/readyz"):
        reply = await api.client.get(path, headers={"Authorization": ""})
        assert reply.status_code == 503 and reply.json() == {"ready": False, "missing": ["nats"]}


async def test_healthz_needs_no_token(api: Api) -> None:
    reply = await api.client.get("/api/v1/healthz", headers={"Authorization": ""})
    assert reply.status_code == 200 and reply.json() == {"status": "ok"}


async def test_explain(api: Api) -> None:
    authority = Pki.create()
    await api.register_ca(authority)

    async def explain(certificate: x509.Certificate, *chain: x509.Certificate) -> dict[str, object]:
        reply = await api.client.post("/api/v1/explain", json={"certificate_pem": pem(certificate, *chain)})
        assert reply.status_code == 200, reply.text
        body: dict[str, object] = reply.json()
        return body

    new = authority.device("new-device")
    explanation = await explain(new, authority.ca.certificate)
    assert explanation["allowed"] is True
    assert (explanation["step"], explanation["reason"]) == (6, "new-device")
    assert explanation["ca_sn"] == authority.sn and explanation["device_sn"] == pki.serial_hex(new)
    assert explanation["cn"] == "new-device"
    assert explanation["fingerprint"] == pki.fingerprint_sha256(new)
    assert [step["step"] for step in explanation["trace"]] == [1, 2, 3, 4, 5, 6]  # type: ignore[attr-defined]
    # Explaining registers nothing.
    assert api.registry.index.device(authority.sn, pki.serial_hex(new)) is None

    registered = await api.register_device(authority, "known")
    await api.client.post(
        f"/api/v1/device-certificates/{authority.sn}/{pki.serial_hex(registered)}/inactivate"
    )
    explanation = await explain(registered)
    assert (explanation["allowed"], explanation["step"], explanation["reason"]) == (
        False,
        2,
        "device-inactive",
    )

    await api.client.post(f"/api/v1/ca-certificates/{authority.sn}/inactivate")
    explanation = await explain(authority.device("another"))
    assert (explanation["allowed"], explanation["step"], explanation["reason"]) == (False, 4, "ca-inactive")

    stranger = Pki.create("Unknown CA").device("stranger")
    explanation = await explain(stranger)
    assert (explanation["allowed"], explanation["step"], explanation["reason"]) == (
        False,
        3,
        "ca-not-registered",
    )
    assert explanation["trace"][-1]["text"].startswith("deny (ca-not-registered)")  # type: ignore[index]


async def test_metrics(api: Api) -> None:
    authority = Pki.create()
    await api.register_ca(authority)
    await api.register_device(authority, "dev")
    api.broker.connect("c1", "tls")
    api.broker.connect("c2", "tls")
    api.broker.connect("c3", "tcp")
    record = api.metrics.counting(api.registry.record_decision)
    for reason in ("new-device", "registered-device", "registered-device"):
        record(DecisionEntry(result="allow", reason=reason))
    record(DecisionEntry(result="deny", reason="ca-not-registered"))
    for _ in range(5):  # a stranger: the first is a row, the other four are folded
        record(
            DecisionEntry(result="deny", reason="no-credentials", peer="203.0.113.7:1", identity_known=False)
        )
    for code in ("SignatureDoesNotMatch",) * 3 + ("Throttling.User",) * 2:  # calls that did not verify
        api.registry.record_operation(
            OperationEntry(
                request_id="R", action="ListCaCertificate", status=403, code=code, peer="203.0.113.7:2"
            )
        )

    reply = await api.client.get("/metrics", headers={"Authorization": ""})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in reply.text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['certmq_connections{listener="tls"}'] == 2
    assert samples['certmq_connections{listener="tcp"}'] == 1
    assert samples['certmq_decisions_total{reason="registered-device",result="allow"}'] == 2
    assert samples['certmq_decisions_total{reason="new-device",result="allow"}'] == 1
    assert samples['certmq_decisions_total{reason="ca-not-registered",result="deny"}'] == 1
    assert samples['certmq_decisions_total{reason="no-credentials",result="deny"}'] == 5
    assert samples['certmq_decisions_folded_total{reason="no-credentials"}'] == 4
    assert samples['certmq_api_calls_folded_total{code="SignatureDoesNotMatch"}'] == 2
    assert samples['certmq_api_calls_folded_total{code="Throttling.User"}'] == 1
    assert samples['certmq_ca_certificates{status="active"}'] == 1
    assert samples['certmq_device_certificates{status="active"}'] == 1
    assert samples['certmq_device_certificates{status="inactive"}'] == 0
    assert samples['certmq_certificates_expiring{kind="device"}'] == 0
    assert samples['certmq_certificates_expiring{kind="ca"}'] == 0
