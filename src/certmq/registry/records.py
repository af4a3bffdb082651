"""What the registry service returns: plain frozen values, never database objects, so callers on
any thread may keep them, compare them and turn them into JSON."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from certmq.registry.models import Result, Status

T = TypeVar("T")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class RegistrationCode:
    """A one-time code for the Subject CN of a verification certificate."""

    code: str
    created_at: datetime.datetime
    expires_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class CaRecord:
    """A registered CA certificate. ``sn`` is the ``Sn`` of the certificate."""

    sn: str
    name: str
    pem: str
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    subject: str  # RFC 4514
    valid_begin: datetime.datetime
    valid_end: datetime.datetime
    status: Status
    registration_code: str
    verification_pem: str
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @property
    def active(self) -> bool:
        return self.status == Status.ACTIVE


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device certificate. ``name`` is its Subject CN (ApsaraMQ ``DeviceName``)."""

    ca_sn: str
    device_sn: str
    name: str
    pem: str
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    valid_begin: datetime.datetime
    valid_end: datetime.datetime
    status: Status
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @property
    def active(self) -> bool:
        return self.status == Status.ACTIVE


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. ``total`` counts every matching record, not only this page's."""

    items: tuple[T, ...]
    page_no: int
    page_size: int
    total: int


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One authentication decision to record. ``step`` is the step of the decision procedure that decided
    (1-6), or 0 for decisions taken before TLS or on credentials. Fields that do not apply are
    empty strings.

    ``identity_known`` is False when the peer proved no identity the instance knows (a failed TLS
    handshake, no or wrong credentials, a certificate of no registered CA): such refusals are
    folded into counted rows (:mod:`certmq.registry.folding`), and their rows are the first to go
    when the log is full. A folded row stands for ``count`` refusals, from ``first_seen`` to
    ``time``."""

    listener: str = ""
    peer: str = ""
    client_id: str = ""
    ca_sn: str = ""
    device_sn: str = ""
    cn: str = ""
    step: int = 0
    result: str = Result.DENY  # "allow" | "deny"
    reason: str = ""  # short code such as "device-inactive"
    detail: str = ""
    time: datetime.datetime = field(default_factory=utc_now)
    identity_known: bool = True
    count: int = 1
    first_seen: datetime.datetime | None = None  # None: ``time``


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A recorded decision, as read back from the audit log. A folded row stands for ``count``
    refusals of one source for one reason, the first at ``first_seen``, the last at ``time``."""

    id: int
    time: datetime.datetime
    listener: str
    peer: str
    client_id: str
    ca_sn: str
    device_sn: str
    cn: str
    step: int
    result: str
    reason: str
    detail: str
    count: int
    first_seen: datetime.datetime
    identity_known: bool

    @property
    def last_seen(self) -> datetime.datetime:
        return self.time


@dataclass(frozen=True, slots=True)
class RegistryCounts:
    """Sizes of the registry for the console overview and the metrics."""

    cas_active: int
    cas_inactive: int
    devices_active: int
    devices_inactive: int
    cas_expiring: int  # valid now, but not any more within ``expiring_within``
    devices_expiring: int
    expiring_within: datetime.timedelta

    @property
    def cas(self) -> int:
        return self.cas_active + self.cas_inactive

    @property
    def devices(self) -> int:
        return self.devices_active + self.devices_inactive


@dataclass(frozen=True, slots=True)
class OperationEntry:
    """One call of the ApsaraMQ-compatible RPC API, for the operations log: who made it
    (``access_key_id``, authenticated or only claimed, and ``peer``), what it asked for
    (``action`` and ``parameters``, certificate contents summarised) and what it was answered
    (``status``, ``code``: ``Success`` or the error code).

    The calls that are not ``authenticated`` (their signature did not verify, or they replayed a
    request already accepted) are folded into counted rows (:mod:`certmq.registry.folding`), and
    their rows are the first to go when the log is full. A folded row stands for ``count`` calls,
    from ``first_seen`` to ``time``."""

    request_id: str
    action: str
    status: int
    code: str
    access_key_id: str = ""
    authenticated: bool = False
    signature_method: str = ""
    peer: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    message: str = ""
    duration_ms: int = 0
    time: datetime.datetime = field(default_factory=utc_now)
    count: int = 1
    first_seen: datetime.datetime | None = None  # None: ``time``


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """A recorded call, as read back from the operations log. A folded row stands for ``count``
    calls of one source that were not authenticated, for one action and error code, the first at
    ``first_seen``, the last at ``time``."""

    id: int
    time: datetime.datetime
    request_id: str
    peer: str
    access_key_id: str
    authenticated: bool
    signature_method: str
    action: str
    parameters: dict[str, str]
    status: int
    code: str
    message: str
    duration_ms: int
    count: int
    first_seen: datetime.datetime

    @property
    def last_seen(self) -> datetime.datetime:
        return self.time
