"""ApsaraMQ client ids, ``GroupID@@@DeviceID``: the DeviceID that ``auth.bind_client_id =
"device-id"`` binds to the certificate's CN, checked by the instance authenticator."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from certmq.auth.apsara_client_id import device_id_of, valid_apsara_client_id
from certmq.auth.connect import AuthOutcome, ConnectAttempt
from certmq.auth.decision import decide_device
from certmq.mqtt.reason_codes import ReasonCode

from .test_device_authentication import device_authenticator, device_der, make_fleet


@pytest.mark.parametrize(
    ("client_id", "device_id"),
    [
        ("GID_meters@@@meter-7", "meter-7"),
        ("GID_meters@@@", ""),
        ("GID_meters@@@a@@@b", "a@@@b"),  # the first separator ends the GroupID
        ("meter-7", None),
        ("", None),
    ],
)
def test_the_device_id_is_what_follows_the_separator(client_id: str, device_id: str | None) -> None:
    assert device_id_of(client_id) == device_id


@pytest.mark.parametrize(
    ("client_id", "allowed"),
    [
        ("GID_meters@@@dev-5", True),
        ("GID_meters@@@dev-6", False),  # another device's id
        ("dev-5", False),  # the CN itself, without a GroupID
        ("GID_meters@@@", False),
    ],
)
def test_a_bound_device_id_must_be_the_certificate_cn(client_id: str, allowed: bool) -> None:
    index, ca = make_fleet()
    der = device_der(ca, "dev-5")
    registered = decide_device(der, index)
    index.put_device(registered.ca_sn, registered.device_sn, hashlib.sha256(der).digest(), True)
    recorded: list[dict[str, Any]] = []
    authenticator = device_authenticator(
        index=index, bind_client_id="device-id", audit=lambda **fields: recorded.append(fields)
    )
    outcome = authenticator.authenticate(ConnectAttempt("tls", "127.0.0.1:1", client_id, None, None, 4, der))
    assert isinstance(outcome, AuthOutcome)
    if allowed:
        assert outcome.allowed
        assert [row["reason"] for row in recorded] == ["registered-device"]
    else:
        assert (outcome.allowed, outcome.reason_code) == (False, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
        assert outcome.reason == "the DeviceID of GroupID@@@DeviceID must equal the certificate CN 'dev-5'"
        assert [row["reason"] for row in recorded] == ["client-id-not-bound"]


@pytest.mark.parametrize(
    ("client_id", "valid"),
    [
        ("GID_meters@@@meter-7", True),
        ("GID-meters@@@meter-7", True),  # either separator after GID
        ("GID_abc@@@d", True),  # the shortest GroupID: 7 characters
        ("GID_ab@@@d", False),
        ("GID_" + "a" * 53 + "@@@" + "d" * 4, True),  # 64 characters in all
        ("GID_" + "a" * 53 + "@@@" + "d" * 5, False),  # 65
        ("GID_meters@@@", False),  # no DeviceID
        ("GID_meters", False),  # no separator
        ("gid_meters@@@meter-7", False),
        ("XID_meters@@@meter-7", False),
        ("GID_met.ers@@@meter-7", False),  # a GroupID has letters, digits, '-' and '_' only
        ("GID_métres@@@meter-7", False),  # ASCII only
        ("GID_meters@@@a@@@b", True),  # the DeviceID is whatever follows the first separator
        ("", False),
    ],
)
def test_the_form_of_an_apsaramq_client_id(client_id: str, valid: bool) -> None:
    assert valid_apsara_client_id(client_id) is valid
