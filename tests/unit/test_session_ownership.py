"""Whose a session is: the owner key of each kind of identity, and who may resume it."""

from __future__ import annotations

import pytest

from certmq.auth.identity import Identity
from certmq.auth.ownership import (
    ANONYMOUS_OWNER,
    UNKNOWN_OWNER,
    SessionOwnerPolicy,
    may_resume,
    session_owner,
)

DEVICE = {
    "cert.cn": "meter-1",
    "cert.sn": "0a1b",
    "cert.ca_sn": "77",
    "cert.not_after": "2030-01-01T00:00:00+00:00",
}


def owner(fields: dict[str, str]) -> str:
    return session_owner(Identity.from_fields(fields))


def test_each_kind_of_identity_has_its_own_key() -> None:
    assert owner(DEVICE) == "cert:77:0a1b"
    # The CN and the validity are not part of it: a device is its CA and serial.
    assert owner({**DEVICE, "cert.cn": "renamed", "cert.not_after": ""}) == "cert:77:0a1b"
    assert owner({**DEVICE, "cert.sn": "0a1c"}) != owner(DEVICE)
    assert owner({**DEVICE, "cert.ca_sn": "78"}) != owner(DEVICE)
    # Signature credentials: the AccessKey, whatever client id it signs.
    assert owner({"access_key_id": "LTAI5"}) == "access-key:LTAI5"
    # A device that also sent credentials is the device.
    assert owner({**DEVICE, "access_key_id": "LTAI5"}) == "cert:77:0a1b"
    assert owner({}) == ANONYMOUS_OWNER
    keys = {owner(DEVICE), owner({"access_key_id": "LTAI5"}), owner({})}
    assert len(keys) == 3 and UNKNOWN_OWNER not in keys


@pytest.mark.parametrize(
    ("owner", "claimant", "identity_policy", "any_policy"),
    [
        ("cert:77:0a1b", "cert:77:0a1b", True, True),
        ("cert:77:0a1b", "cert:77:0a1c", False, True),
        ("cert:77:0a1b", "access-key:LTAI5", False, True),
        ("cert:77:0a1b", ANONYMOUS_OWNER, False, True),
        (ANONYMOUS_OWNER, ANONYMOUS_OWNER, True, True),
        (ANONYMOUS_OWNER, "cert:77:0a1b", False, True),
        (UNKNOWN_OWNER, "cert:77:0a1b", True, True),  # saved before owners were kept: adopted
    ],
)
def test_who_may_resume(owner: str, claimant: str, identity_policy: bool, any_policy: bool) -> None:
    assert may_resume(owner, claimant, SessionOwnerPolicy.IDENTITY) is identity_policy
    assert may_resume(owner, claimant, SessionOwnerPolicy.ANY) is any_policy
