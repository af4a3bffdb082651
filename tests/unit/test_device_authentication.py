"""The decision procedure and the instance authenticator on certificates made with certmq.pki,
against the registry's real in-memory index."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from certmq import pki
from certmq.auth.admission import ListenerPolicy
from certmq.auth.authenticator import InstanceAuthenticator, SerialCollisionError
from certmq.auth.connect import AuthOutcome, ConnectAttempt
from certmq.auth.credentials import signature_password, signature_username
from certmq.auth.decision import decide_device
from certmq.mqtt.reason_codes import ReasonCode
from certmq.registry.index import CaEntry, TrustIndex, subject_key_identifier_of


def make_fleet() -> tuple[TrustIndex, pki.CertifiedKey]:
    key = pki.generate_key("ec")
    ca = pki.CertifiedKey(pki.create_ca("unit CA", key), key)
    index = TrustIndex()
    certificate = ca.certificate
    index.put_ca(
        CaEntry(
            sn=pki.serial_hex(certificate),
            certificate=certificate,
            active=True,
            subject_der=certificate.subject.public_bytes(),
            subject_key_identifier=subject_key_identifier_of(certificate),
            fingerprint=bytes.fromhex(pki.fingerprint_sha256(certificate)),
        )
    )
    return index, ca


def device_authenticator(**options: Any) -> InstanceAuthenticator:
    """The authenticator of an instance in mutual mode, without anonymous access."""
    return InstanceAuthenticator(
        instance_id="mqtt-unit", access_keys={}, auth_mode=lambda: "mutual", anonymous=False, **options
    )


def device_der(ca: pki.CertifiedKey, name: str) -> bytes:
    certificate = pki.issue_device_certificate(
        ca.certificate, ca.key, name, pki.generate_key("ec").public_key()
    )
    return certificate.public_bytes(Encoding.DER)


def test_a_registration_that_cannot_start_is_refused_and_recorded() -> None:
    index, ca = make_fleet()
    recorded: list[dict[str, Any]] = []

    def broken_registrar(ca_sn: str, certificate: x509.Certificate, **known: Any) -> asyncio.Future[None]:
        raise RuntimeError("the registry service is closed")

    authenticator = device_authenticator(
        index=index,
        register_device=broken_registrar,
        audit=lambda **fields: recorded.append(fields),
    )
    attempt = ConnectAttempt("tls", "127.0.0.1:1", "dev-2", None, None, 5, device_der(ca, "dev-2"))
    outcome = authenticator.authenticate(attempt)
    assert isinstance(outcome, AuthOutcome) and not outcome.allowed
    assert [(r["result"], r["reason"]) for r in recorded] == [("deny", "registration-failed")]
    assert "closed" in recorded[0]["detail"]


class SlowRegistry:
    """A registrar whose registrations end when the test says."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, asyncio.Future[None]]] = []
        self.asked: list[tuple[str, bytes, dict[str, Any]]] = []
        self.failures: list[tuple[str, str, str]] = []

    def register(self, ca_sn: str, certificate: x509.Certificate, **known: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((ca_sn, future))
        self.asked.append((ca_sn, certificate.public_bytes(Encoding.DER), known))
        return future

    def failed(self, ca_sn: str, device_sn: str, why: str) -> None:
        self.failures.append((ca_sn, device_sn, why))


async def test_a_first_time_device_is_let_in_at_once_and_cut_off_if_its_registration_fails() -> None:
    index, ca = make_fleet()
    registry = SlowRegistry()
    recorded: list[dict[str, Any]] = []
    authenticator = device_authenticator(
        index=index,
        register_device=registry.register,
        on_registration_failure=registry.failed,
        audit=lambda **fields: recorded.append(fields),
    )
    outcomes = []
    ders = {name: device_der(ca, name) for name in ("kept", "lost", "clashed", "cancelled")}
    for name, der in ders.items():
        attempt = ConnectAttempt("tls", "127.0.0.1:1", name, None, None, 5, der)
        outcome = authenticator.authenticate(attempt)
        assert isinstance(outcome, AuthOutcome), "no waiting for the registry"
        outcomes.append(outcome)
    assert all(outcome.allowed for outcome in outcomes) and len(registry.pending) == 4
    ca_sn = pki.serial_hex(ca.certificate)
    # The registrar is given what the decision already worked out.
    assert registry.asked == [
        (ca_sn, der, {"der": der, "name": name, "sha256": hashlib.sha256(der).digest()})
        for name, der in ders.items()
    ]
    assert [(r["client_id"], r["reason"]) for r in recorded] == [(name, "new-device") for name in ders]
    recorded.clear()
    (_, kept), (_, lost), (_, clashed), (_, cancelled) = registry.pending
    kept.set_result(None)
    lost.set_exception(RuntimeError("disk full"))
    clashed.set_exception(SerialCollisionError("another node registered another certificate"))
    cancelled.cancel()
    await asyncio.sleep(0)
    assert [(r["client_id"], r["result"], r["step"], r["reason"], r["detail"]) for r in recorded] == [
        ("lost", "deny", 6, "registration-failed", "the device could not be registered: disk full"),
        ("clashed", "deny", 2, "serial-collision", "another certificate registered this serial first"),
        (
            "cancelled",
            "deny",
            6,
            "registration-failed",
            "the device could not be registered: the registration was cancelled",
        ),
    ]
    cut = [(ca, device_sn, why.split(":")[0]) for ca, device_sn, why in registry.failures]
    assert cut == [
        (ca_sn, outcomes[1].identity.device_sn, "registration-failed"),
        (ca_sn, outcomes[2].identity.device_sn, "serial-collision"),
        (ca_sn, outcomes[3].identity.device_sn, "registration-failed"),
    ]


async def test_only_a_new_device_that_is_allowed_is_registered() -> None:
    index, ca = make_fleet()
    _, stranger_ca = make_fleet()
    registry = SlowRegistry()
    authenticator = device_authenticator(index=index, register_device=registry.register)
    registered = device_der(ca, "registered")
    first = decide_device(registered, index)
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(registered).digest(), True)
    for der in (registered, device_der(stranger_ca, "stranger")):
        authenticator.authenticate(ConnectAttempt("tls", "127.0.0.1:1", "c-1", None, None, 5, der))
    assert registry.asked == []


