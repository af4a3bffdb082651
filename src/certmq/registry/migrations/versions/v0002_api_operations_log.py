"""The operations log of the ApsaraMQ-compatible RPC API: one row per call, who, what, result.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def Time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_operation",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("time", Time(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False),
        sa.Column("access_key_id", sa.String(128), nullable=False),
        sa.Column("authenticated", sa.Boolean(), nullable=False),
        sa.Column("signature_method", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_operation"),
    )
    op.create_index("ix_api_operation_time", "api_operation", ["time"])
    op.create_index("ix_api_operation_access_key_id_time", "api_operation", ["access_key_id", "time"])
    op.create_index("ix_api_operation_action_time", "api_operation", ["action", "time"])
    op.create_index("ix_api_operation_code_time", "api_operation", ["code", "time"])


def downgrade() -> None:
    op.drop_table("api_operation")
