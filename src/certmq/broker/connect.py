"""What happens on CONNECT: the broker's rules on the client id and the will, the attempt
handed to the authenticator, the topic permissions of the identity it proves, the session it
may take (its owner, the limits on sessions), and the session attached.

The protocol has checked what MQTT itself says of the CONNECT and negotiated its limits
(certmq.mqtt.server_connection) before the handler sees it; it answers CONNACK when the handler
accepts or refuses.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

from certmq.auth.apsara_client_id import valid_apsara_client_id
from certmq.auth.connect import AuthOutcome, ConnectAttempt
from certmq.auth.ownership import SESSION_OWNED_BY_ANOTHER_IDENTITY, session_owner
from certmq.auth.topics import WILL_TOPIC_DENIED, ClientPermissions, may_publish
from certmq.broker.client_connection import ClientConnection
from certmq.broker.client_id_claims import Claim
from certmq.broker.delivery import send_pending
from certmq.broker.messages import content_size
from certmq.broker.session_transfer import resume_moved
from certmq.mqtt.packets import Connect
from certmq.mqtt.reason_codes import ReasonCode
from certmq.mqtt.server_events import CONNECTED

log = logging.getLogger("certmq.connection")


def handle_connect(connection: ClientConnection, packet: Connect) -> None:
    settings = connection.settings
    client_id = packet.client_id
    assigned = False
    if not client_id:
        client_id = "auto-" + uuid.uuid4().hex
        assigned = True
    elif settings.apsara_client_id and not valid_apsara_client_id(client_id):
        connection.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id must be GroupID@@@DeviceID")
        return
    will = packet.will
    if will is not None:
        if not connection.core.topic_within_limits(will.topic):
            connection.refuse(
                ReasonCode.TOPIC_NAME_INVALID, "the will topic is too long or has too many levels"
            )
            return
        if content_size(will.topic, will.payload, will.properties) > settings.max_queued_bytes:
            # The session holds its will as long as itself: no more than it may queue.
            connection.refuse(ReasonCode.QUOTA_EXCEEDED, "the will is larger than a session may hold")
            return
    connection.client_id = client_id
    connection.username = packet.username
    attempt = ConnectAttempt(
        listener=connection.listener.name,
        peer=connection.peer,
        client_id=client_id,
        username=packet.username,
        password=packet.password,
        protocol_version=connection.protocol.protocol_version,
        peer_certificate=connection.peer_certificate,
        verified_issuer=connection.verified_issuer,
    )
    try:
        outcome = connection.core.authenticator.authenticate(attempt)
    except Exception:
        outcome = _authentication_failed(attempt)
    if isinstance(outcome, AuthOutcome):
        # Decided at once, as most CONNECTs are: answered within this read.
        _conclude(connection, packet, outcome, assigned)
        return
    # The authenticator has to wait: so do the client's next packets.
    connection.decide_later(
        _awaited(outcome, attempt), lambda outcome: _conclude(connection, packet, outcome, assigned)
    )


async def _awaited(pending: Awaitable[AuthOutcome], attempt: ConnectAttempt) -> AuthOutcome:
    try:
        return await pending
    except Exception:
        return _authentication_failed(attempt)


def _authentication_failed(attempt: ConnectAttempt) -> AuthOutcome:
    log.exception("authentication of %s failed with an error", attempt.client_id)
    return AuthOutcome(False, ReasonCode.UNSPECIFIED_ERROR, "authentication failed")


def _conclude(connection: ClientConnection, packet: Connect, outcome: AuthOutcome, assigned: bool) -> None:
    """The authenticator has decided: what the broker itself checks, then the session."""
    if not outcome.allowed:
        connection.refuse(outcome.reason_code, outcome.reason)
        return
    core = connection.core
    connection.identity = outcome.identity
    permissions = core.permissions_for(connection.client_id, packet.username, outcome.identity)
    will = packet.will
    if will is not None and not may_publish(permissions, will.topic):
        _refuse_recorded(
            connection,
            ReasonCode.NOT_AUTHORIZED,
            WILL_TOPIC_DENIED,
            f"the topic rules do not allow this client to publish its will to {will.topic!r}",
        )
        return
    owner = session_owner(outcome.identity)
    if not core.may_resume(connection.client_id, owner):
        # The session, and the connection that may be carrying it, are left untouched.
        _refuse_recorded(
            connection,
            ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
            SESSION_OWNED_BY_ANOTHER_IDENTITY,
            "the session of this client id belongs to another identity",
        )
        return
    refusal = core.session_refusal(connection.client_id, owner, packet.clean_start)
    if refusal is not None:
        core.stats.sessions_over_limit += 1
        _refuse_recorded(connection, ReasonCode.QUOTA_EXCEEDED, refusal.reason, refusal.detail)
        return
    claims = core.client_id_claims
    if claims is None:
        _accept(connection, packet, assigned, owner, permissions, outcome)
        return
    # Several brokers: the client id is claimed from the one that holds it first.
    connection.decide_later(
        _claimed(claims.claim(connection.client_id, owner, packet.clean_start)),
        lambda claim: _conclude_claim(connection, packet, assigned, owner, permissions, outcome, claim),
    )


async def _claimed(pending: Awaitable[Claim]) -> Claim:
    try:
        return await pending
    except Exception:
        # The other brokers could not be asked: the client id is taken here as on one broker.
        log.exception("could not claim a client id from the other nodes")
        return Claim()


def _conclude_claim(
    connection: ClientConnection,
    packet: Connect,
    assigned: bool,
    owner: str,
    permissions: ClientPermissions | None,
    outcome: AuthOutcome,
    claim: Claim,
) -> None:
    if claim.refusal is not None:
        _refuse_recorded(
            connection,
            ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
            SESSION_OWNED_BY_ANOTHER_IDENTITY,
            claim.refusal,
        )
        return
    moved = claim.session
    if moved is not None and not packet.clean_start:
        resume_moved(connection.core, connection.client_id, moved)
    _accept(connection, packet, assigned, owner, permissions, outcome)


def _refuse_recorded(connection: ClientConnection, reason_code: int, reason: str, detail: str) -> None:
    """Refuse an authenticated client for what the broker itself checks, and say why in the
    audit log as the authentication step does."""
    audit = connection.core.audit
    if audit is not None:
        identity = connection.identity
        try:
            audit(
                listener=connection.listener.name,
                peer=connection.peer,
                client_id=connection.client_id,
                ca_sn=identity.ca_sn,
                device_sn=identity.device_sn,
                cn=identity.cn,
                step=0,
                result="deny",
                reason=reason,
                detail=detail,
                # An anonymous client proves no identity: its refusals are folded per source.
                identity_known=not identity.is_anonymous,
            )
        except Exception:
            log.exception("could not record the refusal of %s", connection.client_id)
    connection.refuse(reason_code, detail)


def _accept(
    connection: ClientConnection,
    packet: Connect,
    assigned: bool,
    owner: str,
    permissions: ClientPermissions | None,
    outcome: AuthOutcome,
) -> None:
    """Attach the session (taking it over from a connection that has it), then CONNACK, then
    what the session kept for the client."""
    core = connection.core
    protocol = connection.protocol
    session, present = core.attach(
        connection,
        connection.client_id,
        packet.clean_start,
        protocol.session_expiry_interval,
        protocol_version=protocol.protocol_version,
        owner=owner,
        username=packet.username,
        identity=connection.identity,
        permissions=permissions,
    )
    connection.session = session
    core.set_will(session, packet.will)
    connection.connected_at = datetime.now(UTC)
    now = connection.now()
    protocol.accept(
        session,
        session_present=present,
        assigned_client_id=connection.client_id if assigned else None,
        now=now,
    )
    connection.deadline_changed()
    log.debug("connected %s from %s on %s", connection.client_id, connection.peer, connection.listener.name)
    if present:
        core.stats.messages_dropped += protocol.resend_in_flight(now)
        if session.pending:
            send_pending(connection)
    if outcome.valid_until is not None and protocol.state == CONNECTED:
        core.certificate_expiry.watch(connection, outcome.valid_until)
