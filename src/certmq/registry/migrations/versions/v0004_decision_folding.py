"""The decision log folds the refusals of strangers: a row may stand for many refusals (``count``,
``first_seen``), and says whether the peer proved an identity the instance knows, so that
retention deletes the strangers' rows first (docs/registry.md, "Retention and folding").

Rows written before this revision count as single decisions of known identities. Every column is
added with a constant default or as nullable, which neither SQLite nor PostgreSQL rewrites a table
for.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("decision", sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.add_column("decision", sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "decision", sa.Column("identity_known", sa.Boolean(), server_default=sa.true(), nullable=False)
    )
    op.create_index("ix_decision_identity_known_id", "decision", ["identity_known", "id"])


def downgrade() -> None:
    op.drop_index("ix_decision_identity_known_id", table_name="decision")
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("identity_known")
        batch.drop_column("first_seen")
        batch.drop_column("count")
