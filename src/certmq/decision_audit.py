"""Where every authentication decision is recorded: in the registry's decision log and in the
metrics. CONNECT's decisions come from the authenticator; this module also words the two
refusals that happen outside CONNECT, a TLS handshake refused and a live session cut as its
certificate expires, as the decision procedure would decide them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from certmq.auth.decision import DeviceDecision, decide_device
from certmq.auth.handshake_refusal import decision_for_handshake_failure
from certmq.broker.connection import MQTTConnection
from certmq.registry.records import DecisionEntry
from certmq.registry.service import RegistryService
from certmq.web.metrics import Metrics


class DecisionAudit:
    def __init__(self, registry: RegistryService, metrics: Metrics) -> None:
        self._registry = registry
        self._metrics = metrics

    def record(self, **fields: Any) -> None:
        """Record one decision (the fields of :class:`certmq.registry.records.DecisionEntry`)."""
        self._registry.record_decision(DecisionEntry(**fields))
        self._metrics.count_decision(fields["result"], fields["reason"])

    def handshake_failed(self, listener: str, peer: str, error: BaseException) -> None:
        decision = decision_for_handshake_failure(error, self._registry.index)
        if decision is not None:
            # A failed handshake proves no identity, whatever it presented.
            self._refusal(decision, listener, peer, "", decision.detail, identity_known=False)

    def certificate_expired(self, connection: MQTTConnection, valid_until: datetime) -> None:
        """A live session is cut as its certificate expires: recorded as the decision procedure
        decides on that certificate just after ``valid_until``."""
        decision = decide_device(
            connection.peer_certificate,
            self._registry.index,
            now=valid_until + timedelta(seconds=1),
            verified_issuer=connection.verified_issuer,
        )
        detail = f"connected session disconnected at the end of the certificate's validity: {decision.detail}"
        self._refusal(
            decision,
            connection.listener.name,
            connection.peer,
            connection.client_id,
            detail,
            identity_known=True,
        )

    def _refusal(
        self,
        decision: DeviceDecision,
        listener: str,
        peer: str,
        client_id: str,
        detail: str,
        *,
        identity_known: bool,
    ) -> None:
        self.record(
            listener=listener,
            peer=peer,
            client_id=client_id,
            ca_sn=decision.ca_sn,
            device_sn=decision.device_sn,
            cn=decision.cn,
            step=decision.step,
            result="deny",
            reason=decision.reason,
            detail=detail,
            identity_known=identity_known,
        )
