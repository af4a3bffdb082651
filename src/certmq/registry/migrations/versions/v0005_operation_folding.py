"""The operations log of the RPC API folds the calls that were not authenticated, as the decision
log folds the refusals of strangers: a row may stand for many calls (``count``, ``first_seen``),
and retention deletes the rows of calls that were not authenticated first, for which it needs an
index on (authenticated, id) (docs/registry.md, "Retention and folding").

Rows written before this revision count as single calls. Both columns are added with a constant
default or as nullable, which neither SQLite nor PostgreSQL rewrites a table for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "api_operation", sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.add_column("api_operation", sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_operation_authenticated_id", "api_operation", ["authenticated", "id"])


def downgrade() -> None:
    op.drop_index("ix_api_operation_authenticated_id", table_name="api_operation")
    with op.batch_alter_table("api_operation") as batch:
        batch.drop_column("first_seen")
        batch.drop_column("count")