def test_a_registered_device_is_decided_at_once_and_recorded() -> None:
    index, ca = make_fleet()
    der = device_der(ca, "dev-3")
    first = decide_device(der, index)
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(der).digest(), True)
    recorded: list[dict[str, Any]] = []
    authenticator = device_authenticator(
        index=index,
        audit=lambda **fields: recorded.append(fields),
    )
    attempt = ConnectAttempt("tls", "127.0.0.1:1", "dev-3", None, None, 4, der)
    outcome = authenticator.authenticate(attempt)
    assert isinstance(outcome, AuthOutcome), "no registration to wait for: the outcome comes at once"
    assert outcome.allowed
    assert first.certificate is not None
    assert outcome.valid_until == first.certificate.not_valid_after_utc
    assert outcome.identity.fields() == {
        "cert.cn": "dev-3",
        "cert.sn": first.device_sn,
        "cert.ca_sn": first.ca_sn,
        "cert.not_after": first.certificate.not_valid_after_utc.isoformat(),
    }
    assert recorded == [
        {
            "listener": "tls",
            "peer": "127.0.0.1:1",
            "client_id": "dev-3",
            "ca_sn": first.ca_sn,
            "device_sn": first.device_sn,
            "cn": "dev-3",
            "step": 6,
            "result": "allow",
            "reason": "registered-device",
            "detail": recorded[0]["detail"],
            "identity_known": True,
        }
    ]


async def test_a_first_connection_starts_its_registration_before_the_client_id_policy() -> None:
    index, ca = make_fleet()
    registry = SlowRegistry()
    authenticator = device_authenticator(
        index=index,
        register_device=registry.register,
        bind_client_id="cn",
    )
    attempt = ConnectAttempt("tls", "127.0.0.1:1", "someone-else", None, None, 4, device_der(ca, "dev-4"))
    outcome = authenticator.authenticate(attempt)
    assert isinstance(outcome, AuthOutcome)
    assert len(registry.pending) == 1
    assert (outcome.allowed, outcome.reason_code) == (False, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)


