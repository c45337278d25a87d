"""console keys: the key that signs the console's session cookies, kept across restarts

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04

Made by the first console to start on the store and read by every later one (and by each of
several consoles behind one address), so a restart no longer ends everyone's session.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_console_keys")),
    )


def downgrade() -> None:
    op.drop_table("console_keys")
