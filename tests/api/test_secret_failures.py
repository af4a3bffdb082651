"""Wrong secrets over HTTP, against a real `certmq serve`: every route that checks a secret slows
down the source that keeps sending wrong ones (429 with Retry-After, a wait that doubles), checks
nothing while the source waits, and leaves every other source alone. One count per source across
all the routes; a metric and a log line say what happened."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from certmq.api.application import API_PREFIX
from certmq.web.secret_failures import FREE_FAILURES, SecretFailures, SecretRoute
from interop.broker_process import RunningBroker, start_broker
from rpc.signing import sign_rpc

from .conftest import Api

WRONG = "not-the-secret-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    broker = start_broker(tmp_path_factory.mktemp("certmq"))
    yield broker
    assert broker.stop() == 0, broker.log_tail()


def client_from(broker: RunningBroker, address: str) -> httpx.Client:
    """An HTTP client whose requests come from ``address`` (any of 127.0.0.0/8 is this host)."""
    return httpx.Client(
        base_url=f"http://{broker.host}:{broker.http_port}",
        transport=httpx.HTTPTransport(local_address=address),
        timeout=10,
    )


@dataclass(frozen=True)
class Route:
    """A route that checks a secret: a request with the right one and with a wrong one, and the
    status each is answered with when the secret is checked."""

    route: SecretRoute
    send: Callable[[httpx.Client, RunningBroker, bool], httpx.Response]
    right_status: int
    wrong_status: int


def console_login(client: httpx.Client, broker: RunningBroker, right: bool) -> httpx.Response:
    token = broker.init_info["admin_token"] if right else WRONG
    return client.post("/console/login", data={"token": token, "next": "/console"})


def rest_api(client: httpx.Client, broker: RunningBroker, right: bool) -> httpx.Response:
    token = broker.init_info["admin_token"] if right else WRONG
    return client.get("/api/v1/ca-certificates", headers={"Authorization": f"Bearer {token}"})


def rpc_api(client: httpx.Client, broker: RunningBroker, right: bool) -> httpx.Response:
    info = broker.init_info
    secret = info["access_key_secret"] if right else WRONG
    parameters = {
        "Action": "ListCaCertificate",
        "MqttInstanceId": info["instance_id"],
        "PageNo": "1",
        "PageSize": "10",
    }
    return client.get("/", params=sign_rpc("GET", parameters, info["access_key_id"], secret))


ROUTES = [
    Route(SecretRoute.CONSOLE_LOGIN, console_login, 303, 401),
    Route(SecretRoute.REST_API, rest_api, 200, 401),
    Route(SecretRoute.RPC_API, rpc_api, 200, 403),
]


async def test_every_route_that_checks_a_secret_is_listed(api: Api) -> None:
    """Every operation of the REST API that asks for the admin token answers a source that must
    wait with 429, the right token unchecked: none checks a token another way."""
    document = (await api.client.get("/api/v1/openapi.json")).json()
    operations = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if operation.get("security")
    ]
    assert len(operations) > 20
    async with httpx.AsyncClient(
        base_url=api.url, transport=httpx.AsyncHTTPTransport(local_address="127.0.4.1")
    ) as guesser:
        for _ in range(FREE_FAILURES):
            reply = await guesser.get("/api/v1/instance", headers={"Authorization": f"Bearer {WRONG}"})
            assert reply.status_code == 401
        for method, path in operations:
            reply = await guesser.request(method, path, headers={"Authorization": f"Bearer {api.token}"})
            assert reply.status_code == 429, (method, path, reply.text)
            assert reply.json()["code"] == "TooManyFailures"
    unsecured = [path for path, methods in document["paths"].items() if not any(
        operation.get("security") for operation in methods.values()
    )]  # fmt: skip
    assert unsecured == [f"{API_PREFIX}/healthz"]
    # The console's login and the RPC API are the other routes that take a secret.
    assert {route.route for route in ROUTES} == set(SecretRoute)


def metric(broker: RunningBroker, name: str, route: SecretRoute) -> float:
    with client_from(broker, "127.0.0.1") as client:
        text = client.get("/metrics").text
    found = re.search(rf'^{name}_total{{route="{route}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def retry_after(reply: httpx.Response) -> int:
    assert reply.status_code == 429, reply.text
    return int(reply.headers["Retry-After"])


@pytest.mark.parametrize("case", ROUTES, ids=[str(case.route) for case in ROUTES])
def test_repeated_wrong_secrets_are_slowed_per_source(served: RunningBroker, case: Route) -> None:
    number = ROUTES.index(case)
    guesser_address, bystander_address = f"127.0.1.{number + 1}", f"127.0.2.{number + 1}"
    failures = metric(served, "certmq_http_secret_failures", case.route)
    throttled = metric(served, "certmq_http_secret_throttled", case.route)
    with client_from(served, guesser_address) as guesser, client_from(served, bystander_address) as bystander:
        for _ in range(FREE_FAILURES):
            assert case.send(guesser, served, False).status_code == case.wrong_status
        # Now the guesser waits; even the right secret is not checked meanwhile.
        first_wait = retry_after(case.send(guesser, served, True))
        assert first_wait == 1
        # Another source logs in as usual.
        assert case.send(bystander, served, True).status_code == case.right_status

        time.sleep(first_wait)
        assert case.send(guesser, served, False).status_code == case.wrong_status
        second_wait = retry_after(case.send(guesser, served, False))
        assert second_wait == 2

        time.sleep(second_wait)
        assert case.send(guesser, served, True).status_code == case.right_status
        # A success starts the source afresh.
        assert case.send(guesser, served, False).status_code == case.wrong_status
        assert case.send(guesser, served, True).status_code == case.right_status

    assert metric(served, "certmq_http_secret_failures", case.route) == failures + FREE_FAILURES + 2
    assert metric(served, "certmq_http_secret_throttled", case.route) == throttled + 2
    assert f"{case.route}: {FREE_FAILURES + 1} wrong secrets in a row from {guesser_address}" in (
        served.log_tail(200)
    )


def test_one_count_across_the_routes(served: RunningBroker) -> None:
    """Guesses spread over the routes add up: no route gives a source fresh attempts."""
    with client_from(served, "127.0.3.1") as guesser:
        for number in range(FREE_FAILURES):
            case = ROUTES[number % len(ROUTES)]
            assert case.send(guesser, served, False).status_code == case.wrong_status
        for case in ROUTES:
            assert retry_after(case.send(guesser, served, True)) >= 1


def test_the_wait_doubles_up_to_a_bound_and_memory_stays_bounded() -> None:
    now = [1000.0]
    failures = SecretFailures(
        free_failures=2, max_delay=8, forget_after=60, max_sources=3, clock=lambda: now[0]
    )
    waits = []
    for _ in range(7):
        failures.failed("a", SecretRoute.REST_API)
        try:
            failures.check("a", SecretRoute.REST_API)
            waits.append(0)
        except Exception as error:
            waits.append(error.retry_after)  # type: ignore[attr-defined]
            now[0] += error.retry_after  # type: ignore[attr-defined]
    assert waits == [0, 1, 2, 4, 8, 8, 8]

    # A quiet source is forgotten; at most max_sources are kept, the least recent go first.
    now[0] += 61
    for source in ("b", "c", "d", "e"):
        failures.failed(source, SecretRoute.REST_API)
    assert len(failures) == 3
    failures.succeeded("e")
    assert len(failures) == 2
