"""A session ends when the certificate that let it in expires: at its notAfter, or its CA's when
that comes first. MQTT 5 clients are told why (DISCONNECT 0x87 with a reason string), no Will is
published, and the decision log says so. A TLS session resumed after notAfter is refused."""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path

import pytest
from odd_certificates import Shape, issue, issue_ca
from openssl_pki import make_device
from test_decision_procedure import device_sn_of
from test_revocation import connect_over_tls, connected_device_with_will, tls12_context, watcher

from conftest import Instance
from paho_client import V5, V311

NOT_AUTHORIZED = 0x87
# A correctness bound, not a speed one: the session is gone within this long after notAfter
# (the broker cuts it within milliseconds; the rest is margin for a loaded machine).
CUT_WITHIN = 2.5


def seconds_from_now(seconds: int) -> datetime.datetime:
    """A notAfter ``seconds`` ahead, in whole seconds as X.509 writes it."""
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)).replace(microsecond=0)


def wait_until(moment: datetime.datetime) -> None:
    time.sleep(max(0.0, moment.timestamp() - time.time()))


@pytest.mark.parametrize(
    ("version", "expiring"),
    [(V5, "certificate"), (V311, "certificate"), (V5, "ca")],
    ids=["5.0-device-certificate", "3.1.1-device-certificate", "5.0-ca-certificate"],
)
def test_a_session_is_cut_when_its_certificate_expires_without_its_will(
    mutual: Instance, tmp_path: Path, version: int, expiring: str
) -> None:
    assert mutual.fleet_ca is not None
    topic = f"wills/{uuid.uuid4().hex[:8]}"
    observer = watcher(mutual, make_device(tmp_path / "w", mutual.fleet_ca, "watcher"), topic)
    # The notAfter leaves time for what comes before the connection, and little more: the test
    # waits for it. Registering a CA takes two runs of the CLI.
    if expiring == "ca":
        # The CA expires first: its notAfter ends its devices' sessions, whatever their own says.
        not_after = seconds_from_now(9)
        ca = issue_ca(tmp_path / "ca", "short-lived-ca", not_after=not_after)
        ca_sn = mutual.register_ca(ca, f"short-{uuid.uuid4().hex[:6]}")
        device = issue(tmp_path, ca, f"expiring-{uuid.uuid4().hex[:8]}")
        reason = "ca-expired"
    else:
        not_after = seconds_from_now(4)
        device = issue(
            tmp_path, mutual.fleet_ca, f"expiring-{uuid.uuid4().hex[:8]}", Shape(not_after=not_after)
        )
        ca_sn = mutual.fleet_sn
        reason = "certificate-expired"
    client = connected_device_with_will(mutual, device, topic, version)
    assert time.time() < not_after.timestamp(), "the machine is too slow for this test's timing"

    client.wait_disconnected(not_after.timestamp() - time.time() + CUT_WITHIN)
    cut_at = time.time()
    # Cut after notAfter (which is still a valid second), and promptly.
    assert not_after.timestamp() <= cut_at <= not_after.timestamp() + CUT_WITHIN
    if version == V5:
        assert client.disconnect_reason is not None and client.disconnect_reason.value == NOT_AUTHORIZED
        assert "expired" in str(getattr(client.disconnect_properties, "ReasonString", ""))
    time.sleep(0.5)
    assert observer.drain() == [], "the Will of a session cut at expiry was published"

    device_sn = device_sn_of(mutual, device)
    rows = mutual.cli_json("decisions", "--device", device_sn, "--reason", reason)
    assert len(rows) == 1, rows
    assert (rows[0]["result"], rows[0]["step"], rows[0]["ca_sn"]) == ("deny", 5, ca_sn)
    assert "disconnected" in rows[0]["detail"]
    # The CONNECT that let it in is there too, before.
    assert [row["reason"] for row in mutual.decisions(device_sn=device_sn)] == [reason, "new-device"]


def test_a_tls_session_resumed_after_not_after_is_refused(mutual: Instance, tmp_path: Path) -> None:
    assert mutual.fleet_ca is not None
    not_after = seconds_from_now(4)
    device = issue(tmp_path, mutual.fleet_ca, f"resumer-{uuid.uuid4().hex[:8]}", Shape(not_after=not_after))
    context = tls12_context(mutual, device)
    code, session = connect_over_tls(mutual, context)
    assert code == 0 and session is not None

    wait_until(not_after + datetime.timedelta(seconds=1.2))
    # The resumed handshake checks nothing (the certificate is the session's): CONNECT's decision does.
    assert connect_over_tls(mutual, context, session)[0] == 0x05
    decision = mutual.decisions(device_sn=device_sn_of(mutual, device))[0]
    assert (decision["result"], decision["step"], decision["reason"]) == ("deny", 5, "certificate-expired")
