"""certmq's HTTP application on a real registry, served by uvicorn from an event loop in a
thread of its own, so that synchronous clients (Alibaba Cloud's SDK, schemathesis, httpx) call
it over loopback as they would a remote broker, and tests can still reach into the registry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi.models import Config

from api.conftest import StandInBroker
from certmq.access_keys import AccessKeyStore
from certmq.api.rpc import RpcSettings
from certmq.http_application import create_app
from certmq.instance import init_instance, load_instance
from certmq.registry import RegistryService, open_registry
from certmq.web.listener import HttpListener

from .signing import query_string, sign_acs3, sign_rpc

T = TypeVar("T")

# The SDK's signature_algorithm for each scheme: unset is its default, ACS3-HMAC-SHA256; "v2" is
# the older HMAC-SHA1 RPC signature. Both are the SDK's public configuration, what a user sets.
SCHEMES: dict[str, str | None] = {
    "ACS3-HMAC-SHA256": None,
    "HMAC-SHA1": "v2",
    "ACS3-HMAC-SM3": "ACS3-HMAC-SM3",
}


def sdk_client(endpoint: str, access_key_id: str, secret: str, scheme: str = "ACS3-HMAC-SHA256") -> Client:
    """Alibaba Cloud's official onsmqtt 2020-04-20 client, pointed at ``endpoint`` (host:port)."""
    return Client(
        Config(
            access_key_id=access_key_id,
            access_key_secret=secret,
            endpoint=endpoint,
            protocol="http",
            region_id="cn-hangzhou",
            signature_algorithm=SCHEMES[scheme],
            connect_timeout=5000,
            read_timeout=20000,
        )
    )


class LiveApi:
    """One instance's HTTP application, started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(self, directory: Path, *, rpc_settings: RpcSettings | None = None) -> None:
        self.directory = directory
        self.rpc_settings = rpc_settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="certmq-live-api", daemon=True)
        init = init_instance(directory / "data", "mqtt-rpc-test")
        assert init is not None
        self.instance = load_instance(init.data_dir)
        self.instance_id = self.instance.id
        self.admin_token = self.instance.admin_token
        self.access_key_id = init.access_key_id
        self.access_key_secret = init.access_key_secret
        self.access_keys = AccessKeyStore.for_instance(self.instance)
        self.broker = StandInBroker(self.instance.server_cert_file)
        self.store = open_registry(directory / "registry.db")
        self.registry = RegistryService(self.store, instance_id=self.instance.id)
        self.listener: HttpListener | None = None
        self.http = httpx.Client(timeout=10)

    def start(self) -> LiveApi:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        await self.registry.open()
        app = create_app(
            registry=self.registry,
            control=self.broker,
            instance_id=self.instance.id,
            admin_token=self.instance.admin_token,
            access_keys_manager=self.access_keys,
            rpc_settings=self.rpc_settings,
        )
        self.listener = HttpListener(app, "127.0.0.1", 0)
        await self.listener.start()

    def stop(self) -> None:
        async def stop() -> None:
            if self.listener is not None:
                await self.listener.stop()
            await self.registry.close()

        self.http.close()
        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.store.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the application's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.port

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def sdk(self, scheme: str = "ACS3-HMAC-SHA256", *, access_key_id: str = "", secret: str = "") -> Client:
        return sdk_client(
            self.endpoint, access_key_id or self.access_key_id, secret or self.access_key_secret, scheme
        )

    def rest(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10
        )

    # --- requests the SDK would not send ---------------------------------------------------------

    def rpc(
        self,
        action: str,
        parameters: dict[str, str],
        *,
        scheme: str = "HMAC-SHA1",
        method: str = "GET",
        form: dict[str, str] | None = None,
        **signing: Any,
    ) -> httpx.Response:
        """Send ``action`` with ``parameters`` (``form``: in a form body), signed by this test's
        own signer with the instance's AccessKey (``signing`` overrides its defaults)."""
        access_key_id = signing.pop("access_key_id", self.access_key_id)
        secret = signing.pop("secret", self.access_key_secret)
        body = query_string(form).encode() if form else b""
        headers: dict[str, str] = {}
        if scheme == "HMAC-SHA1":
            query = sign_rpc(
                method, {"Action": action, **parameters}, access_key_id, secret, body=form, **signing
            )
        else:
            query = dict(parameters)
            headers = sign_acs3(
                method,
                self.endpoint,
                query,
                access_key_id,
                secret,
                action=action,
                body=body,
                content_type="application/x-www-form-urlencoded" if form else None,
                **signing,
            )
        if form:
            headers["content-type"] = "application/x-www-form-urlencoded"
        target = f"{self.url}/?{query_string(query)}" if query else f"{self.url}/"
        return self.http.request(method, target, headers=headers, content=body)