def test_plain_listeners_record_credential_decisions() -> None:
    recorded: list[dict[str, Any]] = []
    authenticator = InstanceAuthenticator(
        instance_id="mqtt-unit",
        access_keys={},
        auth_mode=lambda: "mutual",
        anonymous=True,
        audit=lambda **fields: recorded.append(fields),
        policy=ListenerPolicy(tcp_in_mutual_mode=True, anonymous=True),
    )
    outcome = authenticator.authenticate(ConnectAttempt("tcp", "127.0.0.1:2", "c-1", None, None, 4))
    assert isinstance(outcome, AuthOutcome) and outcome.allowed
    assert recorded == [
        {
            "listener": "tcp",
            "peer": "127.0.0.1:2",
            "client_id": "c-1",
            "ca_sn": "",
            "device_sn": "",
            "cn": "",
            "step": 0,
            "result": "allow",
            "reason": "anonymous",
            "detail": "anonymous access is on",
            "identity_known": False,
        }
    ]
    strict = InstanceAuthenticator(
        instance_id="mqtt-unit", access_keys={}, auth_mode=lambda: "one-way", anonymous=False
    )
    refused = strict.authenticate(ConnectAttempt("tcp", "127.0.0.1:2", "c-1", None, None, 4))
    assert isinstance(refused, AuthOutcome)
    assert (refused.allowed, refused.reason_code) == (False, ReasonCode.NOT_AUTHORIZED)


@pytest.mark.parametrize("listener", ["tcp", "ws"])
def test_a_listener_the_mode_closes_lets_no_one_in(listener: str) -> None:
    """A connection accepted before the switch to mutual mode closed its listener sends CONNECT
    after it: refused, valid credentials or not, and recorded."""
    recorded: list[dict[str, Any]] = []
    mode = "one-way"
    authenticator = InstanceAuthenticator(
        instance_id="mqtt-unit",
        access_keys={},
        auth_mode=lambda: mode,
        anonymous=True,
        audit=lambda **fields: recorded.append(fields),
    )
    attempt = ConnectAttempt(listener, "127.0.0.1:2", "c-1", None, None, 4)
    allowed = authenticator.authenticate(attempt)
    assert isinstance(allowed, AuthOutcome) and allowed.allowed
    mode = "mutual"
    refused = authenticator.authenticate(attempt)
    assert isinstance(refused, AuthOutcome)
    assert (refused.allowed, refused.reason_code) == (False, ReasonCode.NOT_AUTHORIZED)
    assert refused.reason == f"the {listener} listener is closed in mutual mode"
    assert [(row["result"], row["reason"]) for row in recorded] == [
        ("allow", "anonymous"),
        ("deny", "listener-closed"),
    ]


def reissued_der(
    ca: pki.CertifiedKey,
    name: str,
    signing_key: Any,
    extensions: list[x509.ExtensionType] | None = None,
) -> bytes:
    """A certificate like the CA's device ``name``: its subject, issuer, key, serial and validity,
    with ``extensions`` (by default the device's own, as they are), signed by ``signing_key``."""
    genuine = x509.load_der_x509_certificate(device_der(ca, name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(genuine.issuer)
        .public_key(genuine.public_key())
        .serial_number(genuine.serial_number)
        .not_valid_before(genuine.not_valid_before_utc)
        .not_valid_after(genuine.not_valid_after_utc)
    )
    if extensions is None:
        for extension in genuine.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
    else:
        for value in extensions:
            builder = builder.add_extension(value, critical=False)
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(Encoding.DER)


def forged_der(ca: pki.CertifiedKey, name: str) -> bytes:
    """A certificate just like the CA's devices' but signed by another key."""
    return reissued_der(ca, name, pki.generate_key("ec"))


def test_the_signature_check_is_left_to_a_handshake_that_verified_it_with_that_ca() -> None:
    index, ca = make_fleet()
    ca_fingerprint = bytes.fromhex(pki.fingerprint_sha256(ca.certificate))
    asked: list[bool] = []

    def verified_by(fingerprint: bytes | None) -> Any:
        def verified_issuer() -> bytes | None:
            asked.append(True)
            return fingerprint

        return verified_issuer

    # The forgery shows that the check really is skipped, which a real handshake would never allow.
    forged = forged_der(ca, "forged")
    assert decide_device(forged, index).reason == "bad-signature"
    trusted = decide_device(forged, index, verified_issuer=verified_by(ca_fingerprint))
    assert (trusted.allowed, trusted.reason) == (True, "new-device")
    # A resumed session (no issuer) or another certificate named: checked here.
    assert decide_device(forged, index, verified_issuer=verified_by(None)).reason == "bad-signature"
    other = hashlib.sha256(b"another certificate").digest()
    assert decide_device(forged, index, verified_issuer=verified_by(other)).reason == "bad-signature"
    assert len(asked) == 3
    # Registered devices need no signature check at all: the TLS layer is not even asked.
    genuine = device_der(ca, "genuine")
    first = decide_device(genuine, index)
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(genuine).digest(), True)
    asked.clear()
    assert (
        decide_device(genuine, index, verified_issuer=verified_by(ca_fingerprint)).reason
        == "registered-device"
    )
    assert asked == []


