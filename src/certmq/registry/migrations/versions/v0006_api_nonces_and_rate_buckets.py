"""The signature nonces and the rate buckets of the RPC API, in the registry every node of a
cluster shares (docs/api.md, "Signatures" and "Rate limit"): a replay is refused by every node,
and an AccessKey's calls are counted on all of them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_nonce",
        sa.Column("access_key_id", sa.String(128), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("access_key_id", "nonce", name="pk_api_nonce"),
    )
    op.create_index("ix_api_nonce_expires_at", "api_nonce", ["expires_at"])
    op.create_table(
        "api_rate_bucket",
        sa.Column("access_key_id", sa.String(128), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("access_key_id", name="pk_api_rate_bucket"),
    )


def downgrade() -> None:
    op.drop_table("api_rate_bucket")
    op.drop_table("api_nonce")
