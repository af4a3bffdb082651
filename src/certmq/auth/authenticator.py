"""The instance's CONNECT check: device certificates (docs/certificates.md, "The decision
procedure") and Signature credentials (see :mod:`certmq.auth.credentials`).

Where the listener asks for a device certificate (the MQTT over TLS listener in mutual mode,
and secure WebSocket when configured so: :mod:`certmq.auth.admission`) the device certificate
decides (steps 1–6), and credentials, when sent, must be valid too. Everywhere else Signature
credentials are required unless anonymous access is on; a listener the mode closes lets no
one in, even a connection it accepted before it closed. Every outcome is recorded in the audit
log, with the step of the decision procedure that decided it (0 for credential checks).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from cryptography import x509

from certmq.auth.admission import CERTIFICATES, CREDENTIALS, ListenerPolicy
from certmq.auth.apsara_client_id import device_id_of
from certmq.auth.connect import ALLOW, AuthOutcome, ConnectAttempt
from certmq.auth.credentials import check_signature
from certmq.auth.decision import (
    BAD_SIGNATURE,
    SERIAL_COLLISION,
    DeviceDecision,
    TrustIndexView,
    decide_device,
)
from certmq.auth.identity import Identity
from certmq.mqtt.reason_codes import ReasonCode

log = logging.getLogger("certmq.auth")

CREDENTIALS_STEP = 0
REGISTRATION_FAILED = "registration-failed"
LISTENER_CLOSED = "listener-closed"


class DeviceRegistrar(Protocol):
    """Starts registering a device on its first allowed connection (step 6 of the decision
    procedure) without waiting for it: raises at once what is known at once (a serial
    collision), and returns a future that fails if the registration does. ``der``, ``name`` and
    ``sha256`` (the certificate's DER, CN and SHA-256 digest), when given, spare working them out
    again."""

    def __call__(
        self,
        ca_sn: str,
        certificate: x509.Certificate,
        *,
        der: bytes | None = None,
        name: str | None = None,
        sha256: bytes | None = None,
    ) -> asyncio.Future[Any]: ...


# Called when a device let in on its first connection could not be registered after all:
# (CA Sn, device Sn, why). The broker cuts the device's sessions.
RegistrationFailureHandler = Callable[[str, str, str], None]


class SerialCollisionError(Exception):
    """Raised by a registrar when another certificate holds the (CA, serial) pair."""


AuditSink = Callable[..., None]


def proves_identity(decision: DeviceDecision) -> bool:
    """Whether a device decision is about an identity the instance knows: a certificate that a
    registered CA really issued (a forged one names the CA too, and fails its signature). The
    refusals of the others are folded in the audit log (docs/registry.md, "Retention and folding")."""
    return decision.allowed or (bool(decision.ca_sn) and decision.reason != BAD_SIGNATURE)


def _client_id_binding_error(policy: str, client_id: str, cn: str) -> str | None:
    if policy == "cn" and client_id != cn:
        return f"client id must equal the certificate CN {cn!r}"
    if policy == "device-id":
        device_id = device_id_of(client_id)
        if device_id is None or device_id != cn:
            return f"the DeviceID of GroupID@@@DeviceID must equal the certificate CN {cn!r}"
    return None


class InstanceAuthenticator:
    def __init__(
        self,
        *,
        instance_id: str,
        access_keys: Mapping[str, str],
        auth_mode: Callable[[], str],
        anonymous: bool,
        index: TrustIndexView | None = None,
        register_device: DeviceRegistrar | None = None,
        on_registration_failure: RegistrationFailureHandler | None = None,
        audit: AuditSink | None = None,
        bind_client_id: str = "off",
        serial_collision_errors: tuple[type[BaseException], ...] = (SerialCollisionError,),
        policy: ListenerPolicy | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.access_keys = access_keys
        self.auth_mode = auth_mode
        self.anonymous = anonymous
        self.index = index
        self.register_device = register_device
        self.on_registration_failure = on_registration_failure
        self.audit = audit
        self.bind_client_id = bind_client_id
        self.serial_collision_errors = serial_collision_errors
        self.policy = policy or ListenerPolicy(anonymous=anonymous)
        self._admissions = self.policy.table

    def _record(
        self,
        attempt: ConnectAttempt,
        *,
        result: str,
        reason: str,
        detail: str,
        decision: DeviceDecision | None = None,
        identity_known: bool,
    ) -> None:
        """One audit record: the attempt, the certificate's names when a decision read them
        (credential checks read none), the outcome, and whether the client proved an identity
        the instance knows (a certificate of a registered CA, an AccessKey's signature)."""
        if self.audit is None:
            return
        if decision is None:
            ca_sn = device_sn = cn = ""
            step = CREDENTIALS_STEP
        else:
            ca_sn, device_sn, cn, step = decision.ca_sn, decision.device_sn, decision.cn, decision.step
        try:
            self.audit(
                listener=attempt.listener,
                peer=attempt.peer,
                client_id=attempt.client_id,
                ca_sn=ca_sn,
                device_sn=device_sn,
                cn=cn,
                step=step,
                result=result,
                reason=reason,
                detail=detail,
                identity_known=identity_known,
            )
        except Exception:
            log.exception("could not record the decision for %s", attempt.client_id)

    def _record_decision(self, attempt: ConnectAttempt, decision: DeviceDecision) -> None:
        result = "allow" if decision.allowed else "deny"
        self._record(
            attempt,
            result=result,
            reason=decision.reason,
            detail=decision.detail,
            decision=decision,
            identity_known=proves_identity(decision),
        )

    def authenticate(self, attempt: ConnectAttempt) -> AuthOutcome:
        """The outcome at once, but for a device's first connection, which waits for its registration."""
        # The policy's table itself: this runs at every CONNECT.
        admission = self._admissions[self.auth_mode()].get(attempt.listener, CREDENTIALS)
        if admission is CERTIFICATES:
            return self._authenticate_device(attempt)
        if admission is CREDENTIALS:
            return self._authenticate_credentials(attempt, required=not self.anonymous)
        outcome = AuthOutcome(
            False,
            ReasonCode.NOT_AUTHORIZED,
            f"the {attempt.listener} listener is closed in {self.auth_mode()} mode",
        )
        # Nothing was proved before the listener's refusal: folded like any stranger's.
        self._record(
            attempt, result="deny", reason=LISTENER_CLOSED, detail=outcome.reason, identity_known=False
        )
        return outcome

    def _authenticate_credentials(self, attempt: ConnectAttempt, *, required: bool) -> AuthOutcome:
        if attempt.username is None and attempt.password is None:
            if required:
                outcome = AuthOutcome(False, ReasonCode.NOT_AUTHORIZED, "credentials are required")
                self._record(
                    attempt,
                    result="deny",
                    reason="no-credentials",
                    detail=outcome.reason,
                    identity_known=False,
                )
                return outcome
            self._record(
                attempt,
                result="allow",
                reason="anonymous",
                detail="anonymous access is on",
                identity_known=False,
            )
            return ALLOW
        outcome = check_signature(
            attempt.username, attempt.password, attempt.client_id, self.instance_id, self.access_keys
        )
        self._record(
            attempt,
            result="allow" if outcome.allowed else "deny",
            reason="signature" if outcome.allowed else "bad-credentials",
            detail=outcome.reason or "valid Signature credentials",
            # An AccessKeyId travels in the clear in the username: naming a known one proves nothing.
            identity_known=outcome.allowed,
        )
        return outcome

    def _authenticate_device(self, attempt: ConnectAttempt) -> AuthOutcome:
        if self.index is None:
            decision = decide_device(None, _EmptyIndex())
        else:
            decision = decide_device(
                attempt.peer_certificate, self.index, verified_issuer=attempt.verified_issuer
            )
        if decision.allowed and decision.needs_registration and self.register_device is not None:
            decision = self._register_device(attempt, decision)
        return self._conclude_device(attempt, decision)

    def _register_device(self, attempt: ConnectAttempt, decision: DeviceDecision) -> DeviceDecision:
        """A device's first allowed connection: let in at once, registered (step 6 of the decision procedure) in the
        registry's next batch; refused now if the registration cannot even start."""
        assert decision.certificate is not None and self.register_device is not None
        try:
            registration = self.register_device(
                decision.ca_sn,
                decision.certificate,
                der=attempt.peer_certificate,
                name=decision.cn,
                sha256=decision.fingerprint,
            )
        except Exception as error:
            return self._registration_refused(decision, error)
        registration.add_done_callback(functools.partial(self._registration_settled, attempt, decision))
        return decision

    def _registration_refused(self, decision: DeviceDecision, error: BaseException) -> DeviceDecision:
        if isinstance(error, self.serial_collision_errors):
            return replace(
                decision,
                allowed=False,
                step=2,
                reason=SERIAL_COLLISION,
                detail="another certificate registered this serial first",
                needs_registration=False,
            )
        # The CA deleted meanwhile, the database unavailable...: refused, and recorded.
        log.warning("could not register device %s of CA %s: %s", decision.cn, decision.ca_sn, error)
        return replace(
            decision,
            allowed=False,
            reason=REGISTRATION_FAILED,
            detail=f"the device could not be registered: {error}",
            needs_registration=False,
        )

    def _registration_settled(
        self, attempt: ConnectAttempt, decision: DeviceDecision, registration: asyncio.Future[Any]
    ) -> None:
        """A first-time device's registration ended: if it failed, the device is cut off and the
        refusal recorded, as if it had been refused when it connected."""
        if registration.cancelled():
            error: BaseException = RuntimeError("the registration was cancelled")
        elif (failure := registration.exception()) is None:
            return
        else:
            error = failure
        refused = self._registration_refused(decision, error)
        self._record_decision(attempt, refused)
        if self.on_registration_failure is not None:
            self.on_registration_failure(
                decision.ca_sn, decision.device_sn, f"{refused.reason}: {refused.detail}"
            )

    def _conclude_device(self, attempt: ConnectAttempt, decision: DeviceDecision) -> AuthOutcome:
        """The outcome of a device's decision, with the client id policy and any credentials."""
        if not decision.allowed:
            self._record_decision(attempt, decision)
            return AuthOutcome(False, ReasonCode.NOT_AUTHORIZED, f"{decision.reason}: {decision.detail}")
        binding_error = _client_id_binding_error(self.bind_client_id, attempt.client_id, decision.cn)
        if binding_error is not None:
            self._record(
                attempt,
                result="deny",
                reason="client-id-not-bound",
                detail=binding_error,
                decision=decision,
                identity_known=True,
            )
            return AuthOutcome(False, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, binding_error)
        identity = Identity(
            ca_sn=decision.ca_sn,
            device_sn=decision.device_sn,
            cn=decision.cn,
            certificate_not_after=None
            if decision.certificate is None
            else decision.certificate.not_valid_after_utc,
        )
        if attempt.username is not None or attempt.password is not None:
            credentials = check_signature(
                attempt.username, attempt.password, attempt.client_id, self.instance_id, self.access_keys
            )
            if not credentials.allowed:
                self._record(
                    attempt,
                    result="deny",
                    reason="bad-credentials",
                    detail=credentials.reason,
                    decision=decision,
                    identity_known=True,  # the certificate proved who it is
                )
                return credentials
            identity = replace(identity, access_key_id=credentials.identity.access_key_id)
        self._record_decision(attempt, decision)
        return AuthOutcome(True, identity=identity, valid_until=decision.valid_until)


class _EmptyIndex:
    def issuer_of(self, certificate: x509.Certificate) -> None:
        return None

    def device(self, ca_sn: str, device_sn: str) -> None:
        return None
