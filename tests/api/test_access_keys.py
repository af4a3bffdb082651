"""certmq.access_keys: AccessKey pairs created and deleted at run time, kept in credentials.json."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat

import pytest

from certmq.access_keys import AccessKeyNotFound, AccessKeyStore
from certmq.auth.credentials import check_signature
from certmq.instance import CREDENTIALS_FILE, InitResult, load_instance


def password(secret: str, client_id: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), client_id.encode(), hashlib.sha1).digest()).decode()


def test_the_first_pair_is_the_one_init_made(instance_dir: InitResult) -> None:
    store = AccessKeyStore(instance_dir.data_dir, load_instance(instance_dir.data_dir).instance_key)
    assert [key.id for key in store.list()] == [instance_dir.access_key_id]
    assert dict(store.secrets) == {instance_dir.access_key_id: instance_dir.access_key_secret}


async def test_create_list_delete(instance_dir: InitResult) -> None:
    instance = load_instance(instance_dir.data_dir)
    store = AccessKeyStore.for_instance(instance)
    secrets = store.secrets
    created = await store.create()
    assert created.id.startswith("LTAI") and len(created.secret) == 30
    assert [key.id for key in store.list()] == [instance_dir.access_key_id, created.id]
    assert all(not hasattr(key, "secret") for key in store.list())
    # The mapping handed out before the change sees it: no restart, no re-reading.
    assert secrets[created.id] == created.secret

    credentials_file = instance_dir.data_dir / CREDENTIALS_FILE
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    text = credentials_file.read_text()
    assert created.secret not in text, "secrets are sealed at rest"
    credentials = json.loads(text)
    assert credentials["admin_token"] == instance_dir.admin_token
    # A restart finds the new pair.
    assert load_instance(instance_dir.data_dir).access_keys[created.id] == created.secret

    await store.delete(instance_dir.access_key_id)
    assert instance_dir.access_key_id not in secrets
    assert [key.id for key in AccessKeyStore.for_instance(instance).list()] == [created.id]
    with pytest.raises(AccessKeyNotFound, match="LTAIgone"):
        await store.delete("LTAIgone")


async def test_the_signature_check_uses_the_live_pairs(instance_dir: InitResult) -> None:
    store = AccessKeyStore.for_instance(load_instance(instance_dir.data_dir))
    created = await store.create()
    client_id = "GID_Test@@@0001"
    username = f"Signature|{created.id}|mqtt-test-1"
    good = password(created.secret, client_id).encode()
    assert check_signature(username, good, client_id, "mqtt-test-1", store.secrets).allowed
    await store.delete(created.id)
    assert not check_signature(username, good, client_id, "mqtt-test-1", store.secrets).allowed
