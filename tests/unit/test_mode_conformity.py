"""Which live connections an auth mode switch keeps: the rule behind `--disconnect-nonconforming`
and the console's count of the sessions it would cut."""

from __future__ import annotations

import pytest

from certmq.control import conforms

CERTIFICATE = {"cert.cn": "sensor-1", "cert.sn": "0a1b", "cert.ca_sn": "77"}
ACCESS_KEY = {"access_key_id": "LTAIxxxx"}


@pytest.mark.parametrize(
    ("listener", "identity", "mode", "tcp_open", "anonymous", "kept"),
    [
        ("tls", CERTIFICATE, "mutual", False, False, True),
        ("tls", ACCESS_KEY, "mutual", False, True, False),  # credentials are no device certificate
        ("tls", {}, "mutual", False, True, False),
        ("tcp", ACCESS_KEY, "mutual", False, False, False),  # plain TCP closes in mutual mode...
        ("tcp", ACCESS_KEY, "mutual", True, False, True),  # ...unless configured open
        ("ws", ACCESS_KEY, "mutual", False, False, True),  # WebSocket never takes certificates
        ("tls", ACCESS_KEY, "one-way", False, False, True),
        ("tls", CERTIFICATE, "one-way", False, False, False),  # a certificate alone is not enough
        ("tls", CERTIFICATE, "one-way", False, True, True),  # unless anonymous access is on
        ("tcp", {}, "one-way", False, False, False),
    ],
)
def test_a_connection_conforms_to_a_mode(
    listener: str, identity: dict[str, str], mode: str, tcp_open: bool, anonymous: bool, kept: bool
) -> None:
    assert conforms(listener, identity, mode, tcp_in_mutual_mode=tcp_open, anonymous=anonymous) is kept
