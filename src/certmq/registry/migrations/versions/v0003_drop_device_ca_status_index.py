"""Drop the device index on (ca_sn, status, device_sn): the one on (status, ca_sn, device_sn)
serves the listings filtered by CA and status as well (both are equalities), and every index is
one more page written per registered device.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("ix_device_certificate_ca_sn_status_device_sn", table_name="device_certificate")


def downgrade() -> None:
    op.create_index(
        "ix_device_certificate_ca_sn_status_device_sn",
        "device_certificate",
        ["ca_sn", "status", "device_sn"],
    )