def server_only_der(ca: pki.CertifiedKey, name: str) -> bytes:
    """A certificate of the CA's whose extended key usage is serverAuth only."""
    server_auth = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    return reissued_der(ca, name, ca.key, [server_auth])


def test_the_ca_that_verified_the_certificate_in_the_handshake_is_its_issuer() -> None:
    """The CA whose key verified the certificate in the handshake, when registered, is taken as
    its issuer without comparing names; the key usages the handshake checked are not checked
    again. Any other issuer named, or none (a resumed session), and the names and usages are
    read from the certificate."""
    index, ca = make_fleet()
    ca_fingerprint = bytes.fromhex(pki.fingerprint_sha256(ca.certificate))
    looked_up: list[bytes] = []
    by_names = index.issuer_of

    def issuer_of(certificate: x509.Certificate) -> Any:
        looked_up.append(certificate.public_bytes(Encoding.DER))
        return by_names(certificate)

    index.issuer_of = issuer_of  # type: ignore[method-assign]

    verified = device_der(ca, "verified")
    decision = decide_device(verified, index, verified_issuer=lambda: ca_fingerprint)
    assert (decision.allowed, decision.reason, decision.ca_sn) == (True, "new-device", index.cas()[0].sn)
    assert looked_up == []

    resumed = device_der(ca, "resumed")
    assert decide_device(resumed, index, verified_issuer=lambda: None).reason == "new-device"
    unknown = device_der(ca, "unknown")
    other = hashlib.sha256(b"a certificate that is not registered").digest()
    assert decide_device(unknown, index, verified_issuer=lambda: other).reason == "new-device"
    assert looked_up == [resumed, unknown]

    # The usages: OpenSSL refuses this one in a handshake (the sslclient purpose), which the
    # decision takes on trust when the handshake verified it; checked here otherwise.
    assert decide_device(server_only_der(ca, "resumed-server"), index).reason == "wrong-key-usage"
    trusted = decide_device(server_only_der(ca, "server"), index, verified_issuer=lambda: ca_fingerprint)
    assert trusted.reason == "new-device"


