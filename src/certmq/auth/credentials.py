"""Signature credentials, ApsaraMQ's convention (README.md, "Quick start").

Username ``Signature|<AccessKeyId>|<InstanceId>``; password
``Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from certmq.auth.connect import AuthOutcome
from certmq.auth.identity import Identity
from certmq.mqtt.reason_codes import ReasonCode

SIGNATURE_MODE = "Signature"


def signature_password(access_key_secret: str, client_id: str) -> str:
    """The password a client sends in Signature mode."""
    digest = hmac.new(access_key_secret.encode(), client_id.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_username(access_key_id: str, instance_id: str) -> str:
    return f"{SIGNATURE_MODE}|{access_key_id}|{instance_id}"


def check_signature(
    username: str | None,
    password: bytes | None,
    client_id: str,
    instance_id: str,
    access_keys: Mapping[str, str],
) -> AuthOutcome:
    """Verify Signature-mode credentials; the outcome says why they were refused."""
    bad = ReasonCode.BAD_USER_NAME_OR_PASSWORD
    if username is None or password is None:
        return AuthOutcome(False, bad, "username and password are required")
    mode, _, rest = username.partition("|")
    access_key_id, _, named_instance = rest.partition("|")
    if mode != SIGNATURE_MODE or not access_key_id or not named_instance:
        return AuthOutcome(False, bad, "username must be Signature|AccessKeyId|InstanceId")
    if named_instance != instance_id:
        return AuthOutcome(False, bad, f"unknown instance {named_instance}")
    secret = access_keys.get(access_key_id)
    if secret is None:
        return AuthOutcome(False, bad, "unknown AccessKeyId")
    expected = signature_password(secret, client_id).encode()
    if not hmac.compare_digest(expected, password):
        return AuthOutcome(False, bad, "signature does not match")
    return AuthOutcome(True, identity=Identity(access_key_id=access_key_id))
