"""Who each listener lets in, in each auth mode: the one table behind which listeners open, which
ask for a device certificate, which live connections a mode switch keeps (the rule behind
`--disconnect-nonconforming` and the console's count of the sessions it would cut), and the line
that the start-up log, the console and `certmq mode set` print."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from certmq.auth.admission import Admission, ListenerPolicy
from certmq.auth.identity import ANONYMOUS as NOBODY
from certmq.auth.identity import Identity
from certmq.auth.mode import AuthMode, AuthModeName
from certmq.config import Config

CERTIFICATE = Identity(ca_sn="77", device_sn="0a1b", cn="sensor-1")
ACCESS_KEY = Identity(access_key_id="LTAIxxxx")
DEFAULTS = ListenerPolicy()
PLAIN_OPEN = ListenerPolicy(tcp_in_mutual_mode=True, ws_in_mutual_mode=True)
WSS_CERTIFICATES = ListenerPolicy(wss_in_mutual_mode="certificates")
ANONYMOUS = ListenerPolicy(anonymous=True)

CERTIFICATES, CREDENTIALS, CLOSED = Admission.CERTIFICATES, Admission.CREDENTIALS, Admission.CLOSED


@pytest.mark.parametrize(
    ("policy", "mode", "expected"),
    [
        (
            DEFAULTS,
            "one-way",
            {"tcp": CREDENTIALS, "tls": CREDENTIALS, "ws": CREDENTIALS, "wss": CREDENTIALS},
        ),
        # Credentials sent in clear can be replayed: the plain listeners close in mutual mode.
        (DEFAULTS, "mutual", {"tcp": CLOSED, "tls": CERTIFICATES, "ws": CLOSED, "wss": CREDENTIALS}),
        (
            PLAIN_OPEN,
            "mutual",
            {"tcp": CREDENTIALS, "tls": CERTIFICATES, "ws": CREDENTIALS, "wss": CREDENTIALS},
        ),
        (WSS_CERTIFICATES, "mutual", {"tcp": CLOSED, "tls": CERTIFICATES, "ws": CLOSED, "wss": CERTIFICATES}),
        (
            WSS_CERTIFICATES,
            "one-way",
            {"tcp": CREDENTIALS, "tls": CREDENTIALS, "ws": CREDENTIALS, "wss": CREDENTIALS},
        ),
        (
            ListenerPolicy(configured=frozenset({"tls", "wss"})),
            "one-way",
            {"tcp": Admission.DISABLED, "tls": CREDENTIALS, "ws": Admission.DISABLED, "wss": CREDENTIALS},
        ),
    ],
)
def test_what_each_listener_asks_in_each_mode(
    policy: ListenerPolicy, mode: str, expected: dict[str, Admission]
) -> None:
    # Its table built again while the test runs, not only when this module was imported.
    policy = dataclasses.replace(policy)
    assert {listener: policy.admission(listener, mode) for listener in expected} == expected
    for listener, admission in expected.items():
        assert policy.is_open(listener, mode) is (admission in (CERTIFICATES, CREDENTIALS))
        assert policy.asks_for_certificate(listener, mode) is (admission is CERTIFICATES)


@pytest.mark.parametrize(
    ("policy", "listener", "identity", "mode", "kept"),
    [
        (DEFAULTS, "tls", CERTIFICATE, "mutual", True),
        (ANONYMOUS, "tls", ACCESS_KEY, "mutual", False),  # credentials are no device certificate
        (ANONYMOUS, "tls", NOBODY, "mutual", False),
        (DEFAULTS, "tcp", ACCESS_KEY, "mutual", False),  # plain TCP closes in mutual mode...
        (PLAIN_OPEN, "tcp", ACCESS_KEY, "mutual", True),  # ...unless configured open
        (DEFAULTS, "ws", ACCESS_KEY, "mutual", False),  # so does plain WebSocket...
        (PLAIN_OPEN, "ws", ACCESS_KEY, "mutual", True),  # ...unless configured open
        (DEFAULTS, "wss", ACCESS_KEY, "mutual", True),  # secure WebSocket keeps credential clients...
        (WSS_CERTIFICATES, "wss", ACCESS_KEY, "mutual", False),  # ...unless it asks for certificates
        (WSS_CERTIFICATES, "wss", CERTIFICATE, "mutual", True),
        (DEFAULTS, "tls", ACCESS_KEY, "one-way", True),
        (DEFAULTS, "tls", CERTIFICATE, "one-way", False),  # a certificate alone is not enough
        (ANONYMOUS, "tls", CERTIFICATE, "one-way", True),  # unless anonymous access is on
        (DEFAULTS, "tcp", NOBODY, "one-way", False),
    ],
)
def test_a_connection_conforms_to_a_mode(
    policy: ListenerPolicy, listener: str, identity: Identity, mode: str, kept: bool
) -> None:
    policy = dataclasses.replace(policy)
    assert policy.conforms(listener, identity, mode) is kept


def test_the_description_names_every_listener_and_who_may_use_it() -> None:
    assert DEFAULTS.describe("mutual") == (
        "tls: devices with certificates of registered CAs; wss: clients with Signature credentials; tcp, ws: closed"
    )
    assert DEFAULTS.describe("one-way") == "tcp, tls, ws, wss: clients with Signature credentials"
    assert WSS_CERTIFICATES.describe("mutual") == (
        "tls, wss: devices with certificates of registered CAs; tcp, ws: closed"
    )
    assert ANONYMOUS.describe("one-way") == (
        "tcp, tls, ws, wss: clients with Signature credentials or none (anonymous access is on)"
    )
    assert ListenerPolicy(configured=frozenset({"tls"})).describe("mutual") == (
        "tls: devices with certificates of registered CAs; tcp, ws, wss: disabled"
    )


def test_the_policy_comes_from_the_listener_settings() -> None:
    config = Config()
    config.listeners.ws = ""
    config.listeners.tcp_in_mutual_mode = True
    config.listeners.ws_in_mutual_mode = True
    config.listeners.wss_in_mutual_mode = "certificates"
    config.auth.anonymous = True
    policy = ListenerPolicy.from_config(config)
    assert policy == ListenerPolicy(
        tcp_in_mutual_mode=True,
        ws_in_mutual_mode=True,
        wss_in_mutual_mode="certificates",
        anonymous=True,
        configured=frozenset({"tcp", "tls", "wss"}),
    )
    assert policy.admission("ws", "one-way") is Admission.DISABLED


def test_every_mode_has_its_table_and_the_names_the_api_accepts_are_the_modes() -> None:
    """The API and the console validate mode names with ``AuthModeName``: it names exactly the
    members of ``AuthMode``, each of which has its row in the admission table."""
    assert set(typing.get_args(AuthModeName)) == {mode.value for mode in AuthMode}
    assert set(DEFAULTS.table) == set(AuthMode)


def test_a_listener_or_mode_the_table_does_not_know_takes_credentials() -> None:
    assert DEFAULTS.admission("quic", "mutual") is CREDENTIALS
    assert DEFAULTS.admission("tls", "some-future-mode") is CREDENTIALS
