"""Whose a session is: the identity that created it, and who may resume it.

A persistent session holds what was queued for a client while it was away. Its client id is
only a name any client can send; the session belongs to the identity that created it, as the
authentication step established it: a device certificate (its CA Sn and device Sn), an
AccessKey (Signature credentials), or no identity at all (anonymous clients share one key). By
default (``auth.session_owner = "identity"``, docs/configuration.md) a client of another
identity that claims the client id is refused, and the session and its live connection are left
as they are; ``"any"`` lets whoever uses the client id resume the session.
"""

from __future__ import annotations

from enum import StrEnum

from certmq.auth.identity import Identity

# The audit log's reason for a CONNECT refused because the session belongs to another identity.
SESSION_OWNED_BY_ANOTHER_IDENTITY = "session-owned-by-another-identity"

ANONYMOUS_OWNER = "anonymous"
# A session saved before owners were recorded: the first identity that resumes it adopts it.
UNKNOWN_OWNER = ""
_CERTIFICATE_PREFIX = "cert:"
_ACCESS_KEY_PREFIX = "access-key:"


class IdentityKind(StrEnum):
    """What kind of identity an owner key is of; each has its own limit on sessions."""

    CERTIFICATE = "certificate"
    ACCESS_KEY = "access-key"
    ANONYMOUS = "anonymous"
    UNKNOWN = "unknown"


class SessionOwnerPolicy(StrEnum):
    """``auth.session_owner``: who may resume a session."""

    IDENTITY = "identity"  # only the identity that created it
    ANY = "any"  # any client that sends its client id


def session_owner(identity: Identity) -> str:
    """The owner key of a session created by a client with this authenticated identity."""
    if identity.ca_sn and identity.device_sn:
        return f"{_CERTIFICATE_PREFIX}{identity.ca_sn}:{identity.device_sn}"
    if identity.access_key_id:
        return f"{_ACCESS_KEY_PREFIX}{identity.access_key_id}"
    return ANONYMOUS_OWNER


def identity_kind(owner: str) -> IdentityKind:
    """The kind of identity of the owner key ``owner`` (made by :func:`session_owner`)."""
    if owner.startswith(_CERTIFICATE_PREFIX):
        return IdentityKind.CERTIFICATE
    if owner.startswith(_ACCESS_KEY_PREFIX):
        return IdentityKind.ACCESS_KEY
    if owner == ANONYMOUS_OWNER:
        return IdentityKind.ANONYMOUS
    return IdentityKind.UNKNOWN


def may_resume(owner: str, claimant: str, policy: SessionOwnerPolicy) -> bool:
    """Whether a client whose owner key is ``claimant`` may take the session owned by ``owner``."""
    return policy is SessionOwnerPolicy.ANY or owner in (claimant, UNKNOWN_OWNER)
