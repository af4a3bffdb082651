"""The first registry schema: CA and device certificates, registration codes, settings, decisions.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ca_certificate",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sn", sa.String(128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("subject_der", sa.LargeBinary(), nullable=False),
        sa.Column("subject_key_identifier", sa.LargeBinary(), nullable=True),
        sa.Column("valid_begin", Time(), nullable=False),
        sa.Column("valid_end", Time(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registration_code", sa.String(64), nullable=False),
        sa.Column("verification_pem", sa.Text(), nullable=False),
        sa.Column("created_at", Time(), nullable=False),
        sa.Column("updated_at", Time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ca_certificate"),
        sa.UniqueConstraint("sn", name="uq_ca_certificate_sn"),
        sa.UniqueConstraint("fingerprint", name="uq_ca_certificate_fingerprint"),
    )
    op.create_table(
        "device_certificate",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ca_sn", sa.String(128), nullable=False),
        sa.Column("device_sn", sa.String(128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("valid_begin", Time(), nullable=False),
        sa.Column("valid_end", Time(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Time(), nullable=False),
        sa.Column("updated_at", Time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_device_certificate"),
        sa.ForeignKeyConstraint(
            ["ca_sn"],
            ["ca_certificate.sn"],
            name="fk_device_certificate_ca_sn_ca_certificate",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.UniqueConstraint("ca_sn", "device_sn", name="uq_device_certificate_ca_sn_device_sn"),
        sa.UniqueConstraint("fingerprint", name="uq_device_certificate_fingerprint"),
    )
    op.create_index(
        "ix_device_certificate_status_ca_sn_device_sn",
        "device_certificate",
        ["status", "ca_sn", "device_sn"],
    )
    op.create_index(
        "ix_device_certificate_ca_sn_status_device_sn",
        "device_certificate",
        ["ca_sn", "status", "device_sn"],
    )
    op.create_index(
        "ix_device_certificate_name_ca_sn_device_sn",
        "device_certificate",
        ["name", "ca_sn", "device_sn"],
    )
    op.create_index("ix_device_certificate_valid_end", "device_certificate", ["valid_end"])
    op.create_table(
        "registration_code",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("created_at", Time(), nullable=False),
        sa.Column("expires_at", Time(), nullable=False),
        sa.Column("used_at", Time(), nullable=True),
        sa.Column("used_by_ca_sn", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("code", name="pk_registration_code"),
    )
    op.create_index("ix_registration_code_expires_at", "registration_code", ["expires_at"])
    op.create_table(
        "setting",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", Time(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_setting"),
    )
    op.create_table(
        "decision",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("time", Time(), nullable=False),
        sa.Column("listener", sa.String(32), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("ca_sn", sa.String(128), nullable=False),
        sa.Column("device_sn", sa.String(128), nullable=False),
        sa.Column("cn", sa.Text(), nullable=False),
        sa.Column("step", sa.SmallInteger(), nullable=False),
        sa.Column("result", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decision"),
    )
    op.create_index("ix_decision_time", "decision", ["time"])
    op.create_index("ix_decision_device_sn_time", "decision", ["device_sn", "time"])
    op.create_index("ix_decision_result_time", "decision", ["result", "time"])
    op.create_index("ix_decision_reason_time", "decision", ["reason", "time"])
    op.create_index("ix_decision_client_id_time", "decision", ["client_id", "time"])


def downgrade() -> None:
    op.drop_table("decision")
    op.drop_table("setting")
    op.drop_index("ix_registration_code_expires_at", table_name="registration_code")
    op.drop_table("registration_code")
    op.drop_table("device_certificate")
    op.drop_table("ca_certificate")
