"""Strangers flood the RPC API of a real `certmq serve` with calls whose signature does not verify
(a wrong secret, an AccessKeyId the instance does not have, no signature, a malformed request, a
replay of a request already accepted, parameters by the hundred kilobytes, actions made up on
the spot), while the instance's AccessKey calls through Alibaba Cloud's SDK: the operations log
keeps every authenticated call, one row each, and a few counted rows per source for the rest,
whose counts add up to the calls made (docs/registry.md, "Retention and folding")."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException

from certmq.registry.pending import MAX_PARAMETERS, MORE_PARAMETERS, PARAMETER_VALUE_LIMIT
from interop.broker_process import RunningBroker, port_accepts, start_broker

from .live_api import sdk_client
from .signing import query_string, sign_acs3, sign_rpc

FOLD_WINDOW = 2  # seconds, so that a flood of some seconds spans several windows
ROUNDS = 3
CALLS_PER_KIND = 200  # per round


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    broker = start_broker(tmp_path_factory.mktemp("certmq"), {"CERTMQ_AUDIT_FOLD_WINDOW": str(FOLD_WINDOW)})
    deadline = time.monotonic() + 30
    while not port_accepts(broker.http_port):
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.05)
    yield broker
    assert broker.stop() == 0, broker.log_tail()


def list_ca_parameters(broker: RunningBroker) -> dict[str, str]:
    return {"MqttInstanceId": broker.init_info["instance_id"], "PageNo": "1", "PageSize": "10"}


@dataclass(frozen=True)
class Stranger:
    """A way of calling without a signature that verifies, from an address of its own."""

    name: str
    address: str
    call: Callable[[httpx.Client, RunningBroker, int], httpx.Response]
    codes: frozenset[str]  # what it may be answered


def wrong_secret(client: httpx.Client, broker: RunningBroker, n: int) -> httpx.Response:
    info = broker.init_info
    query = sign_rpc("GET", {"Action": "DeleteCaCertificate", **list_ca_parameters(broker), "Sn": "0a"},
                     info["access_key_id"], "not-the-secret")  # fmt: skip
    return client.get("/", params=query)


def unknown_key(client: httpx.Client, broker: RunningBroker, n: int) -> httpx.Response:
    query = list_ca_parameters(broker)
    headers = sign_acs3("GET", f"{broker.host}:{broker.http_port}", query, f"LTAI-guess-{n}", "secret",
                        action="ListCaCertificate")  # fmt: skip
    return client.get(f"/?{query_string(query)}", headers=headers)


def unsigned(client: httpx.Client, broker: RunningBroker, n: int) -> httpx.Response:
    return client.get("/", params={"Action": "ListDeviceCredential", **list_ca_parameters(broker)})


def malformed(client: httpx.Client, broker: RunningBroker, n: int) -> httpx.Response:
    return client.get("/?Action=ListCaCertificate&PageNo=1&PageNo=2")  # a parameter named twice


def huge_parameters(client: httpx.Client, broker: RunningBroker, n: int) -> httpx.Response:
    form = {f"Parameter{index:02d}": f"{n}-{index}-" + "v" * 4000 for index in range(60)}
    return client.post("/", params={"Action": "ListCaCertificate"}, data=form)


def made_up_actions(client: httpx.Client, broker: RunningBroker, n: int) -> httpx.Response:
    return client.get("/", params={"Action": f"MadeUp{uuid.uuid4().hex}", **list_ca_parameters(broker)})


STRANGERS = [
    Stranger("wrong-secret", "127.0.3.1", wrong_secret, frozenset({"SignatureDoesNotMatch", "Throttling.User"})),
    Stranger("unknown-key", "127.0.3.2", unknown_key, frozenset({"InvalidAccessKeyId.NotFound", "Throttling.User"})),
    Stranger("unsigned", "127.0.3.3", unsigned, frozenset({"SignatureDoesNotMatch"})),
    Stranger("malformed", "127.0.3.4", malformed, frozenset({"ParameterFieldCheckFailed"})),
    Stranger("huge-parameters", "127.0.3.5", huge_parameters, frozenset({"SignatureDoesNotMatch"})),
    Stranger("made-up-actions", "127.0.3.6", made_up_actions, frozenset({"SignatureDoesNotMatch"})),
]  # fmt: skip
REPLAYER = "127.0.3.7"


def client_from(broker: RunningBroker, address: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{broker.host}:{broker.http_port}",
        transport=httpx.HTTPTransport(local_address=address),
        timeout=10,
    )


def operations(broker: RunningBroker) -> list[dict[str, Any]]:
    """The whole operations log, through the REST API, newest first."""
    rows: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {broker.init_info['admin_token']}"}
    with client_from(broker, "127.0.0.1") as client:
        while True:
            reply = client.get(
                "/api/v1/operations", params={"limit": 1000, "offset": len(rows)}, headers=headers
            )
            reply.raise_for_status()
            items = reply.json()["items"]
            rows += items
            if len(items) < 1000:
                return rows


def folded_metric(broker: RunningBroker) -> dict[str, int]:
    with client_from(broker, "127.0.0.1") as client:
        text = client.get("/metrics").text
    pattern = r'^certmq_api_calls_folded_total\{code="([^"]+)"\} (\S+)$'
    return {code: int(float(value)) for code, value in re.findall(pattern, text, re.M)}


def test_a_flood_of_calls_that_do_not_verify_costs_a_few_counted_rows_and_every_authenticated_call_is_kept(
    served: RunningBroker,
) -> None:
    info = served.init_info
    sdk = sdk_client(f"{served.host}:{served.http_port}", info["access_key_id"], info["access_key_secret"])
    instance = info["instance_id"]
    answered: dict[str, Counter[str]] = {stranger.name: Counter() for stranger in STRANGERS}
    authenticated: list[tuple[str, str]] = []  # (RequestId, code) of the SDK's calls

    # One request of the instance's AccessKey, accepted, then replayed by someone who saw it.
    with client_from(served, "127.0.0.1") as owner:
        captured = sign_rpc("GET", {"Action": "ListCaCertificate", **list_ca_parameters(served)},
                            info["access_key_id"], info["access_key_secret"])  # fmt: skip
        first = owner.get("/", params=captured)
        assert first.status_code == 200, first.text
        authenticated.append((first.json()["RequestId"], "Success"))
    replays: Counter[str] = Counter()

    started = time.monotonic()
    clients = {stranger.name: client_from(served, stranger.address) for stranger in STRANGERS}
    try:
        with client_from(served, REPLAYER) as replayer:
            for _ in range(ROUNDS):
                for stranger in STRANGERS:
                    for n in range(CALLS_PER_KIND):
                        reply = stranger.call(clients[stranger.name], served, n)
                        answered[stranger.name][reply.json()["Code"]] += 1
                for _ in range(CALLS_PER_KIND):
                    replays[replayer.get("/", params=captured).json()["Code"]] += 1
                # The AccessKey's own calls in the middle of the flood, through the SDK: one
                # that succeeds, one refused by the registry.
                listed = sdk.list_ca_certificate(
                    models.ListCaCertificateRequest(mqtt_instance_id=instance, page_no="1", page_size="10")
                )
                authenticated.append((listed.body.request_id, "Success"))
                with pytest.raises(AlibabaCloudException) as refused:
                    sdk.get_ca_certificate(
                        models.GetCaCertificateRequest(mqtt_instance_id=instance, sn="0bad")
                    )
                authenticated.append((refused.value.request_id, refused.value.code))
    finally:
        for client in clients.values():
            client.close()
    elapsed = time.monotonic() - started
    for stranger in STRANGERS:
        assert set(answered[stranger.name]) <= stranger.codes, (stranger.name, answered[stranger.name])
    assert answered["wrong-secret"]["Throttling.User"] > 0 and answered["unknown-key"]["Throttling.User"] > 0
    assert replays == {"SignatureNonceUsed": ROUNDS * CALLS_PER_KIND}

    folded = folded_metric(served)
    served.restart()  # a clean stop writes the windows still open; the log is read back after it
    log = operations(served)

    # Every authenticated call: a row of its own, as it was answered.
    kept = [(row["request_id"], row["code"]) for row in log if row["authenticated"]]
    assert sorted(kept) == sorted(authenticated)
    assert all(row["count"] == 1 for row in log if row["authenticated"])

    # Each stranger: a few rows, whose counts add up to its calls, code by code.
    windows = int(elapsed // FOLD_WINDOW) + 2
    for stranger in [
        *STRANGERS,
        Stranger("replay", REPLAYER, wrong_secret, frozenset({"SignatureNonceUsed"})),
    ]:
        rows = [row for row in log if row["peer"].partition(":")[0] == stranger.address]
        assert rows and not any(row["authenticated"] for row in rows)
        counted: Counter[str] = Counter()
        for row in rows:
            counted[row["code"]] += row["count"]
        calls = replays if stranger.address == REPLAYER else answered[stranger.name]
        assert counted == calls, stranger.name
        assert len(rows) <= 2 * windows * len(counted), f"{stranger.name}: {len(rows)} rows for {calls}"
        for row in rows:
            assert row["first_seen"] <= row["last_seen"] == row["time"]
            assert row["peer"] == stranger.address or row["count"] == 1  # folded rows: by source
    strangers_rows = [row for row in log if not row["authenticated"]]
    calls_made = ROUNDS * CALLS_PER_KIND * (len(STRANGERS) + 1)
    assert sum(row["count"] for row in strangers_rows) == calls_made
    assert len(strangers_rows) < calls_made / 20
    # audit.fold_window reached the instance: windows closed during the flood, not only at the stop.
    assert elapsed < 2 * FOLD_WINDOW or max(Counter(row["peer"] for row in strangers_rows).values()) > 2
    assert folded == dict(
        sum(
            (Counter({row["code"]: row["count"]}) for row in strangers_rows if ":" not in row["peer"]),
            Counter(),
        )
    )

    # What one row holds stays bounded whatever the call carried.
    for row in (row for row in log if row["peer"].startswith("127.0.3.5")):
        assert len(row["parameters"]) == MAX_PARAMETERS + 1
        assert row["parameters"][MORE_PARAMETERS] == f"{60 - MAX_PARAMETERS} more parameters not kept"
        assert all(len(value) <= PARAMETER_VALUE_LIMIT for value in row["parameters"].values())
        assert re.fullmatch(r"\d+-0-v+…\[cut from 400\d characters\]", row["parameters"]["Parameter00"])
    # Names of actions the API does not serve are kept as a parameter, not as the action.
    for row in (row for row in log if row["peer"].startswith("127.0.3.6")):
        assert row["action"] == "" and row["parameters"]["Action"].startswith("MadeUp")

    # The operator's view: counted rows in `certmq operations`.
    listing = subprocess.run(
        [sys.executable, "-m", "certmq", "operations", "--code", "ParameterFieldCheckFailed",
         "--url", f"http://{served.host}:{served.http_port}", "--token", info["admin_token"]],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    header, *lines = listing.splitlines()
    assert "COUNT" in header and "FIRST SEEN" in header
    counts = [int(line[header.index("COUNT") :].split()[0]) for line in lines if " 127.0.3.4 " in line]
    assert counts and max(counts) > 1
    assert sum(counts) + sum(1 for line in lines if " 127.0.3.4:" in line) == ROUNDS * CALLS_PER_KIND
