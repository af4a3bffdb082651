"""Malformed input to the RPC API, properly signed so that it reaches the actions: missing, empty,
oversized and wrongly typed parameters and bad PEM answer ParameterFieldCheckFailed or
CertificateContentError in the ApsaraMQ error body, and nothing a client sends answers 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.conftest import Pki, pem
from certmq.api.rpc import ACTIONS
from certmq.api.rpc.parameters import MAX_BODY_BYTES, MAX_PARAMETERS, MAX_VALUE_LENGTH
from certmq.api.rpc.signature import SIGNATURE_PARAMETERS
from certmq.registry.errors import ParameterFieldCheckFailed

from .conftest import Fleet
from .live_api import LiveApi

# A few hundred signed requests in all, a couple of seconds.
BOUNDED = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PARAMETER_ERROR = (400, "ParameterFieldCheckFailed")
CONTENT_ERROR = (401, "CertificateContentError")
ERROR_BODY = {"RequestId", "HostId", "Code", "Message"}


class Targets:
    """Valid values of every parameter: a registered CA, one of its devices, a fresh CA."""

    def __init__(self, live: LiveApi) -> None:
        fleet = Fleet(live, "malformed input CA")
        device_sn, _ = fleet.device("malformed-input-device")
        self.candidate = Pki.create("never registered CA")
        self.valid = {
            "MqttInstanceId": live.instance_id,
            "Sn": fleet.sn,
            "CaSn": fleet.sn,
            "DeviceSn": device_sn,
            "PageNo": "1",
            "PageSize": "10",
            "CaName": "candidate",
            "CaContent": self.candidate.ca_pem,
            "VerificationContent": self.candidate.verification_pem("0" * 32),
        }


@pytest.fixture(scope="module")
def targets(live: LiveApi) -> Iterator[Targets]:
    yield Targets(live)


def refusal(reply: httpx.Response) -> tuple[int, str]:
    assert reply.headers["content-type"].startswith("application/json"), reply.text
    body = reply.json()
    assert set(body) == ERROR_BODY and body["RequestId"] == reply.headers["x-acs-request-id"], body
    return reply.status_code, body["Code"]


# --- one parameter wrong at a time ----------------------------------------------------------------

NOT_DECIMAL = st.one_of(
    st.sampled_from(["-1", "+1", "1.5", "1e3", " 1", "1 ", "0x10", "١", "", "0"]),
    st.text(min_size=1, max_size=12).filter(lambda text: not text.isascii() or not text.isdigit()),
    st.integers(min_value=10**10, max_value=10**30).map(str),
)
NOT_A_SERIAL = st.one_of(
    st.text(min_size=1, max_size=20).map(lambda text: f" {text}"),
    st.text(min_size=1, max_size=20).map(lambda text: f"{text}\n"),
    st.sampled_from(["ab\x00cd", "ab\tcd", "\u200b"]),
    st.text(alphabet="0123456789abcdef", min_size=129, max_size=300),
)
BAD_PEM = st.one_of(
    st.text(max_size=200).filter(lambda text: text.strip() != ""),
    st.sampled_from(
        [
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        ]
    ),
    st.binary(min_size=1, max_size=200).map(lambda data: data.decode("latin-1")),
)


@st.composite
def one_wrong_parameter(draw: st.DrawFn) -> tuple[str, str, str | None, tuple[int, str]]:
    """(action, parameter, its wrong value or None for missing, the expected refusal)."""
    action = draw(st.sampled_from(sorted(ACTIONS)))
    name = draw(st.sampled_from(["MqttInstanceId", *ACTIONS[action].parameters]))
    kinds = ["missing", "empty", "oversized"]
    if name in ("PageNo", "PageSize"):
        kinds.append("not a number")
    if name in ("Sn", "CaSn", "DeviceSn"):
        kinds.append("not a serial")
    if name in ("CaContent", "VerificationContent"):
        kinds.append("bad PEM")
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        return action, name, None, PARAMETER_ERROR
    if kind == "empty":
        return action, name, "", PARAMETER_ERROR
    if kind == "oversized":
        return action, name, "7" * (MAX_VALUE_LENGTH + 1), PARAMETER_ERROR
    if kind == "not a number":
        value = draw(NOT_DECIMAL)
        if name == "PageSize":
            value = draw(st.one_of(st.just(value), st.sampled_from(["101", "1000"])))
        return action, name, value, PARAMETER_ERROR
    if kind == "not a serial":
        return action, name, draw(NOT_A_SERIAL), PARAMETER_ERROR
    return action, name, draw(BAD_PEM), CONTENT_ERROR


@BOUNDED
@given(case=one_wrong_parameter(), scheme=st.sampled_from(["HMAC-SHA1", "ACS3-HMAC-SHA256"]))
def test_one_wrong_parameter_is_named_in_the_refusal(
    live: LiveApi, targets: Targets, case: tuple[str, str, str | None, tuple[int, str]], scheme: str
) -> None:
    action, name, value, expected = case
    parameters = {key: targets.valid[key] for key in ("MqttInstanceId", *ACTIONS[action].parameters)}
    if value is None:
        del parameters[name]
    else:
        parameters[name] = value
    reply = live.rpc(action, parameters, scheme=scheme, method="POST" if ACTIONS[action].changes else "GET")
    assert refusal(reply) == expected, reply.json()
    if expected == PARAMETER_ERROR:
        assert name in reply.json()["Message"]


def test_a_certificate_that_is_no_ca_is_a_content_error(live: LiveApi, targets: Targets) -> None:
    device = targets.candidate.device("not a CA")
    parameters = {**targets.valid, "CaContent": pem(device)}
    parameters = {
        key: parameters[key] for key in ("MqttInstanceId", *ACTIONS["RegisterCaCertificate"].parameters)
    }
    assert refusal(live.rpc("RegisterCaCertificate", parameters, method="POST")) == CONTENT_ERROR


# --- any parameters at all ------------------------------------------------------------------------

NAMES = st.text(min_size=0, max_size=140).filter(
    lambda name: name not in SIGNATURE_PARAMETERS and name not in ("Action", "Version", "Format")
)


@BOUNDED
@given(
    action=st.sampled_from(sorted(ACTIONS)),
    parameters=st.dictionaries(NAMES, st.text(max_size=300), max_size=8),
    scheme=st.sampled_from(["HMAC-SHA1", "ACS3-HMAC-SHA256"]),
)
def test_whatever_the_parameters_the_answer_is_never_a_server_error(
    live: LiveApi, targets: Targets, action: str, parameters: dict[str, str], scheme: str
) -> None:
    # Half the time with this instance's id, so that the action itself runs.
    if "MqttInstanceId" not in parameters and len(parameters) % 2 == 0:
        parameters["MqttInstanceId"] = live.instance_id
    reply = live.rpc(action, parameters, scheme=scheme)
    assert reply.status_code < 500, reply.text
    assert reply.json()["RequestId"]
    if reply.status_code != 200:
        assert refusal(reply)[1] != "InternalError"


# --- requests that cannot be read -----------------------------------------------------------------


def raw(live: LiveApi, target: str, **options: object) -> httpx.Response:
    return httpx.request(str(options.pop("method", "GET")), f"{live.url}{target}", timeout=10, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "options", "says"),
    [
        ("/?Action=GetRegisterCode&Action=GetRegisterCode", {}, "more than once"),
        ("/?Action=GetRegisterCode&MqttInstanceId=%ff%fe", {}, "UTF-8"),
        ("/?" + "&".join(f"P{n}=1" for n in range(MAX_PARAMETERS + 1)), {}, "parameters"),
        ("/?" + "x" * 129 + "=1", {}, "name"),
        ("/?=1", {}, "name"),
        ("/?Action=GetRegisterCode", {"method": "POST", "content": b'{"a": 1}', "headers": {"content-type": "application/json"}}, "form"),
        ("/?Action=GetRegisterCode", {"method": "POST", "data": {"Action": "ListCaCertificate"}}, "both"),
        ("/", {"method": "POST", "content": b"A=" + b"1" * MAX_BODY_BYTES, "headers": {"content-type": "application/x-www-form-urlencoded"}}, "larger"),
    ],
    ids=["repeated", "not-utf8", "too-many", "long-name", "empty-name", "json-body", "query-and-body", "huge-body"],
)  # fmt: skip
def test_a_request_that_cannot_be_read_is_a_parameter_error(
    live: LiveApi, target: str, options: dict[str, object], says: str
) -> None:
    reply = raw(live, target, **options)
    assert refusal(reply) == PARAMETER_ERROR
    assert says in reply.json()["Message"]


def test_missing_action_is_a_parameter_error(live: LiveApi) -> None:
    reply = live.rpc("", {"MqttInstanceId": live.instance_id})
    assert refusal(reply) == PARAMETER_ERROR and "Action" in reply.json()["Message"]


def test_a_page_number_beyond_any_listing_is_refused_by_the_registry_too(live: LiveApi) -> None:
    for page_no in (0, 1_000_000_001, 2**63):
        with pytest.raises(ParameterFieldCheckFailed, match="PageNo"):
            live.run(live.registry.list_cas(page_no, 10))
    assert live.run(live.registry.list_cas(1_000_000_000, 10)).items == ()
