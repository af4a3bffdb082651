"""The registry's tables, as SQLAlchemy 2 typed ORM classes.

The schema is owned by the Alembic migrations in ``certmq/registry/migrations``; these classes
describe the same schema for queries, and a test checks that the two agree. A change to a table
here needs a new migration.

Times are timezone-aware UTC datetimes in Python. SQLite has no time zone type: :class:`UtcDateTime`
stores them as naive UTC and gives them back as aware UTC; PostgreSQL stores ``timestamptz``.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are fixed so that migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An integer primary key: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY
# is the fast rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Status(StrEnum):
    """Status of a CA or device certificate. Compares equal to its string value."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class Result(StrEnum):
    """Result of an authentication decision."""

    ALLOW = "allow"
    DENY = "deny"


class UtcDateTime(TypeDecorator[datetime.datetime]):
    """A timezone-aware UTC datetime on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry times must be timezone-aware (UTC)")
        value = value.astimezone(datetime.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime.datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CaCertificateRow(Base):
    """A registered root or intermediate CA."""

    __tablename__ = "ca_certificate"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sn: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(Text)
    pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, lower-case hex
    subject: Mapped[str] = mapped_column(Text)  # RFC 4514
    subject_der: Mapped[bytes] = mapped_column(LargeBinary)
    subject_key_identifier: Mapped[bytes | None] = mapped_column(LargeBinary)
    valid_begin: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    valid_end: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16))
    registration_code: Mapped[str] = mapped_column(String(64))
    verification_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)


class DeviceCertificateRow(Base):
    """A device certificate, registered on its first allowed connection (auto-registration).

    Listing pages in ``(ca_sn, device_sn)`` order: the unique index serves the unfiltered and the
    by-CA listings, the ``status`` index those filtered by status (with or without a CA), the
    ``name`` index those by name, so no listing sorts in memory. No more indexes than that: each
    is one more page written for every device registered.
    """

    __tablename__ = "device_certificate"
    __table_args__ = (
        UniqueConstraint("ca_sn", "device_sn"),
        Index("ix_device_certificate_status_ca_sn_device_sn", "status", "ca_sn", "device_sn"),
        Index("ix_device_certificate_name_ca_sn_device_sn", "name", "ca_sn", "device_sn"),
        Index("ix_device_certificate_valid_end", "valid_end"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ca_sn: Mapped[str] = mapped_column(
        String(128), ForeignKey("ca_certificate.sn", ondelete="CASCADE", onupdate="CASCADE")
    )
    device_sn: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(Text)  # Subject CN
    pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, lower-case hex
    valid_begin: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    valid_end: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)


class RegistrationCodeRow(Base):
    """A one-time code for the Subject CN of a verification certificate."""

    __tablename__ = "registration_code"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime)
    used_by_ca_sn: Mapped[str | None] = mapped_column(String(128))


class SettingRow(Base):
    """A run-time setting (for example the auth mode, the server certificate files): JSON text."""

    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime.datetime] = mapped_column(UtcDateTime)


class DecisionRow(Base):
    """The audit log: one row per authentication decision (docs/registry.md, "The decision log")."""

    __tablename__ = "decision"
    __table_args__ = (
        Index("ix_decision_time", "time"),
        Index("ix_decision_device_sn_time", "device_sn", "time"),
        Index("ix_decision_result_time", "result", "time"),
        Index("ix_decision_reason_time", "reason", "time"),
        Index("ix_decision_client_id_time", "client_id", "time"),
        # Retention deletes the strangers' rows first, oldest first.
        Index("ix_decision_identity_known_id", "identity_known", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    listener: Mapped[str] = mapped_column(String(32))
    peer: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(Text)
    ca_sn: Mapped[str] = mapped_column(String(128))
    device_sn: Mapped[str] = mapped_column(String(128))
    cn: Mapped[str] = mapped_column(Text)
    step: Mapped[int] = mapped_column(SmallInteger)  # 1-6 (decision step); 0 before TLS or for credentials
    result: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    # A folded row stands for ``count`` refusals of a stranger, from ``first_seen`` to ``time``
    # (docs/registry.md, "Retention and folding"); NULL ``first_seen``: the row's ``time``.
    count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_seen: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    identity_known: Mapped[bool] = mapped_column(Boolean, server_default=true())


class OperationRow(Base):
    """The operations log: one row per call of the ApsaraMQ-compatible RPC API, who
    made it, what it asked for and what it was answered, refused calls included; the calls
    that were not authenticated folded per source, action and code (docs/registry.md,
    "Retention and folding")."""

    __tablename__ = "api_operation"
    __table_args__ = (
        Index("ix_api_operation_time", "time"),
        Index("ix_api_operation_access_key_id_time", "access_key_id", "time"),
        Index("ix_api_operation_action_time", "action", "time"),
        Index("ix_api_operation_code_time", "code", "time"),
        # Retention deletes the rows of calls that were not authenticated first, oldest first.
        Index("ix_api_operation_authenticated_id", "authenticated", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[datetime.datetime] = mapped_column(UtcDateTime)
    request_id: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(128))
    access_key_id: Mapped[str] = mapped_column(String(128))  # as claimed, when not authenticated
    authenticated: Mapped[bool] = mapped_column(Boolean)
    signature_method: Mapped[str] = mapped_column(String(32))  # ACS3-HMAC-SHA256, HMAC-SHA1, ""
    action: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[str] = mapped_column(Text)  # JSON object; certificate contents summarised
    status: Mapped[int] = mapped_column(SmallInteger)  # HTTP status of the reply
    code: Mapped[str] = mapped_column(String(64))  # "Success" or the error code
    message: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # A folded row stands for ``count`` calls that were not authenticated, from ``first_seen`` to
    # ``time``; NULL ``first_seen``: the row's ``time``.
    count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_seen: Mapped[datetime.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ApiNonceRow(Base):
    """A signature nonce of the RPC API already accepted, until its request's time leaves the
    signature window (docs/api.md, "Signatures"): kept here so that every node of a cluster
    refuses a replay, whichever node the request was first sent to."""

    __tablename__ = "api_nonce"
    __table_args__ = (Index("ix_api_nonce_expires_at", "expires_at"),)

    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Seconds since the epoch, as the rate buckets count: compared in SQL alike on both databases.
    expires_at: Mapped[float] = mapped_column(Double)


class ApiRateBucketRow(Base):
    """The token bucket of one AccessKey of the RPC API (docs/api.md, "Rate limit"), shared by
    every node of a cluster: ``tokens`` calls left as of ``updated_at`` (seconds since the
    epoch); ``granted``: whether the last call taken was allowed."""

    __tablename__ = "api_rate_bucket"

    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    granted: Mapped[bool] = mapped_column(Boolean)