def test_every_route_says_whether_the_client_proved_a_known_identity() -> None:
    """What the audit log folds (docs/registry.md, "Retention and folding"): a refusal is of a
    known identity only when the client proved one: a certificate a registered CA issued, or a
    signature of a known AccessKey. A route missing here records without saying, and fails."""
    index, ca = make_fleet()
    _, stranger_ca = make_fleet()
    inactive = device_der(ca, "inactive")
    first = decide_device(inactive, index)
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(inactive).digest(), False)
    registered = device_der(ca, "registered")
    first = decide_device(registered, index)
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(registered).digest(), True)
    keys = {"AK1": "secret-1"}
    good = (signature_username("AK1", "mqtt-unit"), signature_password("secret-1", "c-1").encode())
    wrong = (signature_username("AK1", "mqtt-unit"), b"not the signature")
    unknown = (signature_username("AK-none", "mqtt-unit"), b"x")

    def recorded(
        mode: str,
        listener: str,
        der: bytes | None,
        credentials: Any = (None, None),
        client_id: str = "c-1",
        anonymous: bool = False,
        trust: TrustIndex | None = index,
        **options: Any,
    ) -> tuple[str, str, bool, str, int, str]:
        """What the audit log records (result, reason, whether an identity was proved, detail), and
        what the client is told (CONNACK reason code, reason string)."""
        seen: list[dict[str, Any]] = []
        authenticator = InstanceAuthenticator(
            instance_id="mqtt-unit",
            access_keys=keys,
            auth_mode=lambda: mode,
            anonymous=anonymous,
            index=trust,
            audit=lambda **fields: seen.append(fields),
            **options,
        )
        outcome = authenticator.authenticate(
            ConnectAttempt(listener, "127.0.0.1:1", client_id, *credentials, 4, der)
        )
        assert isinstance(outcome, AuthOutcome)
        (fields,) = seen
        told = (int(outcome.reason_code), outcome.reason)
        return fields["result"], fields["reason"], fields["identity_known"], fields["detail"], *told

    ok = (0, "")
    refused = int(ReasonCode.NOT_AUTHORIZED)
    bad_password = int(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
    mismatch = "signature does not match"
    required = "username and password are required"
    bound_cn = "client id must equal the certificate CN 'registered'"
    bound_device_id = "the DeviceID of GroupID@@@DeviceID must equal the certificate CN 'registered'"
    no_certificate = "the client presented no certificate"
    routes = {
        "no credentials": (
            recorded("one-way", "tcp", None),
            ("deny", "no-credentials", False, "credentials are required", refused, "credentials are required"),
        ),
        "unknown AccessKey": (
            recorded("one-way", "tcp", None, unknown),
            ("deny", "bad-credentials", False, "unknown AccessKeyId", bad_password, "unknown AccessKeyId"),
        ),
        "known AccessKey, wrong signature": (
            recorded("one-way", "tcp", None, wrong),
            ("deny", "bad-credentials", False, mismatch, bad_password, mismatch),
        ),
        "valid signature": (
            recorded("one-way", "tcp", None, good),
            ("allow", "signature", True, "valid Signature credentials", *ok),
        ),
        "anonymous": (
            recorded("one-way", "tcp", None, anonymous=True),
            ("allow", "anonymous", False, "anonymous access is on", *ok),
        ),
        "a username without password, anonymous access on": (
            recorded("one-way", "tcp", None, (good[0], None), anonymous=True),
            ("deny", "bad-credentials", False, required, bad_password, required),
        ),
        "no certificate": (
            recorded("mutual", "tls", None),
            ("deny", "no-client-certificate", False, no_certificate, refused, f"no-client-certificate: {no_certificate}"),
        ),
        "no trust index": (
            recorded("mutual", "tls", registered, trust=None),
            ("deny", "no-client-certificate", False, no_certificate, refused, f"no-client-certificate: {no_certificate}"),
        ),
        "unreadable certificate": (
            recorded("mutual", "tls", b"garbage")[:3],
            ("deny", "unreadable-certificate", False),
        ),
        "certificate of no registered CA": (
            recorded("mutual", "tls", device_der(stranger_ca, "x"))[:3],
            ("deny", "ca-not-registered", False),
        ),
        "forged certificate naming a registered CA": (
            recorded("mutual", "tls", forged_der(ca, "forged"))[:3],
            ("deny", "bad-signature", False),
        ),
        "inactive device": (
            recorded("mutual", "tls", inactive),
            ("deny", "device-inactive", True, "the device certificate is registered and inactive", refused,
             "device-inactive: the device certificate is registered and inactive"),
        ),
        "registered device": (
            recorded("mutual", "tls", registered),
            ("allow", "registered-device", True, "registered and active", *ok),
        ),
        "registered device, valid credentials too": (
            recorded("mutual", "tls", registered, good),
            ("allow", "registered-device", True, "registered and active", *ok),
        ),
        "client id bound to the CN": (
            recorded("mutual", "tls", registered, client_id="registered", bind_client_id="cn")[:3],
            ("allow", "registered-device", True),
        ),
        "client id not bound to the CN": (
            recorded("mutual", "tls", registered, bind_client_id="cn"),
            ("deny", "client-id-not-bound", True, bound_cn, int(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID), bound_cn),
        ),
        "DeviceID bound to the CN": (
            recorded("mutual", "tls", registered, client_id="GID_x@@@registered", bind_client_id="device-id")[:3],
            ("allow", "registered-device", True),
        ),
        "DeviceID not bound to the CN": (
            recorded("mutual", "tls", registered, client_id="GID_x@@@other", bind_client_id="device-id")[:4],
            ("deny", "client-id-not-bound", True, bound_device_id),
        ),
        "two separators: the DeviceID is all after the first": (
            recorded("mutual", "tls", registered, client_id="GID_x@@@y@@@registered", bind_client_id="device-id")[:4],
            ("deny", "client-id-not-bound", True, bound_device_id),
        ),
        "a listener the policy does not name": (
            recorded("one-way", "quic", None, good)[:2],
            ("allow", "signature"),
        ),
        "no DeviceID": (
            recorded("mutual", "tls", registered, client_id="registered", bind_client_id="device-id")[:4],
            ("deny", "client-id-not-bound", True, bound_device_id),
        ),
        "valid certificate, wrong credentials": (
            recorded("mutual", "tls", registered, wrong),
            ("deny", "bad-credentials", True, mismatch, bad_password, mismatch),
        ),
        "valid certificate, a username without password": (
            recorded("mutual", "tls", registered, (good[0], None))[:4],
            ("deny", "bad-credentials", True, required),
        ),
        "listener closed in this mode": (
            recorded("mutual", "tcp", None, good),
            ("deny", "listener-closed", False, "the tcp listener is closed in mutual mode", refused,
             "the tcp listener is closed in mutual mode"),
        ),
    }  # fmt: skip
    for route, (seen, expected) in routes.items():
        assert seen == expected, route


def test_a_device_with_credentials_too_has_both_identities() -> None:
    index, ca = make_fleet()
    der = device_der(ca, "both")
    authenticator = InstanceAuthenticator(
        instance_id="mqtt-unit", access_keys={"AK1": "secret-1"}, auth_mode=lambda: "mutual", anonymous=False,
        index=index,
    )  # fmt: skip
    username = signature_username("AK1", "mqtt-unit")
    password = signature_password("secret-1", "both").encode()
    outcome = authenticator.authenticate(
        ConnectAttempt("tls", "127.0.0.1:1", "both", username, password, 4, der)
    )
    assert isinstance(outcome, AuthOutcome) and outcome.allowed
    assert outcome.identity.cn == "both" and outcome.identity.access_key_id == "AK1"


def test_a_refusal_after_the_certificate_was_judged_names_it() -> None:
    """Refused for the client id or the credentials, not the certificate: the record still names
    the certificate and the step that let it through, and the authenticator passes on which CA
    the handshake verified it with, so that its signature is not checked again."""
    index, ca = make_fleet()
    der = device_der(ca, "named")
    first = decide_device(der, index)
    index.put_device(first.ca_sn, first.device_sn, hashlib.sha256(der).digest(), True)
    ca_fingerprint = bytes.fromhex(pki.fingerprint_sha256(ca.certificate))
    asked: list[bool] = []

    def verified_issuer() -> bytes:
        asked.append(True)
        return ca_fingerprint

    new = device_der(ca, "new")
    recorded: list[dict[str, Any]] = []
    authenticator = InstanceAuthenticator(
        instance_id="mqtt-unit", access_keys={"AK1": "secret-1"}, auth_mode=lambda: "mutual", anonymous=False,
        index=index, bind_client_id="cn", audit=lambda **fields: recorded.append(fields),
    )  # fmt: skip
    for client_id, credentials, der_sent, reason in [
        ("other", (None, None), der, "client-id-not-bound"),
        ("named", (signature_username("AK1", "mqtt-unit"), b"wrong"), der, "bad-credentials"),
        ("new", (None, None), new, "new-device"),
    ]:
        recorded.clear()
        attempt = ConnectAttempt("tls", "127.0.0.1:1", client_id, *credentials, 4, der_sent, verified_issuer)
        authenticator.authenticate(attempt)
        (row,) = recorded
        expected_sn = pki.serial_hex(x509.load_der_x509_certificate(der_sent))
        assert (row["reason"], row["step"], row["ca_sn"], row["device_sn"], row["cn"]) == (
            reason,
            6,
            first.ca_sn,
            expected_sn,
            client_id if reason == "new-device" else "named",
        )
    assert asked, "asked for the new device, whose signature only the handshake checked"
