"""Fixtures of the RPC API tests: certmq's HTTP application on a real registry in a thread of its
own (see live_api), called with Alibaba Cloud's official SDK and with hand-signed requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.conftest import Pki, pem
from certmq.api.rpc import RpcSettings

from .live_api import LiveApi


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """One instance for the whole session, default settings. Tests keep apart by registering
    their own CAs."""
    # No rate limit: the tests make hundreds of calls a second (test_sdk tests the limit).
    running = LiveApi(tmp_path_factory.mktemp("rpc"), rpc_settings=RpcSettings(rate_limit=0)).start()
    yield running
    running.stop()


class Fleet:
    """A CA registered on ``live`` and devices of it, registered as a first connection would."""

    def __init__(self, live: LiveApi, name: str) -> None:
        self.live = live
        self.authority = Pki.create(name)
        code = live.run(live.registry.issue_registration_code()).code
        record = live.run(
            live.registry.register_ca(name, self.authority.ca_pem, self.authority.verification_pem(code))
        )
        self.sn = record.sn

    def device(self, cn: str) -> tuple[str, str]:
        """Register a new device certificate; its DeviceSn and PEM."""
        certificate = self.authority.device(cn)
        record = self.live.run(self.live.registry.register_device(self.sn, certificate))
        return record.device_sn, pem(certificate)


@pytest.fixture
def fleet(live: LiveApi, request: pytest.FixtureRequest) -> Fleet:
    return Fleet(live, f"fleet {request.node.name}"[:60])
